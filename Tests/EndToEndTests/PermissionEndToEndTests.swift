import Foundation
import Guestfs
import RemedyCore
import Testing

/// Permissions on their own image (one Server 2016 image, one apply, one rollback): what apply writes gets an
/// explicit security descriptor, the hive it replaces keeps the one it had (a descriptor set by the test before
/// apply, in a byte layout remedy's encoder does not produce), and rollback puts the hive back with it. Read back
/// with libguestfs (`lgetxattr` returns the attribute's bytes as they are) and decoded by `NTFSSecurity`.
@Suite(.serialized) struct PermissionEndToEndTests {
    /// Owner Administrators first, then group SYSTEM, then the DACL (SYSTEM and Administrators Full Control, OI|CI),
    /// protected: the order Windows does not require and remedy's encoder does not write.
    static let marker = "010004901400000024000000000000003000000001020000000000052000000020020000010100000000000512000000"
        + "020034000200000000031400ff011f0001010000000000051200000000031800ff011f0001020000000000052000000020020000"

    static func appliance(_ image: String, readonly: Bool) throws -> Guestfs {
        let g = try Guestfs()
        try g.setBackend("direct")
        try g.setBackendSettings(["force_tcg"])
        try g.addDrive(image, format: "raw", readonly: readonly)
        try g.launch()
        let root = try #require(try g.inspectOS().first)
        if readonly { try g.mountReadOnly(root, at: "/") } else { try g.mount(root, at: "/") }
        return g
    }

    static func acl(_ g: Guestfs, _ path: String) throws -> [UInt8] { try g.lgetxattr(try g.caseSensitivePath(path), "system.ntfs_acl") }

    @Test func whatApplyWritesHasAnExplicitACLAndReplacedHivesKeepTheirs() throws {
        let dir = NSTemporaryDirectory() + "/remedy-acl-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let image = dir + "/w2016.raw", virtio = dir + "/vw", msi = dir + "/CloudbaseInitSetup_x64.msi"
        FileManager.default.createFile(atPath: msi, contents: Data("placeholder for CloudbaseInitSetup_x64.msi\r\n".utf8))
        let made = try remedy(["dev", "make-image", "--os", "2016", "--format", "raw", "--static-nics", "1", "-o", image])
        try #require(made.status == 0, "\(made.stderr)")
        let vw = try remedy(["dev", "make-virtio-win", "--os", "2k16", virtio])
        try #require(vw.status == 0, "\(vw.stderr)")

        // The SYSTEM hive gets a descriptor of its own before apply.
        let hive = "/Windows/System32/config/SYSTEM"
        var before: [UInt8] = []
        do {
            let g = try Self.appliance(image, readonly: false)
            defer { g.close() }
            let out = try g.debug("sh", ["setfattr -h -n system.ntfs_acl -v 0x\(Self.marker) /sysroot\(try g.caseSensitivePath(hive)) && echo set"])
            #expect(out.contains("set"))
            before = try Self.acl(g, hive)
            try g.shutdown()
        }
        let markerBytes = stride(from: 0, to: Self.marker.count, by: 2).map {
            UInt8(Self.marker[Self.marker.index(Self.marker.startIndex, offsetBy: $0)...].prefix(2), radix: 16)!
        }
        #expect(Array(before.prefix(markerBytes.count)) == markerBytes, "the test's descriptor was not set: \(before)")

        let applied = try remedy(["apply", image, "--policy", "openstack-kvm", "--virtio-win", virtio, "--payload", "cloudbase-init=\(msi)"])
        try #require(applied.status == 0, "\(applied.stderr)")
        do {
            let g = try Self.appliance(image, readonly: true)
            defer { g.close() }
            try NTFSSecurity.check(g, host: "w2016")
            #expect(try Self.acl(g, hive) == before, "the replaced SYSTEM hive did not keep its descriptor")
            // A folder apply created for new files, and a file in it.
            let store = try Self.acl(g, "/Windows/Drivers/VirtIO")
            #expect(try NTFSSecurity.decode(store).owner == NTFSSecurity.trustedInstaller)
            let everyone = try NTFSSecurity.decode(try Self.acl(g, "/Windows/remedy/firstboot/run.cmd")).dacl.filter { $0.sid == NTFSSecurity.everyone }
            #expect(everyone.isEmpty, "run.cmd: \(everyone)")
        }

        let rolled = try remedy(["rollback", image])
        try #require(rolled.status == 0, "\(rolled.stderr)")
        do {
            let g = try Self.appliance(image, readonly: true)
            defer { g.close() }
            #expect(try Self.acl(g, hive) == before, "the hive rollback put back does not have the descriptor it had")
            #expect((try? g.caseSensitivePath("/Windows/remedy")).map { (try? g.exists($0)) == true } != true)
        }
    }
}
