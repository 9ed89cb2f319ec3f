// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "remedy",
    products: [
        .executable(name: "remedy", targets: ["remedy"]),
        .library(name: "RemedyCore", targets: ["RemedyCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // C libraries, found with pkg-config.
        .systemLibrary(name: "CGuestfs", pkgConfig: "libguestfs", providers: [.apt(["libguestfs-dev"])]),
        .systemLibrary(name: "CHivex", pkgConfig: "hivex", providers: [.apt(["libhivex-dev"])]),

        // Safe Swift wrappers: nothing above these sees a C pointer.
        .target(name: "Guestfs", dependencies: ["CGuestfs", .product(name: "SystemPackage", package: "swift-system")]),
        .target(
            name: "Hivex",
            dependencies: ["CHivex", "RegistryFormat", .product(name: "SystemPackage", package: "swift-system")]),

        // Registry values and the registry file format in pure Swift: base blocks, checksums, transaction logs and
        // their replay. It parses untrusted bytes on the host, so it never trusts a field (and is fuzzed).
        .target(name: "RegistryFormat"),

        // Facts in, plan out: facts, plan, policy model, rules, virtio-win drivers (INF), planner, renderers. Pure:
        // it cannot import Guestfs or Hivex, and reads no file (the engine loads every input beforehand).
        .target(
            name: "RemedyPlanning",
            dependencies: ["RegistryFormat", .product(name: "Crypto", package: "swift-crypto")]
        ),

        // The engine: images, the appliance, inspection, loading policies and payloads, apply, rollback, batch.
        .target(
            name: "RemedyCore",
            dependencies: [
                "RemedyPlanning", "Guestfs", "Hivex", "RegistryFormat", "Yams",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // The test kit: phony Windows images and hives built from declarative descriptions, a fake virtio-win, the
        // fuzz harness. Linked by the tests and remedy-dev only, never by the shipped remedy.
        .target(
            name: "RemedyFixtures",
            dependencies: [
                "RemedyCore", "RegistryFormat", "Guestfs", "Hivex",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),

        // The command line's commands (plan, apply, rollback, batch, report, convert, hive, policies, explain).
        .target(
            name: "RemedyCLI",
            dependencies: [
                "RemedyCore", "RegistryFormat",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // The shipped program: the command line, without the test kit.
        .executableTarget(name: "remedy", dependencies: ["RemedyCLI"]),

        // Developer tools, not shipped: the demo, phony images, a fake virtio-win (they need the test kit).
        .executableTarget(
            name: "remedy-dev",
            dependencies: [
                "RemedyCLI", "RemedyCore", "RemedyFixtures",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),

        .testTarget(name: "HivexTests", dependencies: ["Hivex", "RegistryFormat", "RemedyFixtures"]),
        .testTarget(
            name: "RemedyCoreTests", dependencies: ["RemedyCore", "RemedyPlanning", "RemedyFixtures", "Hivex"]),
        .testTarget(
            name: "EndToEndTests", dependencies: ["RemedyCore", "RemedyPlanning", "RemedyFixtures", "Guestfs", "Hivex"]),
    ],
    swiftLanguageModes: [.v6]
)
