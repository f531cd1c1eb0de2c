// wsbench-ours-curl: our SDK with the Curl engine only (see OursDriver).
import OursDriver
import WSEngineCurl

// Over wss:// (run.sh's TLS=1) the engine trusts the echo server's self-signed certificate, WSBENCH_CA_FILE.
await runOursMain(engineName: "curl") { CurlEngine(configuration: .init(tls: benchTLS())) }
