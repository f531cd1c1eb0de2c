// swift-tools-version: 6.1
// Benchmarks for swift-websocket-client (issue 7): a separate package so the SDK's own dependency graph
// stays small. Build with `swift build -c release --scratch-path .build-bench` from this directory.
import PackageDescription

let package = Package(
    name: "swift-websocket-client-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-websocket-client", path: ".."),
        .package(url: "https://github.com/vapor/websocket-kit.git", exact: "2.16.2"),
        .package(url: "https://github.com/hummingbird-project/swift-websocket.git", exact: "1.6.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .target(name: "BenchSupport", path: "Sources/BenchSupport", swiftSettings: [.swiftLanguageMode(.v6)]),
        // hummingbird-project/swift-websocket has a module named WSCore, like our SDK. Its driver is a separate
        // executable (wsbench execs it for `--client wsclient`) that imports it under an alias and never sees ours.
        .executableTarget(
            name: "wsbench-wsclient",
            dependencies: [
                "BenchSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "WSClient", package: "swift-websocket", moduleAliases: ["WSCore": "HBWSCore"]),
            ],
            path: "Sources/WSBenchWSClient",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Our SDK's driver, in an executable that links only the SDK (its RSS is ours alone); wsbench execs it.
        .executableTarget(
            name: "wsbench-ours",
            dependencies: [
                .product(name: "WSCore", package: "swift-websocket-client"),
                .product(name: "WSEngineCIO", package: "swift-websocket-client"),
                .product(name: "WSEngineCurl", package: "swift-websocket-client"),
                "BenchSupport",
            ],
            path: "Sources/WSBenchOurs",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "wsbench",
            dependencies: [
                .product(name: "WebSocketKit", package: "websocket-kit"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                "BenchSupport",
            ],
            path: "Sources/WSBench",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
