// wsbench-ours-curl: our SDK with the Curl engine only (see OursDriver).
import OursDriver
import WSEngineCurl

await runOursMain(engineName: "curl") { CurlEngine() }
