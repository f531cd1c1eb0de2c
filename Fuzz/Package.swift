// swift-tools-version: 6.1
// libFuzzer targets for the SDK's parsers (Docs/Fuzzing.md). Build and run them with scripts/fuzz.sh, not with a
// plain `swift build`: the executables only link with `-sanitize=fuzzer`.
//
// A separate package, so the main package's manifest and public surface stay as they are. The parsers are
// `package` or `internal` in WSCore and WSExtensions; this package compiles the source files it needs through
// symlinks (Sources/WSCore -> ../../Sources/WSCore/{Codec,Handshake,Model} and WebSocketExtension.swift;
// Sources/InflateHarness/Zlib.swift -> WSExtensions' Zlib.swift), so the fuzzers exercise the very same code with
// the same `package` access the unit tests have. The oracles are the regression test files themselves
// (Sources/*Harness -> Tests/...FuzzRegressionTests.swift), compiled here with FUZZING defined.
import PackageDescription

/// The main package's settings, plus FUZZING (which leaves out the test suites of the shared harness files).
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .define("FUZZING"),
]

/// The fuzz executables and the harness each one calls.
let fuzzers: [(name: String, harness: String)] = [
    ("FuzzFrameDecoder", "CoreHarness"),
    ("FuzzHTTPResponse", "CoreHarness"),
    ("FuzzExtensionHeader", "CoreHarness"),
    ("FuzzClosePayload", "CoreHarness"),
    ("FuzzUTF8", "CoreHarness"),
    ("FuzzStreamingAssembler", "CoreHarness"),
    ("FuzzInflate", "InflateHarness"),
]

let package = Package(
    name: "swift-websocket-client-fuzz",
    targets: [
        .systemLibrary(name: "CWSZlib"),
        // The dependency-free part of WSCore: the codec, the handshake parsers and the model types.
        .target(name: "WSCore", swiftSettings: swiftSettings),
        // Tests/WSCoreTests/FuzzRegressionTests.swift: the oracles of the WSCore targets.
        .target(name: "CoreHarness", dependencies: ["WSCore"], swiftSettings: swiftSettings),
        // WSExtensions' Zlib.swift and Tests/WSExtensionsTests/InflateFuzzRegressionTests.swift in one module.
        .target(name: "InflateHarness", dependencies: ["WSCore", "CWSZlib"], swiftSettings: swiftSettings),
        // LLVMFuzzerRunDriver and the oracle runner the executables share.
        .target(name: "FuzzDriver", swiftSettings: swiftSettings),
    ]
        + fuzzers.map { fuzzer in
            .executableTarget(
                name: fuzzer.name,
                dependencies: [.target(name: fuzzer.harness), "FuzzDriver"],
                swiftSettings: swiftSettings
            )
        }
)
