// The libFuzzer glue every fuzz executable shares (Docs/Fuzzing.md).
//
// SwiftPM links an executable target's `main` to a symbol named `<Target>_main` (tools 5.5 and later), and
// `-parse-as-library` (needed so that Swift does not emit a `main` of its own next to libFuzzer's) emits none.
// Each executable therefore defines `<Target>_main` with `@_cdecl` and hands over to libFuzzer's driver here.

// swift-format-ignore: AlwaysUseLowerCamelCase
/// libFuzzer's driver (compiler-rt's FuzzerDriver.cpp, linked in by `-sanitize=fuzzer`): parses the command-line
/// flags and calls `callback` for every input.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// Runs libFuzzer with the process's arguments.
/// - Parameters:
///   - argc: The argument count `main` received.
///   - argv: The arguments `main` received.
///   - callback: The executable's `LLVMFuzzerTestOneInput`.
/// - Returns: libFuzzer's exit status.
public func runLibFuzzer(
    _ argc: CInt,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, callback)
}

/// Runs an oracle on one libFuzzer input; a violated invariant stops the process with its description, which
/// libFuzzer reports as a crash and saves the input for.
/// - Parameters:
///   - oracle: A harness function.
///   - data: The input's bytes (may be `nil` when `size` is 0).
///   - size: The input's length.
/// - Returns: 0, as libFuzzer expects.
public func runOracle(_ oracle: ([UInt8]) throws -> Void, _ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    do {
        try oracle(bytes)
    } catch {
        fatalError("fuzz oracle failed: \(error)")
    }
    return 0
}
