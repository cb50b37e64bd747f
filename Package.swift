// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Petrel",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "petreld", targets: ["petreld"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .target(
            name: "CPetrelLinux",
            cSettings: [.unsafeFlags(["-Wall", "-Wno-unused-function"])],
            linkerSettings: [.linkedLibrary("seccomp"), .linkedLibrary("nftables")]
        ),
        .target(name: "PetrelTOML"),
        .target(name: "PetrelCore"),
        .target(
            name: "PetrelSandbox",
            dependencies: [
                "CPetrelLinux", "PetrelTOML",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "petreld",
            dependencies: [
                "PetrelSandbox", "PetrelCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "PetrelSandboxTests",
            dependencies: ["PetrelSandbox", "PetrelCore", "PetrelTOML", "CPetrelLinux", "petreld"],
            // Tests/Probe/main.c is compiled by the tests (cc -static) and run inside sandboxes.
            exclude: []
        ),
    ],
    swiftLanguageModes: [.v6]
)
