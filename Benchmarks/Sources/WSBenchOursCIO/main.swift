// wsbench-ours-cio: our SDK with the CIO engine only (see OursDriver).
import OursDriver
import WSEngineCIO

// Over wss:// (run.sh's TLS=1) the engine trusts the echo server's self-signed certificate, WSBENCH_CA_FILE.
await runOursMain(engineName: "cio") { CIOEngine(configuration: .init(tls: benchTLS())) }
