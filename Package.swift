// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "remedy",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "remedy", targets: ["remedy"]),
        .library(name: "RemedyCore", targets: ["RemedyCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // C libraries, found with pkg-config.
        .systemLibrary(name: "CGuestfs", pkgConfig: "libguestfs", providers: [.apt(["libguestfs-dev"])]),
        .systemLibrary(name: "CHivex", pkgConfig: "hivex", providers: [.apt(["libhivex-dev"])]),

        // Safe Swift wrappers: nothing above these sees a C pointer.
        .target(name: "Guestfs", dependencies: ["CGuestfs"]),
        .target(name: "Hivex", dependencies: ["CHivex"]),

        // The registry file format in pure Swift: base blocks, checksums, transaction logs and their
        // replay. It parses untrusted bytes on the host, so it never trusts a field (and is fuzzed).
        .target(name: "RegistryFormat"),

        // Policy model, inspection facts, pure planner, applier, renderers.
        .target(name: "RemedyCore", dependencies: ["Guestfs", "Hivex", "RegistryFormat", "Yams"]),

        // Phony Windows images and hives built from declarative descriptions (tests, demo, benchmarks).
        .target(name: "RemedyFixtures", dependencies: ["RemedyCore", "RegistryFormat", "Guestfs", "Hivex"]),

        // The thin command-line front end.
        .executableTarget(
            name: "remedy",
            dependencies: [
                "RemedyCore", "RemedyFixtures", "RegistryFormat",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        .testTarget(name: "HivexTests", dependencies: ["Hivex", "RegistryFormat", "RemedyFixtures"]),
        .testTarget(name: "RemedyCoreTests", dependencies: ["RemedyCore", "RemedyFixtures", "Hivex"]),
        .testTarget(name: "EndToEndTests", dependencies: ["RemedyCore", "RemedyFixtures", "Guestfs", "Hivex"]),
    ],
    swiftLanguageModes: [.v6]
)
