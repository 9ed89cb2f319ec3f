import Foundation
import Guestfs
import Testing

/// Reads `system.ntfs_acl` (the NTFS security descriptor ntfs-3g exposes) straight from the image and decodes it
/// here, from the documented self-relative format ([MS-DTYP] 2.4.6 SECURITY_DESCRIPTOR, 2.4.5 ACL, 2.4.4.2
/// ACCESS_ALLOWED_ACE, 2.4.2.2 SID), independently of remedy's encoder.
enum NTFSSecurity {
    struct ACE: CustomStringConvertible {
        var type: UInt8, flags: UInt8, mask: UInt32, sid: String
        var description: String {
            "\(type == 0 ? "allow" : "type\(type)") \(sid) 0x\(String(mask, radix: 16)) flags 0x\(String(flags, radix: 16))"
        }
    }

    struct Decoded {
        var owner: String
        var group: String
        var control: UInt16
        var dacl: [ACE]
    }

    static let everyone = "S-1-1-0", authenticatedUsers = "S-1-5-11", users = "S-1-5-32-545", system = "S-1-5-18"
    static let administrators = "S-1-5-32-544",
        trustedInstaller = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
    /// Rights that change a file or its security: write/append data, write EA and attributes, delete, change
    /// permissions, take ownership, generic write, generic all (MS-DTYP 2.4.3).
    static let writeRights: UInt32 =
        0x2 | 0x4 | 0x10 | 0x40 | 0x100 | 0x10000 | 0x40000 | 0x80000 | 0x4000_0000 | 0x1000_0000

    static func u16(_ b: [UInt8], _ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
    static func u32(_ b: [UInt8], _ o: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * UInt32($1)) }
    }

    static func sid(_ b: [UInt8], _ o: Int) -> (String, Int) {
        let count = Int(b[o + 1])
        let authority = (2..<8).reduce(UInt64(0)) { $0 << 8 | UInt64(b[o + $1]) }
        var s = "S-\(b[o])-\(authority)"
        for i in 0..<count { s += "-\(u32(b, o + 8 + 4 * i))" }
        return (s, 8 + 4 * count)
    }

    static func decode(_ b: [UInt8]) throws -> Decoded {
        try #require(b.count >= 20 && b[0] == 1, "not a security descriptor: \(b.count) bytes")
        let control = u16(b, 2)
        try #require(control & 0x8000 != 0, "not self-relative")
        let owner = sid(b, Int(u32(b, 4))).0, group = sid(b, Int(u32(b, 8))).0
        var aces: [ACE] = []
        let daclOffset = Int(u32(b, 16))
        if control & 0x0004 != 0, daclOffset != 0 {
            let count = Int(u16(b, daclOffset + 4))
            var o = daclOffset + 8
            for _ in 0..<count {
                let size = Int(u16(b, o + 2))
                aces.append(ACE(type: b[o], flags: b[o + 1], mask: u32(b, o + 4), sid: sid(b, o + 8).0))
                o += size
            }
        }
        return Decoded(owner: owner, group: group, control: control, dacl: aces)
    }

    /// What remedy wrote, checked: the state directory is SYSTEM's and Administrators' only; driver files and folders
    /// are owned by TrustedInstaller; nothing grants Everyone, Users or Authenticated Users a right to change it.
    static func check(_ g: Guestfs, host: String, systemRoot: String = "/Windows") throws {
        var paths = [
            "/Windows/remedy", "/Windows/remedy/firstboot", "/Windows/remedy/firstboot/run.cmd",
            "/Windows/remedy/firstboot/scripts/20-virtio-drivers.cmd", "/Windows/System32/drivers/viostor.sys",
            "/Windows/Drivers/VirtIO", "/Windows/Drivers/VirtIO/netkvm.sys", "/Windows/Drivers/VirtIO/viostor.inf",
            "/Windows/System32/GroupPolicy/Machine/Scripts/scripts.ini", "/Windows/System32/GroupPolicy/gpt.ini",
        ]
        for dir in ["/Windows/remedy/backup", "/Windows/remedy/log", "/Windows/remedy/payloads"] {
            guard let real = try? g.caseSensitivePath(dir), (try? g.isDir(real)) == true else { continue }
            paths += try g.find(real).filter { !$0.isEmpty }.map { "\(dir)/\($0)" }
        }
        #expect(
            paths.contains { $0.hasPrefix("/Windows/remedy/backup/") && $0.hasSuffix("/SYSTEM") },
            "\(host): no hive backup found")
        for path in paths {
            let real = try g.caseSensitivePath(path)
            let d = try decode(try g.lgetxattr(real, "system.ntfs_acl"))
            let where_ = "\(host) \(path): owner \(d.owner) \(d.dacl)"
            for ace in d.dacl where [everyone, users, authenticatedUsers].contains(ace.sid) {
                #expect(ace.type != 0 || ace.mask & writeRights == 0, "\(where_): \(ace) grants a write right")
            }
            if path.lowercased().hasPrefix("/windows/remedy") {
                #expect([administrators, system].contains(d.owner), "\(where_)")
                #expect(
                    !d.dacl.isEmpty && d.dacl.allSatisfy { [administrators, system].contains($0.sid) },
                    "\(where_): readable by others")
                if try g.isDir(real) {
                    #expect(
                        d.dacl.allSatisfy { $0.flags & 0x3 == 0x3 }, "\(where_): not inherited by what is created in it"
                    )
                }
            } else if path.contains("/drivers/") || path.contains("/Drivers/") {
                #expect(d.owner == trustedInstaller, "\(where_)")
                #expect(d.dacl.contains { $0.sid == trustedInstaller && $0.mask == 0x1F01FF }, "\(where_)")
                #expect(
                    d.dacl.contains { $0.sid == system } && d.dacl.contains { $0.sid == users && $0.mask == 0x1200A9 },
                    "\(where_)")
            }
        }
    }
}
