// wsbench-ours-cio: our SDK with the CIO engine only (see OursDriver).
import OursDriver
import WSEngineCIO

await runOursMain(engineName: "cio") { CIOEngine() }
