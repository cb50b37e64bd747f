// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Petrel",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "petreld", targets: ["petreld"]),
        .executable(name: "petrel", targets: ["petrel"]),
        .executable(name: "petrel-init", targets: ["petrel-init"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.20"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        // What the daemon and a sandbox's init say to each other (records, the start message).
        .target(name: "CPetrelInitProtocol", cSettings: [.unsafeFlags(["-Wall"])]),
        // PID 1 of every sandbox: a small C program, so that init is not a copy of the daemon.
        // Linked statically (swiftc links even a C executable against the Swift runtime),
        // so that it runs in any sandbox root without a dynamic loader or libraries.
        .executableTarget(
            name: "petrel-init",
            dependencies: ["CPetrelInitProtocol"],
            cSettings: [.unsafeFlags(["-Wall"])],
            linkerSettings: [.unsafeFlags(["-static-executable"])]
        ),
        .target(
            name: "CPetrelLinux",
            dependencies: ["CPetrelInitProtocol"],
            cSettings: [.unsafeFlags(["-Wall", "-Wno-unused-function"])],
            linkerSettings: [.linkedLibrary("seccomp"), .linkedLibrary("nftables")]
        ),
        // A small AMQP consumer over Debian's rabbitmq-c (librabbitmq-dev): RabbitMQ event sources.
        .target(
            name: "CPetrelRabbitMQ",
            cSettings: [.unsafeFlags(["-Wall"])],
            linkerSettings: [.linkedLibrary("rabbitmq")]
        ),
        // libpq (Debian's libpq-dev): PostgreSQL change streams, over logical replication.
        .systemLibrary(name: "CPetrelPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        // librdkafka (Debian's librdkafka-dev): self-managed Kafka event sources.
        .systemLibrary(name: "CPetrelKafka", pkgConfig: "rdkafka", providers: [.apt(["librdkafka-dev"])]),
        // zlib (Debian's zlib1g-dev): the log store compresses its chunks.
        .systemLibrary(name: "CPetrelZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // The one syscall layer every Swift target uses (libc only).
        .target(name: "PetrelSystem"),
        // Strict, typed reading of our TOML files, on TOMLKit.
        .target(name: "PetrelTOML", dependencies: [.product(name: "TOMLKit", package: "TOMLKit")]),
        .target(name: "PetrelCore", dependencies: ["PetrelSystem"]),
        .target(
            name: "PetrelSandbox",
            dependencies: [
                "CPetrelLinux", "PetrelTOML", "PetrelSystem",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "PetrelStore",
            dependencies: [
                "PetrelCore", "PetrelSystem", "CPetrelZlib",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "PetrelRuntime",
            dependencies: [
                "PetrelCore", "PetrelStore", "PetrelSandbox", "PetrelSystem",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "PetrelAPI",
            dependencies: [
                "PetrelCore", "PetrelStore", "PetrelRuntime", "PetrelSigV4", "PetrelSystem", "PetrelMessaging", "PetrelSources",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // The SQS- and SNS-compatible services, durable on the store.
        .target(
            name: "PetrelMessaging",
            dependencies: [
                "PetrelCore", "PetrelStore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The event-source-mapping engine: consumers of sources handing batches to functions.
        .target(
            name: "PetrelSources",
            dependencies: [
                "PetrelCore", "PetrelStore", "PetrelRuntime", "PetrelMessaging", "CPetrelRabbitMQ", "CPetrelPQ", "CPetrelKafka",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "PetrelSigV4",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")]
        ),
        .target(
            name: "PetrelClient",
            dependencies: [
                "PetrelSigV4",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "petreld",
            dependencies: [
                "PetrelSandbox", "PetrelCore", "PetrelStore", "PetrelRuntime", "PetrelAPI", "PetrelTOML", "PetrelSystem", "CPetrelLinux",
                "PetrelMessaging", "PetrelSources",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "petrel",
            dependencies: [
                "PetrelClient",
                "PetrelCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
            ],
            // `petrel deploy --sam` runs SAM/petrel_sam.py (installed as /usr/lib/petrel/petrel_sam.py).
            exclude: ["SAM"]
        ),
        .testTarget(
            name: "PetrelSandboxTests",
            dependencies: ["PetrelSandbox", "PetrelCore", "PetrelTOML", "CPetrelLinux", "petreld", "petrel-init"],
            // Tests/Probe/main.c is compiled by the tests (cc -static) and run inside sandboxes.
            exclude: []
        ),
        .testTarget(
            name: "PetrelControllerTests",
            dependencies: [
                "PetrelCore", "PetrelStore", "PetrelClient", "PetrelAPI", "PetrelRuntime", "PetrelSystem", "PetrelSigV4", "petreld",
                "PetrelMessaging", "PetrelSources", "PetrelSandbox",
                "petrel-init",
                .product(name: "GRDB", package: "GRDB.swift"), .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"), .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"), .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
