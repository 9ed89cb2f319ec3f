import ArgumentParser
import Foundation
import RemedyCLI
import RemedyCore
import RemedyFixtures

/// remedy's developer tools, not shipped: the demo, and phony images and a fake virtio-win for tests, demos and
/// benchmarks. They need the test kit (RemedyFixtures), which the shipped `remedy` does not link.
@main
struct RemedyDev: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remedy-dev",
        abstract: "remedy's developer tools: the demo, phony Windows images and a fake virtio-win (not installed).",
        subcommands: [Demo.self, MakeImage.self, MakeVirtioWin.self]
    )
}

extension WindowsRelease: ExpressibleByArgument {}
extension Firmware: ExpressibleByArgument {}
extension Architecture: ExpressibleByArgument {}
extension PhonyState: ExpressibleByArgument {}
extension RealSystemHive: ExpressibleByArgument {}
extension FakeVirtioWin.Layout: ExpressibleByArgument {}

extension RemedyDev {
    struct MakeVirtioWin: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "make-virtio-win",
            abstract: "Write a fake virtio-win (real layout and INF text, placeholder binaries) for tests and demos."
        )

        @Option(help: "isoTree or packaged.") var layout: FakeVirtioWin.Layout = .isoTree
        @Option(
            name: .customLong("os"),
            help: ArgumentHelp("OS directories to include (comma-separated; default all).", valueName: "list"))
        var osList: String?
        @Option(help: ArgumentHelp("Also build an ISO of the tree here (isoTree layout only).", valueName: "file"))
        var iso: String?
        @Argument(help: "Directory to write.") var directory: String

        func run() throws {
            try requireVirtioINFFixtures(for: "remedy-dev make-virtio-win")
            let dirs = osList.map { $0.split(separator: ",").map(String.init) } ?? FakeVirtioWin.allOSDirectories
            try FakeVirtioWin.write(at: directory, layout: layout, osDirectories: dirs)
            if let iso { try FakeVirtioWin.makeISO(from: directory, to: iso) }
            print(iso ?? directory)
        }
    }
}

extension RemedyDev {
    struct MakeImage: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "make-image",
            abstract: "Build a phony Windows image: real NTFS, real hives, a minimal PE cmd.exe."
        )

        @Option(name: .customLong("os"), help: "2008, 2008r2, 2012, 2012r2, 2016, 2019, 2022.") var release:
            WindowsRelease = .server2016
        @Option(help: "x86_64 or i386 (default: the release's usual one).") var arch: Architecture?
        @Option(help: "bios (MBR) or uefi (GPT + ESP).") var firmware: Firmware = .bios
        @Option(help: "Number of NICs with static addresses.") var staticNics: Int = 2
        @Option(help: "Number of NICs on DHCP.") var dhcpNics: Int = 0
        @Option(help: "Number of control sets.") var controlSets: Int = 2
        @Option(help: "Disk size in MiB.") var sizeMib: Int = 128
        @Option(
            name: .customLong("state"),
            help: ArgumentHelp(
                "A broken state to build in (repeatable): \(PhonyState.allCases.map(\.rawValue).joined(separator: ", ")).",
                valueName: "state"))
        var states: [PhonyState] = []
        @Option(help: "raw, qcow2, vmdk, vhd, vhdx, vdi, qed.") var format: DiskFormat = .qcow2
        @Option(
            help: ArgumentHelp(
                "A real SYSTEM hive from the test fixtures instead of the generated one: \(RealSystemHive.allCases.map(\.rawValue).joined(separator: ", ")) (--os, NICs and control sets then follow that hive).",
                valueName: "hive"))
        var realSystem: RealSystemHive?
        @Option(
            help: ArgumentHelp(
                "Add about this many MiB of installed-product keys to the SOFTWARE hive (real SOFTWARE hives are 40-100 MB).",
                valueName: "MiB"))
        var softwareMib: Int = 0
        @Option(name: .shortAndLong, help: "Output path.") var output: String
        @OptionGroup var appliance: ApplianceFlags

        func validate() throws {
            guard (1...9).contains(controlSets) else { throw ValidationError("--control-sets must be 1 to 9") }
            guard staticNics >= 0, dhcpNics >= 0, staticNics + dhcpNics <= 64 else {
                throw ValidationError("0 to 64 NICs")
            }
            guard sizeMib >= 32 else { throw ValidationError("--size-mib must be at least 32") }
            guard (0...1024).contains(softwareMib) else { throw ValidationError("--software-mib must be 0 to 1024") }
        }

        func run() throws {
            var nics: [PhonyNIC] = []
            for i in 0..<staticNics {
                nics.append(
                    .staticIP(
                        String(format: "{00000000-0000-4000-8000-%012X}", i + 1), "10.0.\(i).10", gateway: "10.0.\(i).1"
                    ))
            }
            for i in 0..<dhcpNics {
                nics.append(.dhcp(String(format: "{00000000-0000-4000-9000-%012X}", i + 1)))
            }
            var spec = PhonyWindows(
                release: release, arch: arch, firmware: firmware, controlSetCount: controlSets, nics: nics,
                states: Set(states), diskMiB: sizeMib)
            if let realSystem {
                spec = .real(realSystem, firmware: firmware, states: Set(states))
                spec.diskMiB = sizeMib
            }
            spec.extraSoftware.merge(PhonyWindows.softwareFiller(mib: softwareMib)) { a, _ in a }
            do {
                try ImageFactory.build(
                    [ImageRequest(.windows(spec), path: output, format: format)], options: try appliance.options())
            } catch {
                throw fail(error, image: output, format: .text)
            }
            print(output)
        }
    }
}
