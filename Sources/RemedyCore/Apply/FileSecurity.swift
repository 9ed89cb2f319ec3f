import Foundation
import Guestfs

/// Windows security descriptors for what remedy writes. ntfs-3g gives a file it creates owner Administrators and
/// Everyone: Full Control unless told otherwise; remedy tells it, through the `system.ntfs_acl` extended attribute
/// (the NTFS security descriptor, self-relative, as Windows stores it). What each place gets:
/// - `C:\Windows\remedy` (runner, steps, staged payloads, records, backups of hives and files): SYSTEM and
///   Administrators only, Full Control, inherited by what the runner creates there at boot (logs, state);
/// - drivers, INF files, driver-store and `Drivers\VirtIO` folders: as Windows' own files there: owner
///   TrustedInstaller, TrustedInstaller Full Control, SYSTEM, Administrators, Users (and on Windows 8 and later the
///   application-package groups) Read & Execute;
/// - anything else remedy creates (Group Policy files, Cloudbase-Init configuration): owner Administrators, SYSTEM
///   and Administrators Full Control, Users Read & Execute (what `Program Files` children inherit);
/// - a file remedy replaces keeps the security descriptor the original had.
public enum FileSecurity {
    public static let attribute = "system.ntfs_acl"

    public struct SID: Equatable, Sendable, CustomStringConvertible {
        public var authority: UInt64
        public var subAuthorities: [UInt32]

        public init(_ authority: UInt64, _ subAuthorities: [UInt32]) {
            self.authority = authority
            self.subAuthorities = subAuthorities
        }

        public static let everyone = SID(1, [0])
        public static let creatorOwner = SID(3, [0])
        public static let authenticatedUsers = SID(5, [11])
        public static let system = SID(5, [18])
        public static let administrators = SID(5, [32, 544])
        public static let users = SID(5, [32, 545])
        public static let trustedInstaller = SID(
            5, [80, 956_008_885, 3_418_522_649, 1_831_038_044, 1_853_292_631, 2_271_478_464])
        public static let allApplicationPackages = SID(15, [2, 1])
        public static let allRestrictedApplicationPackages = SID(15, [2, 2])

        /// Revision 1, sub-authority count, the 48-bit authority big-endian, each sub-authority little-endian.
        public var bytes: [UInt8] {
            var b: [UInt8] = [1, UInt8(subAuthorities.count)]
            for shift in stride(from: 40, through: 0, by: -8) { b.append(UInt8((authority >> UInt64(shift)) & 0xFF)) }
            for s in subAuthorities { b += le32(s) }
            return b
        }

        public var description: String { "S-1-\(authority)" + subAuthorities.map { "-\($0)" }.joined() }
    }

    /// Access masks (winnt.h).
    public enum Mask {
        public static let fullControl: UInt32 = 0x001F_01FF
        public static let modify: UInt32 = 0x0013_01BF
        public static let readExecute: UInt32 = 0x0012_00A9
        public static let genericReadExecute: UInt32 = 0xA000_0000
        public static let genericAll: UInt32 = 0x1000_0000
    }

    /// ACE flags.
    public enum Inherit {
        public static let objects: UInt8 = 0x01
        public static let containers: UInt8 = 0x02
        public static let inheritOnly: UInt8 = 0x08
    }

    /// An access-allowed ACE.
    public struct ACE: Equatable, Sendable {
        public var sid: SID
        public var mask: UInt32
        public var flags: UInt8
        public init(_ sid: SID, _ mask: UInt32, _ flags: UInt8 = 0) {
            self.sid = sid
            self.mask = mask
            self.flags = flags
        }
    }

    public struct Descriptor: Equatable, Sendable {
        public var owner: SID
        public var group: SID
        public var dacl: [ACE]

        /// Self-relative: header, DACL, owner, group. Control: self-relative, DACL present, protected (not inheriting
        /// from the parent) and auto-inherited, as Windows writes it for an ACL set explicitly.
        public var bytes: [UInt8] {
            var acl: [UInt8] = []
            for a in dacl {
                let sid = a.sid.bytes
                acl += [0x00, a.flags] + le16(UInt16(8 + sid.count)) + le32(a.mask) + sid
            }
            let aclBytes = [2, 0] + le16(UInt16(8 + acl.count)) + le16(UInt16(dacl.count)) + [0, 0] + acl
            let daclOffset = 20, ownerOffset = daclOffset + aclBytes.count
            let ownerBytes = owner.bytes, groupOffset = ownerOffset + ownerBytes.count
            let control: UInt16 = 0x8000 | 0x1000 | 0x0400 | 0x0004
            return [1, 0] + le16(control) + le32(UInt32(ownerOffset)) + le32(UInt32(groupOffset)) + le32(0)
                + le32(UInt32(daclOffset))
                + aclBytes + ownerBytes + group.bytes
        }
    }

    /// SYSTEM and Administrators only; a directory passes it on to what is created in it.
    public static func privateState(directory: Bool) -> Descriptor {
        let inherit = directory ? Inherit.objects | Inherit.containers : 0
        return Descriptor(
            owner: .administrators, group: .system,
            dacl: [ACE(.system, Mask.fullControl, inherit), ACE(.administrators, Mask.fullControl, inherit)])
    }

    /// A Windows system file (`System32\drivers\*.sys`, `INF\oem*.inf`) or folder (`DriverStore\FileRepository\<pkg>`).
    public static func windowsSystem(directory: Bool, os: OSFacts) -> Descriptor {
        var readers: [SID] = [.administrators, .system, .users]
        if (os.majorVersion, os.minorVersion) >= (6, 2) { readers.append(.allApplicationPackages) }
        if os.majorVersion >= 10 { readers.append(.allRestrictedApplicationPackages) }
        var dacl = [ACE(.trustedInstaller, Mask.fullControl)]
        if directory {
            // The folder as System32's: TrustedInstaller owns subfolders, SYSTEM and Administrators modify the folder and
            // fully control what is created in it, everyone else reads.
            let all = Inherit.objects | Inherit.containers | Inherit.inheritOnly
            dacl =
                [
                    ACE(.trustedInstaller, Mask.fullControl),
                    ACE(.trustedInstaller, Mask.genericAll, Inherit.containers | Inherit.inheritOnly),
                    ACE(.system, Mask.modify), ACE(.system, Mask.genericAll, all),
                    ACE(.administrators, Mask.modify), ACE(.administrators, Mask.genericAll, all),
                ]
                + readers.filter { $0 != .administrators && $0 != .system }.flatMap {
                    [ACE($0, Mask.readExecute), ACE($0, Mask.genericReadExecute, all)]
                }
                + [ACE(.creatorOwner, Mask.genericAll, all)]
        } else {
            dacl += readers.map { ACE($0, Mask.readExecute) }
        }
        return Descriptor(owner: .trustedInstaller, group: .trustedInstaller, dacl: dacl)
    }

    /// Anything else remedy creates: administrators and SYSTEM write, users read.
    public static func administered(directory: Bool) -> Descriptor {
        let inherit = directory ? Inherit.objects | Inherit.containers : 0
        return Descriptor(
            owner: .administrators, group: .system,
            dacl: [
                ACE(.system, Mask.fullControl, inherit), ACE(.administrators, Mask.fullControl, inherit),
                ACE(.users, Mask.readExecute, inherit),
            ])
    }

    /// The descriptor for a guest path remedy creates.
    public static func descriptor(for path: String, directory: Bool, os: OSFacts) -> Descriptor {
        let p = path.lowercased(), root = os.systemRoot.lowercased()
        if p == root + "/remedy" || p.hasPrefix(root + "/remedy/") || p.hasPrefix(root + "/system32/config/") {
            return privateState(directory: directory)
        }
        for place in ["/system32/drivers/", "/inf/", "/system32/driverstore/", "/drivers/", "/syswow64/drivers/"]
        where p.hasPrefix(root + place) || p + "/" == root + place {
            return windowsSystem(directory: directory, os: os)
        }
        return administered(directory: directory)
    }

    /// The length a descriptor really uses (the end of its owner, group, DACL and SACL): ntfs-3g refuses a value
    /// with bytes past it, and a stored descriptor can have padding.
    static func usedLength(_ b: [UInt8]) -> Int? {
        guard b.count >= 20, b[0] == 1 else { return nil }
        func u32(_ o: Int) -> Int { (0..<4).reduce(0) { $0 | Int(b[o + $1]) << (8 * $1) } }
        var end = 20
        for o in [u32(4), u32(8)] where o != 0 {
            guard o + 2 <= b.count else { return nil }
            end = max(end, o + 8 + 4 * Int(b[o + 1]))
        }
        for o in [u32(12), u32(16)] where o != 0 {
            guard o + 4 <= b.count else { return nil }
            end = max(end, o + Int(b[o + 2]) | Int(b[o + 3]) << 8)
        }
        return end <= b.count ? end : nil
    }

    /// One descriptor to give a guest path: `bytes` first; `fallback` when ntfs-3g refuses `bytes` (a kept original).
    struct Assignment {
        var path: String
        var bytes: [UInt8]
        var fallback: [UInt8]? = nil
    }

    /// The assignment that gives `path` (a new file or folder that will be `logical`) remedy's descriptor for its place.
    static func assignment(_ path: String, as logical: String? = nil, directory: Bool, os: OSFacts) -> Assignment {
        Assignment(path: path, bytes: descriptor(for: logical ?? path, directory: directory, os: os).bytes)
    }

    /// The assignment that gives `path` the descriptor `original` (a replaced file's, trimmed to its used length), or
    /// remedy's for `logical` when there is none or ntfs-3g refuses it.
    static func keeping(
        _ path: String, original: [UInt8]?, as logical: String, directory: Bool, os: OSFacts
    ) -> Assignment {
        let own = descriptor(for: logical, directory: directory, os: os).bytes
        guard let o = original, let n = usedLength(o) else { return Assignment(path: path, bytes: own) }
        return Assignment(path: path, bytes: Array(o.prefix(n)), fallback: own)
    }

    /// The guest's `/` inside the appliance, where libguestfs mounts it and `debug sh` sees it.
    static let applianceRoot = "/sysroot"

    /// `path` quoted for sh: single quotes, a `'` as `'\''`.
    static func shQuoted(_ path: String) -> String { "'" + path.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    static func hex(_ b: [UInt8]) -> String { "0x" + b.map { String(format: "%02x", $0) }.joined() }

    static func setCommand(_ path: String, _ bytes: [UInt8]) -> String { setCommand([path], bytes) }

    /// One `setfattr` for all of `paths` (it takes many).
    static func setCommand(_ paths: [String], _ bytes: [UInt8]) -> String {
        "setfattr -h -n \(attribute) -v \(hex(bytes)) "
            + paths.map { shQuoted(applianceRoot + $0) }.joined(separator: " ")
    }

    /// A piece of shell text and the guest paths it sets.
    struct Command: Equatable {
        var text: String
        var paths: [String]
    }

    /// The commands that make `items` true, fewest processes first: a process costs tens of milliseconds in a TCG
    /// appliance, and the files of a driver package all get the same descriptor. Assignments with the same bytes and
    /// no fallback share one `setfattr` (up to about `limit` characters); one with a fallback gets its own, since only
    /// that path may fall back. A path assigned again starts new groups, so the last assignment still wins.
    static func commands(_ items: [Assignment], limit: Int = 32 * 1024) -> [Command] {
        var out: [Command] = []
        var open: [[UInt8]: Int] = [:]
        var seen: Set<String> = []
        for item in items {
            if !seen.insert(item.path).inserted { open.removeAll() }
            if let f = item.fallback {
                let text = "{ \(setCommand(item.path, item.bytes)) 2>/dev/null || \(setCommand(item.path, f)); }"
                out.append(Command(text: text, paths: [item.path]))
                continue
            }
            let quoted = " " + shQuoted(applianceRoot + item.path)
            if let i = open[item.bytes], out[i].text.utf8.count + quoted.utf8.count <= limit {
                out[i].text += quoted
                out[i].paths.append(item.path)
            } else {
                open[item.bytes] = out.count
                out.append(Command(text: setCommand(item.path, item.bytes), paths: [item.path]))
            }
        }
        return out
    }

    /// Sets many descriptors in one appliance call per ~64 KiB of shell text, one `setfattr` per descriptor where it can
    /// (``commands(_:limit:)``; a call costs a round trip; libguestfs's
    /// `lsetxattr` cannot carry a descriptor: it passes the value as a C string, cut at its first zero byte, and
    /// ntfs-3g answers EINVAL). `setfattr` in the appliance takes the bytes as hex. The command stops at the first
    /// failure and the error names the files of the batch.
    /// With `privateDirectory`, that folder is also made SYSTEM's and Administrators' only (``privateCommand(_:)``), in
    /// the same call.
    static func set(_ g: Guestfs, _ items: [Assignment], privateDirectory: String? = nil, image: String? = nil) throws {
        var batch: [String] = [], size = 0, names: [String] = []
        func flush() throws {
            guard !batch.isEmpty else { return }
            defer {
                batch = []
                size = 0
                names = []
            }
            try run(g, batch.joined(separator: " && "), about: names, image: image)
        }
        for command in commands(items) {
            if size + command.text.utf8.count > 64 * 1024 { try flush() }
            batch.append(command.text)
            size += command.text.utf8.count + 4
            names += command.paths
        }
        if let privateDirectory {
            batch.append(privateCommand(privateDirectory))
            names.append(privateDirectory)
        }
        try flush()
    }

    /// The shell command that makes `directory` and everything below it SYSTEM's and Administrators' only (the
    /// state directory after apply wrote its backups and record there).
    static func privateCommand(_ directory: String) -> String {
        let root = shQuoted(applianceRoot + directory)
        let set = "-exec setfattr -h -n \(attribute) -v"
        return
            "{ if [ -d \(root) ]; then find \(root) -type d \(set) \(hex(privateState(directory: true).bytes)) {} + && "
            + "find \(root) ! -type d \(set) \(hex(privateState(directory: false).bytes)) {} +; fi; }"
    }

    private static func run(_ g: Guestfs, _ command: String, about paths: [String], image: String?) throws {
        let marker = "remedy-acl-done"
        let what =
            paths.prefix(3).map(GuestPath.windows).joined(separator: ", ")
            + (paths.count > 3 ? " and \(paths.count - 3) more" : "")
        do {
            let out = try g.debug("sh", ["\(command) && echo \(marker)"])
            guard out.contains(marker) else {
                throw RemedyError(
                    .writeFailed, image: image,
                    "cannot set the permissions of \(what): \(out.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
        } catch let e as GuestfsError {
            throw RemedyError(
                .writeFailed, image: image, "cannot set the permissions of \(what): \(e.message)", cause: e)
        }
    }
}

private func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
private func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * UInt32($0))) & 0xFF) } }
