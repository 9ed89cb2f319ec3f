// swift-tools-version: 6.0
// Why remedy's HostTool does not use swift-subprocess: see main.swift and the README ("Layout").
import PackageDescription

let package = Package(
    name: "subprocess-pool-probe",
    dependencies: [
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        .executableTarget(
            name: "probe",
            dependencies: [
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ])
    ]
)
