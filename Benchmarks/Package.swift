// swift-tools-version: 6.1
// Benchmarks for swift-websocket-client: a separate package so the SDK's own dependency graph
// stays small. Build with `swift build -c release --scratch-path .build-bench` from this directory (run.sh does,
// and builds the WSClient driver in WSClientBench/, a package of its own).
import PackageDescription

/// The main package's settings, for the codec sources compiled here and the driver that measures them.
let codecSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "swift-websocket-client-benchmarks",
    dependencies: [
        // Without the default trait FoundationURL: the drivers use no Foundation type, and the trait's only cost, loading
        // FoundationEssentials (about 2 MiB resident and 15-20 ms of CPU at process start, measured), is not the
        // engines'. An application that imports Foundation anyway pays it once, whatever WebSocket client it uses.
        .package(name: "swift-websocket-client", path: "..", traits: []),
        .package(url: "https://github.com/vapor/websocket-kit.git", exact: "2.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        // websocket-kit's TLS (wss://): the driver configures it as its users do, with NIOSSL's TLSConfiguration.
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.24.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        // A counting metrics backend in the drivers (WSBENCH_METRICS=counting).
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
    ],
    targets: [
        .target(name: "BenchSupport", path: "Sources/BenchSupport", swiftSettings: [.swiftLanguageMode(.v6)]),
        // Our SDK's workloads, and one executable per engine that links only the SDK and that engine (their RSS is
        // ours alone); wsbench execs them.
        .target(
            name: "OursDriver",
            dependencies: [
                .product(name: "WSCore", package: "swift-websocket-client"),
                // permessage-deflate for W5.
                .product(name: "WSExtensions", package: "swift-websocket-client"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                "BenchSupport",
            ],
            path: "Sources/OursDriver",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "wsbench-ours-cio",
            dependencies: ["OursDriver", .product(name: "WSEngineCIO", package: "swift-websocket-client")],
            path: "Sources/WSBenchOursCIO",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "wsbench-ours-curl",
            dependencies: ["OursDriver", .product(name: "WSEngineCurl", package: "swift-websocket-client")],
            path: "Sources/WSBenchOursCurl",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // wsbench-codec (scripts/bench-codec.sh): what one frame costs in the WSCore codec, without the network, and
        // with --serialization the WSSerialization converters' messages per second. The codec is `package` API of
        // WSCore, so WSCoreCodec compiles the very same source files through symlinks (Sources/WSCoreCodec ->
        // ../../Sources/WSCore/{Codec,Handshake,Model} and WebSocketExtension.swift), as Fuzz/ does.
        // CMallocCounter interposes malloc and friends to count allocations; only wsbench-codec links it.
        .target(name: "WSCoreCodec", path: "Sources/WSCoreCodec", swiftSettings: codecSettings),
        .target(name: "CMallocCounter", path: "Sources/CMallocCounter"),
        .executableTarget(
            name: "wsbench-codec",
            dependencies: [
                "WSCoreCodec", "CMallocCounter",
                .product(name: "WSCore", package: "swift-websocket-client"),
                .product(name: "WSSerialization", package: "swift-websocket-client"),
            ],
            path: "Sources/wsbench-codec",
            swiftSettings: codecSettings
        ),
        .executableTarget(
            name: "wsbench",
            dependencies: [
                .product(name: "WebSocketKit", package: "websocket-kit"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                "BenchSupport",
            ],
            path: "Sources/WSBench",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
