// swift-tools-version: 6.1
// The hummingbird-project/swift-websocket (WSClient) driver of the issue 7 benchmarks, in a package of its own:
// that package has a module named WSCore, like our SDK, and keeping the two graphs apart is simpler and more
// reliable than module aliasing. Built by ../run.sh with `swift build -c release --scratch-path .build-bench`.
import PackageDescription

let package = Package(
    name: "wsclient-bench",
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/swift-websocket.git", exact: "1.6.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        // WSClient's TLS (wss://): the driver configures it as its users do, with NIOSSL's TLSConfiguration.
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.24.0"),
    ],
    targets: [
        // A symbolic link to ../Sources/BenchSupport: the same workload parameters and output as the other drivers.
        .target(name: "BenchSupport", path: "Sources/BenchSupport", swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "wsbench-wsclient",
            dependencies: [
                "BenchSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "WSClient", package: "swift-websocket"),
                // permessage-deflate for W5.
                .product(name: "WSCompression", package: "swift-websocket"),
            ],
            path: "Sources/WSBenchWSClient",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
