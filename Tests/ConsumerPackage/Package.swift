// swift-tools-version: 6.1
// A package that uses the SDK exactly as a user would, by path, as the README shows (scripts/consumer.sh builds and
// runs it). Its Package.resolved shows what a user of the library resolves.
import PackageDescription

let package = Package(
    name: "ConsumerPackage",
    dependencies: [
        // The README's path form; `name:` is needed because this checkout's folder need not be named like the package.
        .package(name: "swift-websocket-client", path: "../..")
    ],
    targets: [
        .executableTarget(
            name: "Consumer",
            dependencies: [
                .product(name: "WebSocketClientKit", package: "swift-websocket-client"),
                .product(name: "WSEngineCurl", package: "swift-websocket-client"),
                .product(name: "WSTesting", package: "swift-websocket-client"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Only the core and the native engine: scripts/consumer.sh checks that it links no OpenSSL and loads it
        // only for its wss:// session.
        .executableTarget(
            name: "NativeOnly",
            dependencies: [
                .product(name: "WSCore", package: "swift-websocket-client"),
                .product(name: "WSEngineCIO", package: "swift-websocket-client"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
