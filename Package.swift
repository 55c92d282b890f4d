// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "whoslooking",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "whoslooking", targets: ["whoslooking"]),
        .executable(name: "whoslooking-bench", targets: ["whoslooking-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/pointfreeco/swift-clocks.git", from: "1.1.1"),
    ],
    targets: [
        // The C API of libpq, found through pkg-config (Debian: libpq-dev).
        .systemLibrary(
            name: "CLibpq",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"]), .brew(["libpq"])]
        ),
        // Our own small PostgreSQL layer: connections, pool, typed rows, migrations.
        .target(
            name: "Libpq",
            dependencies: [
                "CLibpq",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // A private PostgreSQL cluster run from the system's server binaries.
        .target(
            name: "EmbeddedPostgres",
            dependencies: [
                "Libpq",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Text in bytes, strictly: base64url (JWTs of Connect and Forge, viewer tickets), hex
        // digits, ASCII blanks and case.
        .target(name: "TextCoding"),
        // The Atlassian Connect protocol: qsh, JWT verification and signing, descriptor, install keys.
        .target(
            name: "Connect",
            dependencies: [
                "TextCoding",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // Forge Remote: Forge Invocation Token verification against Atlassian's JWKS, free of storage.
        .target(
            name: "Forge",
            dependencies: [
                "TextCoding",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
            ]
        ),
        // Tenants of both front doors (Connect sites, Forge installations): one table, one erase path.
        .target(
            name: "Tenants",
            dependencies: [
                "Libpq",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The presence domain: viewer tickets, viewers in PostgreSQL, expiry.
        .target(
            name: "Presence",
            dependencies: [
                "Libpq",
                "TextCoding",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Names and avatars from Jira's user API, cached, and personal data reporting.
        .target(
            name: "UserDirectory",
            dependencies: [
                "Libpq",
                "Connect",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                // AnyClock: waits run on an injected clock (a TestClock in tests), ContinuousClock in production.
                .product(name: "Clocks", package: "swift-clocks"),
            ]
        ),
        // A local stand-in for a Jira Cloud site: signed install, issue pages, all.js, REST users.
        .target(
            name: "DevHost",
            dependencies: [
                "Connect",
                "TextCoding",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The HTTP application: configuration, routes, services.
        .target(
            name: "WhosLookingApp",
            dependencies: [
                "Libpq",
                "TextCoding",
                "EmbeddedPostgres",
                "Connect",
                "Forge",
                "Tenants",
                "Presence",
                "UserDirectory",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "whoslooking",
            dependencies: [
                "WhosLookingApp",
                "Connect",
                "DevHost",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // scripts/bench's Jira side: signed install, then real panel loads for the load generator's tickets.
        // Its live run holds thousands of waits on raw NIO HTTP/1.1 connections, one per panel.
        .executableTarget(
            name: "whoslooking-bench",
            dependencies: [
                "DevHost",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // Helpers shared by the test targets: scratch databases on the test server.
        .target(
            name: "TestSupport",
            dependencies: [
                "Libpq",
                "TextCoding",
                "Connect",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "LibpqTests",
            dependencies: ["Libpq", "EmbeddedPostgres", "TestSupport"]
        ),
        .testTarget(
            name: "ConnectTests",
            dependencies: ["Connect", "TextCoding", "TestSupport", .product(name: "JWTKit", package: "jwt-kit")]
        ),
        // The whole path in a real browser: devhost, signed install, iframe, heartbeats, expiry, names.
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "TestSupport",
                "Libpq",
                // Built so the tests can run the real executable (app and devhost).
                "whoslooking",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .testTarget(
            name: "WhosLookingAppTests",
            dependencies: [
                "WhosLookingApp",
                "TextCoding",
                "Forge",
                "Tenants",
                "Presence",
                "UserDirectory",
                "Connect",
                "EmbeddedPostgres",
                "TestSupport",
                // Built so the tests can run the real executable.
                "whoslooking",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Clocks", package: "swift-clocks"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
