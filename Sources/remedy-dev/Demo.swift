import ArgumentParser
import Foundation
import RemedyCLI
import RemedyCore
import RemedyFixtures
import SystemPackage

extension RemedyDev {
    struct Demo: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Build a sample phony Windows Server 2016 image (static NICs, VMware Tools, IDE path off) and plan it.",
            discussion: "No Windows image is needed: the sample is built by remedy itself (real NTFS and hives)."
        )

        @Option(help: "Where to write the sample image.") var output: String = "sample/win2016-static.qcow2"
        @Flag(help: "Also apply the plan and plan again.") var apply = false
        @OptionGroup var appliance: ApplianceFlags

        func run() throws {
            try requireVirtioINFFixtures(for: "remedy-dev demo")
            let options = try appliance.options()
            let spec = PhonyWindows(
                release: .server2016, hostname: "WIN-SAMPLE",
                nics: [
                    .staticIP("{3F2504E0-4F89-41D3-9A0C-0305E82C3301}", "10.1.2.10", gateway: "10.1.2.1"),
                    .staticIP("{6B29FC40-CA47-1067-B31D-00DD010662DA}", "172.16.5.20", mask: "255.255.0.0"),
                ], states: [.vmwareTools, .ideDisabled])
            FileHandle.standardError.write(
                Data(
                    "remedy: building \(output) (phony Windows Server 2016 exported from VMware: 2 static NICs, VMware Tools, IDE path off)...\n"
                        .utf8))
            do {
                try ImageFactory.build([ImageRequest(.windows(spec), path: output, format: .qcow2)], options: options)
            } catch {
                throw fail(error, image: output, format: .text)
            }
            // A fake virtio-win and Cloudbase-Init MSI (real layout and INF text, placeholder binaries) show the driver and payload steps.
            let dir =
                FilePath(output).removingLastComponent().string.isEmpty
                ? "." : FilePath(output).removingLastComponent().string
            let virtio = dir + "/virtio-win"
            let msi = dir + "/CloudbaseInitSetup_x64.msi"
            try FakeVirtioWin.write(at: virtio, layout: .isoTree, osDirectories: ["2k16"])
            _ = FileManager.default.createFile(
                atPath: msi, contents: Data("remedy demo: a placeholder, not the Cloudbase-Init installer\r\n".utf8))
            var flags: [String] = ["--virtio-win", virtio, "--payload", "cloudbase-init=\(msi)"]
            if let a = appliance.accel { flags += ["--accel", a.rawValue] }
            if let t = appliance.kvmTimeout { flags += ["--kvm-timeout", "\(t)"] }
            if let m = appliance.memsize { flags += ["--memsize", "\(m)"] }
            do { try RemedyCommandLine.plan([output] + flags) } catch let e as ExitCode where e.rawValue == 2 {
                guard apply else { throw e }
                print("\n--- apply ---")
                // apply exits 2 when blocking findings remain (the demo disk is small): the demo goes on.
                do { try RemedyCommandLine.apply([output] + flags) } catch let e as ExitCode where e.rawValue == 2 {}
                print("\n--- plan after apply ---")
                try RemedyCommandLine.plan([output] + flags)
            }
        }
    }
}

/// The fake virtio-win serves the real INF files of a source checkout (`Tests/Fixtures/virtio-win`); an installed
/// binary has no checkout beside it. Say so before any work, rather than stopping half-way.
func requireVirtioINFFixtures(for command: String) throws {
    var isDir: ObjCBool = false
    let dir = FakeVirtioWin.realINFDirectory
    guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
        FileHandle.standardError.write(
            Data(
                "remedy: error: \(command) needs the virtio-win INF files of a remedy source checkout (Tests/Fixtures/virtio-win), not found at \(dir): set REMEDY_VIRTIO_INF_FIXTURES to that folder, or run it with swift run in the checkout\n"
                    .utf8))
        throw ExitCode.failure
    }
}
