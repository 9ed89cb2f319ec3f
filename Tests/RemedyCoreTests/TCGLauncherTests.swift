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

    /// A filesystem mounted `noexec` could not run the launcher (qemu would not start at all): `allowsExecution` must
    /// say what the kernel's mount table says, for every mount point (with a noexec tmpfs mounted for the test when
    /// the test may mount, as root).
    @Test func noexecIsSeenAsTheMountTableSaysIt() throws {
        let dir = NSTemporaryDirectory() + "/remedy-tcg-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func run(_ tool: String, _ args: [String]) -> Int32 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: tool)
            p.arguments = args
            p.standardError = FileHandle.nullDevice
            guard (try? p.run()) != nil else { return -1 }
            p.waitUntilExit()
            return p.terminationStatus
        }
        let mounted = getuid() == 0 && run("/bin/mount", ["-t", "tmpfs", "-o", "noexec,size=64k", "tmpfs", dir]) == 0
        defer { if mounted { _ = run("/bin/umount", [dir]) } }
        var options: [String: [String]] = [:]  // the last mount of a point is the one seen
        for line in try String(contentsOfFile: "/proc/self/mounts", encoding: .utf8).split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count >= 4, !f[1].contains("\\") else { continue }
            options[String(f[1])] = f[3].split(separator: ",").map(String.init)
        }
        var checked = 0, noexec = 0
        for (point, opts) in options {
            var fs = statvfs()
            guard statvfs(point, &fs) == 0 else { continue }
            let runs = !opts.contains("noexec")
            #expect(TCGLauncher.allowsExecution(point) == runs, "\(point): \(opts)")
            checked += 1
            if !runs { noexec += 1 }
        }
        #expect(checked > 0)
        if mounted { #expect(noexec > 0 && !TCGLauncher.allowsExecution(dir)) }
    }
}
