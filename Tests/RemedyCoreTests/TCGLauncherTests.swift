import Foundation
import Testing

@testable import RemedyCore

/// The launcher remedy gives libguestfs under TCG, run by `sh` with a stand-in qemu that prints its arguments.
@Suite struct TCGLauncherTests {
    static func run(_ launcher: String, _ args: [String]) throws -> [String] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: launcher)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        return String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
            .dropLast().map(String.init)
    }

    @Test func onlyMachineAccelTcgBecomesAccelWithTheBufferSize() throws {
        let dir = NSTemporaryDirectory() + "/remedy-tcg-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let qemu = dir + "/fake qemu's"
        try "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n".write(
            toFile: qemu, atomically: true, encoding: .utf8)
        chmod(qemu, 0o755)
        let home = dir + "/launchers"
        let launcher = try #require(TCGLauncher.path(qemu: qemu, mib: 64, directory: home))
        #expect(TCGLauncher.path(qemu: qemu, mib: 64, directory: home) == launcher, "the same launcher is reused")
        #expect(TCGLauncher.path(qemu: qemu, mib: 32, directory: home) != launcher)

        let args = [
            "-global", "virtio-blk-pci.scsi=off", "-machine", "accel=tcg", "-cpu", "max,la57=off", "-m", "1280",
            "-append", "panic=1 console=ttyS0 remedy.launch=x y", "-drive", "file=/a b/it's.qcow2,if=none", "",
        ]
        var want = args
        want.replaceSubrange(2...3, with: ["-accel", "tcg,tb-size=64"])
        #expect(try Self.run(launcher, args) == want)
        // Anything else passes unchanged: another machine option, KVM, a last -machine without a value.
        for other in [["-machine", "q35,accel=tcg"], ["-machine", "accel=kvm:tcg"], ["-help"], ["-x", "-machine"]] {
            #expect(try Self.run(launcher, other) == other)
        }
    }

    @Test func anUntrustedFolderGetsNoLauncher() throws {
        let dir = NSTemporaryDirectory() + "/remedy-tcg-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let open = dir + "/open"
        try FileManager.default.createDirectory(atPath: open, withIntermediateDirectories: true)
        chmod(open, 0o777)
        #expect(TCGLauncher.path(qemu: "/bin/true", mib: 64, directory: open) == nil, "a folder others can write")
        let link = dir + "/link"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: dir + "/private")
        try FileManager.default.createDirectory(atPath: dir + "/private", withIntermediateDirectories: true)
        chmod(dir + "/private", 0o700)
        #expect(TCGLauncher.path(qemu: "/bin/true", mib: 64, directory: link) == nil, "a link")
        #expect(TCGLauncher.path(qemu: "/bin/true", mib: 0, directory: dir + "/private") == nil, "0 keeps qemu's own")
        #expect(TCGLauncher.path(qemu: "/bin/true", mib: 64, directory: dir + "/private") != nil)
    }
}
