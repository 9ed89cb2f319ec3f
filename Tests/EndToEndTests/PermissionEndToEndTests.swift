import Foundation
import Guestfs
import RemedyCore
import Testing

/// Permissions on their own image (one Server 2016 image, one apply, one rollback): what apply writes gets an
/// explicit security descriptor, the hive it replaces keeps the one it had (the image builder's, with an Everyone
/// ACE remedy never writes), and rollback puts the hive back with it. Read back with libguestfs (`lgetxattr` returns
/// the attribute's bytes as they are; one read-only launch for a host-side copy of the applied image and the rolled
/// back one) and decoded by `NTFSSecurity`.
@Suite(.serialized) struct PermissionEndToEndTests {
    /// One read-only appliance carrying `images` (raw); the Windows volume of `images[0]` is mounted.
    static func appliance(_ images: [String]) throws -> (g: Guestfs, roots: [String]) {
        let g = try Guestfs()
        try g.setBackend("direct")
        try g.setBackendSettings(["force_tcg"])
        for image in images { try g.addDrive(image, format: "raw", readonly: true) }
        try g.launch()
        let devices = try g.listDevices()
        let found = try g.inspectOS()
        let roots = try devices.map { d in try #require(found.first { $0.hasPrefix(d) }, "no Windows on \(d)") }
        try g.mountReadOnly(roots[0], at: "/")
        return (g, roots)
    }

    static func acl(_ g: Guestfs, _ path: String) throws -> [UInt8] {
        try g.lgetxattr(try g.caseSensitivePath(path), "system.ntfs_acl")
    }

    @Test func whatApplyWritesHasAnExplicitACLAndReplacedHivesKeepTheirs() throws {
        let dir = NSTemporaryDirectory() + "/remedy-acl-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let image = dir + "/w2016.raw", virtio = dir + "/vw", msi = dir + "/CloudbaseInitSetup_x64.msi"
        #expect(
            FileManager.default.createFile(
                atPath: msi, contents: Data("placeholder for CloudbaseInitSetup_x64.msi\r\n".utf8)))
        let made = try remedyDev(["make-image", "--os", "2016", "--format", "raw", "--static-nics", "1", "-o", image])
        try #require(made.status == 0, "\(made.stderr)")
        let vw = try remedyDev(["make-virtio-win", "--os", "2k16", virtio])
        try #require(vw.status == 0, "\(vw.stderr)")

        let hive = "/Windows/System32/config/SYSTEM"
        var before: [UInt8] = []
        let applied = try remedy([
            "apply", image, "--policy", "openstack-kvm", "--virtio-win", virtio, "--payload", "cloudbase-init=\(msi)",
        ])
        // 0, or 2 when blocking findings remain (this phony disk is smaller than the cloud's 40 GB minimum).
        try #require(applied.status == 0 || applied.status == 2, "\(applied.stderr)")
        // The applied image is copied on the host, then rolled back; one appliance reads both.
        let appliedCopy = dir + "/w2016-applied.raw"
        try sparseCopy(image, to: appliedCopy)
        let rolled = try remedy(["rollback", image])
        try #require(rolled.status == 0, "\(rolled.stderr)")
        let (g, roots) = try Self.appliance([appliedCopy, image])
        defer { g.close() }
        do {
            try NTFSSecurity.check(g, host: "w2016")
            // The image builder's files all have the descriptor ntfs-3g gave them (Everyone: Full Control, which remedy
            // never writes): the replaced hive must still have exactly that, like cmd.exe, which apply does not touch.
            before = try Self.acl(g, "/Windows/System32/cmd.exe")
            try #require(
                try NTFSSecurity.decode(before).dacl.contains { $0.sid == NTFSSecurity.everyone },
                "the builder's descriptor: \(before)")
            #expect(try Self.acl(g, hive) == before, "the replaced SYSTEM hive did not keep its descriptor")
            // A folder apply created for new files, and a file in it.
            let store = try Self.acl(g, "/Windows/Drivers/VirtIO")
            #expect(try NTFSSecurity.decode(store).owner == NTFSSecurity.trustedInstaller)
            let everyone = try NTFSSecurity.decode(try Self.acl(g, "/Windows/remedy/firstboot/run.cmd")).dacl.filter {
                $0.sid == NTFSSecurity.everyone
            }
            #expect(everyone.isEmpty, "run.cmd: \(everyone)")
            // openstack-kvm's guest-agent option: virtio-win's 64-bit agent MSI staged under remedy's directory and the
            // balloon service beside the drivers, byte for byte, each with a first-boot step that installs it.
            func sha(_ guest: String) -> String? {
                guard let p = try? g.caseSensitivePath(guest), (try? g.isFile(p)) == true else { return nil }
                return try? g.checksum("sha256", p)
            }
            func text(_ guest: String) -> String {
                (try? g.caseSensitivePath(guest)).flatMap { try? g.readFile($0) }.map { TextEncoding.decode($0).0 }
                    ?? ""
            }
            let msiPath = "/Windows/remedy/payloads/guest-agent/qemu-ga-x86_64.msi"
            #expect(
                sha(msiPath) == (try SHA256Hex.ofFile(virtio + "/guest-agent/qemu-ga-x86_64.msi").sha256),
                "the guest agent MSI")
            #expect(
                sha("/Windows/Drivers/VirtIO/blnsvr.exe")
                    == (try SHA256Hex.ofFile(virtio + "/Balloon/2k16/amd64/blnsvr.exe").sha256))
            #expect(
                text("/Windows/remedy/firstboot/scripts/40-qemu-guest-agent.cmd")
                    .contains(
                        "msiexec /i \"C:\\Windows\\remedy\\payloads\\guest-agent\\qemu-ga-x86_64.msi\" /norestart /qn"))
            #expect(
                text("/Windows/remedy/firstboot/scripts/41-balloon-service.cmd").contains(
                    "\"C:\\Windows\\Drivers\\VirtIO\\blnsvr.exe\" -i"))
            let msiEveryone = try NTFSSecurity.decode(try Self.acl(g, msiPath)).dacl.filter {
                $0.sid == NTFSSecurity.everyone
            }
            #expect(msiEveryone.isEmpty, "the staged MSI: \(msiEveryone)")
        }

        do {
            try g.umountAll()
            try g.mountReadOnly(roots[1], at: "/")
            #expect(try Self.acl(g, hive) == before, "the hive rollback put back does not have the descriptor it had")
            #expect((try? g.caseSensitivePath("/Windows/remedy")).map { (try? g.exists($0)) == true } != true)
            #expect(
                (try? g.caseSensitivePath("/Windows/Drivers/VirtIO/blnsvr.exe")).map { (try? g.exists($0)) == true }
                    != true,
                "rollback left the injected blnsvr.exe")
        }
    }
}
