// swift-tools-version: 6.1
// The WebSocket client SDK: a pure-Swift core (WSCore), two engines (the native epoll engine WSEngineCIO and the
// libcurl engine WSEngineCurl), opt-in permessage-deflate (WSExtensions) and Codable converters (WSSerialization).
// Linux only (epoll, eventfd, glibc; tested on Debian 12 with Swift 6.3), so no `platforms`: that list only sets
// minimum versions of Apple platforms, on which the engines do not run.
import PackageDescription

/// Settings shared by every Swift target: Swift 6 language mode with strict concurrency and explicit imports.
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "swift-websocket-client",
    products: [
        // The one-import entry: WSCore and the native engine, and `WebSocketClient()` on it.
        .library(name: "WebSocketClientKit", targets: ["WebSocketClientKit"]),
        .library(name: "WSCore", targets: ["WSCore"]),
        .library(name: "WSEngineCIO", targets: ["WSEngineCIO"]),
        .library(name: "WSEngineCurl", targets: ["WSEngineCurl"]),
        .library(name: "WSExtensions", targets: ["WSExtensions"]),
        .library(name: "WSSerialization", targets: ["WSSerialization"]),
        .library(name: "WSTesting", targets: ["WSTesting"]),
    ],
    traits: [
        .trait(
            name: "FoundationURL",
            description: "Foundation URL overloads of the entry points (webSocket, webSocketSession, ws, wss, "
                + "WebSocketURL.init(_:)). Links FoundationEssentials into the process (about 2 MiB resident); "
                + "disable it with `traits: []` on the package dependency to keep Foundation out."
        ),
        .default(enabledTraits: ["FoundationURL"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        // Metrics and tracing through the ecosystem's APIs: no-ops unless the application bootstraps a backend.
        // swift-distributed-tracing's `Tracing` re-exports `ServiceContextModule`, so swift-service-context is not
        // needed as a direct dependency.
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        // Property-based tests of the session state machine only (WSCoreTests); no library target depends on it.
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
    ],
    targets: [
        // System C libraries, reached through prefixed shims; never re-exported.
        .systemLibrary(
            name: "CWSOpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CWSZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        // No pkgConfig here: Debian's libcurl.pc carries `-isystem /usr/include/mit-krb5`, which SwiftPM
        // rejects with a warning on every build; curl's headers are on the default include path anyway.
        .systemLibrary(
            name: "CWSCurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        // The CIO engine's OpenSSL, loaded on the first TLS connection (dlopen) instead of linked, so that a process
        // with only ws:// connections never maps libssl and libcrypto. Only the OpenSSL headers are needed to build.
        .target(name: "CWSLazyOpenSSL"),
        // HTTP/2 for WebSockets over HTTP/2 (RFC 8441) on the CIO engine, the library curl uses: loaded on the first
        // HTTP/2 connection (dlopen) instead of linked, as OpenSSL is. Only the nghttp2 headers (libnghttp2-dev) are
        // needed to build.
        .target(name: "CWSLazyNghttp2"),
        // Linux headers the Glibc module map lacks (epoll, eventfd, pthread_setname_np, getrandom); glibc only, nothing
        // to link.
        .systemLibrary(name: "CWSLinux"),

        .target(
            name: "WSCore",
            dependencies: [
                "CWSLinux",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: swiftSettings
        ),
        // What both engines share (epoll loop, transport skeleton, write queue, syscall helpers); it does not depend
        // on WSCore. Internal to the package, not a product.
        .target(
            name: "WSPosix",
            dependencies: ["CWSLinux", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WSEngineCIO",
            dependencies: [
                "WSCore", "WSPosix", "CWSLinux", "CWSLazyOpenSSL", "CWSLazyNghttp2",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WSEngineCurl",
            dependencies: [
                "WSCore", "WSPosix", "CWSLinux", "CWSCurl", "CWSOpenSSL",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // WSCore and WSEngineCIO re-exported, and client initialisers without an engine argument that use CIO.
        .target(
            name: "WebSocketClientKit",
            dependencies: ["WSCore", "WSEngineCIO"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WSExtensions",
            dependencies: ["WSCore", "CWSZlib"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WSSerialization",
            dependencies: ["WSCore"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WSTesting",
            dependencies: ["WSCore", "WSExtensions", "CWSOpenSSL"],
            swiftSettings: swiftSettings
        ),
        // Child processes for the tests (posix_spawn, not Foundation's Process): shared by the test targets that
        // start peers (Python servers, tinyproxy, openssl, the wsc binary).
        .target(
            name: "SpawnSupport",
            path: "Tests/SpawnSupport",
            swiftSettings: swiftSettings
        ),
        // What the test targets share: Python peers on loopback, the openssl-made test PKI, a recording transport
        // handler, reading a reconnecting session's states (a plain target: test targets cannot depend on each other).
        .target(
            name: "EngineTestSupport",
            dependencies: ["WSCore", "SpawnSupport", .product(name: "Logging", package: "swift-log")],
            path: "Tests/EngineTestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WSCoreTests",
            dependencies: [
                "WSCore", .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WSEngineCIOTests",
            dependencies: ["WSCore", "WSEngineCIO", "CWSOpenSSL", "SpawnSupport", "EngineTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WSEngineCurlTests",
            dependencies: ["WSCore", "WSEngineCurl", "WSPosix", "WSTesting", "SpawnSupport", "EngineTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WSSerializationTests",
            dependencies: ["WSCore", "WSSerialization"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WSExtensionsTests",
            dependencies: ["WSCore", "WSExtensions"],
            swiftSettings: swiftSettings
        ),
        // The in-memory engine of WSTesting and the session rules run on it: no sockets, no peers, a virtual clock.
        .testTarget(
            name: "WSTestingTests",
            dependencies: ["WSCore", "WSExtensions", "WSTesting", "EngineTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WSIntegrationTests",
            dependencies: [
                "WSCore", "WSEngineCIO", "WSEngineCurl", "WSExtensions", "WSSerialization", "WSTesting", "SpawnSupport",
                "EngineTestSupport", "WebSocketClientKit", .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
