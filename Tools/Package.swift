// swift-tools-version: 6.1
// The SDK's command-line tools, in a package of their own so that a user of the library resolves none of their
// dependencies (swift-argument-parser, hdrhistogram-swift):
//   - wsc: the command-line client (Docs/CLI.md): `wsc URL`, `wsc echo`, `wsc bench`, `wsc serve`, `wsc demo`;
//   - wssoak: the soak and load driver of scripts/soak.sh (thousands of connections, connect/send/close loops).
// Build from the repository root with `swift build --package-path Tools --product wsc` (scripts/demo.sh does).
import PackageDescription

/// The main package's settings: Swift 6 language mode with strict concurrency and explicit imports.
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "swift-websocket-client-tools",
    products: [
        .executable(name: "wsc", targets: ["wsc"]),
        .executable(name: "wssoak", targets: ["wssoak"]),
    ],
    dependencies: [
        .package(name: "swift-websocket-client", path: ".."),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        // Latency histograms for `wsc bench`.
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        .executableTarget(
            name: "wsc",
            dependencies: [
                .product(name: "WSCore", package: "swift-websocket-client"),
                .product(name: "WSEngineCIO", package: "swift-websocket-client"),
                .product(name: "WSEngineCurl", package: "swift-websocket-client"),
                .product(name: "WSExtensions", package: "swift-websocket-client"),
                .product(name: "WSSerialization", package: "swift-websocket-client"),
                .product(name: "WSTesting", package: "swift-websocket-client"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "wssoak",
            dependencies: [
                .product(name: "WSCore", package: "swift-websocket-client"),
                .product(name: "WSEngineCIO", package: "swift-websocket-client"),
                .product(name: "WSEngineCurl", package: "swift-websocket-client"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
