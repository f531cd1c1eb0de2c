import FuzzDriver
// The libFuzzer entry points of FuzzInflate: permessage-deflate inflation with a small limit
// (InflateFuzzHarness.inflate; Docs/Fuzzing.md).
import InflateHarness

/// Called by libFuzzer for every input: runs the oracle; a violated invariant crashes the process.
/// - Parameters:
///   - data: The input's bytes.
///   - size: The input's length.
/// - Returns: 0.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    runOracle(InflateFuzzHarness.inflate, data, size)
}

/// The symbol SwiftPM links this executable's `main` to (`<target>_main`): starts libFuzzer's driver.
/// - Parameters:
///   - argc: The argument count.
///   - argv: The arguments (libFuzzer flags, corpus directories or input files).
/// - Returns: libFuzzer's exit status.
@_cdecl("FuzzInflate_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, fuzzTestOneInput)
}
