import Foundation
import Guestfs
import Hivex

/// Where a Windows installation lives on one disk of the appliance.
public struct WindowsInstall: Sendable, Equatable {
    /// The disk, e.g. `/dev/sdb`.
    public var device: String
    /// The NTFS filesystem holding `\Windows`, e.g. `/dev/sdb2`.
    public var root: String
    /// Guest path of the Windows directory with its on-disk case, e.g. `/Windows`.
    public var systemRoot: String
    /// `gpt`, `msdos` or `unknown`.
    public var partitionTable: PartitionTable
    /// `hiberfil.sys` holds a hibernation image.
    public var hibernated: Bool = false
    /// BitLocker-encrypted partitions of the disk.
    public var encrypted: [String] = []
    /// Every filesystem on the disk with its type.
    public var filesystems: [FilesystemFacts] = []
    /// Where the boot manager of this disk is (`/dev/sda1:/bootmgr`), when it is on the disk.
    public var bootManager: String?
    /// The boot loaders on the EFI system partition (UEFI only).
    public var esp: ESPFacts?
}

/// Targeted inspection: finds the Windows installation on one disk by
/// looking only where Windows keeps it (an NTFS filesystem with
/// `\Windows\System32\config\SYSTEM`), instead of libguestfs's full
/// `inspect_os`, which examines every filesystem of every disk attached. It
/// works per disk, so one appliance can hold many images; the OS facts are
/// then read from the hives on the host (``osFacts``), exactly where
/// `inspect_os` reads them from (ProductName, CurrentVersion /
/// CurrentMajorVersionNumber, InstallationType, ComputerName) and the
/// architecture from `System32\cmd.exe`'s PE header, as `inspect_os` does.
public enum WindowsInspector {
    static let linuxFilesystems: Set<String> = ["ext2", "ext3", "ext4", "xfs", "btrfs", "jfs", "reiserfs"]

    /// Locates Windows on `device`. Leaves the Windows filesystem mounted read-only at `/`.
    public static func locate(_ g: Guestfs, device: String) throws -> WindowsInstall {
        let root = RootMount(g)
        root.unmount()
        let partitions = partitions(of: device, in: try g.listPartitions())
        let candidates = partitions.isEmpty ? [device] : partitions
        var found: [(fs: String, systemRoot: String)] = []
        var seen: [(fs: String, type: String)] = []
        for fs in candidates {
            let type = (try? g.vfsType(fs)) ?? ""
            seen.append((fs, type.isEmpty ? "unknown" : type))
            guard type == "ntfs" else { continue }
            guard root.mount(fs) else { continue }
            for dir in ["/Windows", "/WINNT"] {
                if let real = try? g.caseSensitivePath(dir + "/System32/config/SYSTEM"), (try? g.isFile(real)) == true {
                    found.append((fs, String(real.dropLast("/System32/config/SYSTEM".count))))
                    break
                }
            }
        }
        let encrypted = seen.filter { $0.type.lowercased() == "bitlocker" }.map(\.fs)
        guard let windows = found.first else {
            if !encrypted.isEmpty {
                throw RemedyError(
                    .encrypted,
                    "the disk has BitLocker-encrypted volumes (\(encrypted.joined(separator: ", "))) and no readable Windows: "
                        + "remedy cannot inspect it and the cloud rejects encrypted images; decrypt it in Windows (manage-bde -off C:) and export it again"
                )
            }
            var others: [String] = []
            for (fs, type) in seen where linuxFilesystems.contains(type) {
                guard root.mount(fs) else { continue }
                defer { root.unmount() }
                if (try? g.isFile("/etc/os-release")) == true {
                    let name =
                        (try? g.readFile("/etc/os-release")).flatMap { prettyName(String(decoding: $0, as: UTF8.self)) }
                        ?? "Linux"
                    others.append("linux (\(name)) on \(fs)")
                }
            }
            if !others.isEmpty {
                throw RemedyError(.notWindows, "not a Windows image: found " + others.joined(separator: "; "))
            }
            let list = seen.map { "\($0.fs) \($0.type)" }.joined(separator: ", ")
            throw RemedyError(
                .noOperatingSystem, "no operating system found (filesystems: \(list.isEmpty ? "none" : list))")
        }
        guard found.count == 1 else {
            throw RemedyError(
                .multipleOperatingSystems,
                "more than one Windows installation found (\(found.map(\.fs).joined(separator: ", "))); remedy edits images with exactly one"
            )
        }
        let table = partitionTable(g, device: device, partitioned: !partitions.isEmpty)
        let boot = bootManager(root, filesystems: seen, uefi: table == .gpt)
        let esp = table == .gpt ? boot.flatMap { espFacts(root, filesystem: String($0.prefix { $0 != ":" })) } : nil
        if root.current != windows.fs {
            root.unmount()
            try g.mountReadOnly(windows.fs, at: "/")
        }
        return WindowsInstall(
            device: device, root: windows.fs, systemRoot: windows.systemRoot, partitionTable: table,
            hibernated: hibernated(g), encrypted: encrypted,
            filesystems: seen.map { FilesystemFacts(device: $0.fs, type: $0.type, windows: $0.fs == windows.fs) },
            bootManager: boot, esp: esp)
    }

    /// The partitions of `device` in libguestfs's list of every disk's: `/dev/sdb1`, never `/dev/sdba1` (the 53rd
    /// disk of an appliance holding many images) or `/dev/sdb` itself.
    static func partitions(of device: String, in all: [String]) -> [String] {
        all.filter { p in
            p.hasPrefix(device) && p.count > device.count
                && p.dropFirst(device.count).allSatisfy { $0.isASCII && $0.isNumber }
        }
    }

    /// The partition table as parted names it (`gpt`, `msdos`, ...), read from the first two sectors: a GPT header
    /// ("EFI PART" at LBA 1) or a protective MBR entry (type 0xEE) is `gpt`, another MBR with its 0x55AA signature
    /// `msdos`. One `pread_device` (about 0.02 s under TCG) instead of starting parted (1-2 s); parted decides what
    /// the sectors do not (an unpartitioned disk, no signature).
    static func partitionTable(_ g: Guestfs, device: String, partitioned: Bool) -> PartitionTable {
        if partitioned, let head = try? g.preadDevice(device, count: 1024, offset: 0),
            let table = partitionTable(firstSectors: head)
        {
            return table
        }
        return (try? g.partitionTableType(device)).flatMap(PartitionTable.init(rawValue:)) ?? .unknown
    }

    /// `gpt`, `msdos` or nil (undecided) from a disk's first 1024 bytes (512-byte sectors).
    static func partitionTable(firstSectors b: [UInt8]) -> PartitionTable? {
        guard b.count >= 1024 else { return nil }
        if Array(b[512..<520]) == Array("EFI PART".utf8) { return .gpt }
        guard b[510] == 0x55, b[511] == 0xAA else { return nil }
        return (0..<4).contains { b[446 + 16 * $0 + 4] == 0xEE } ? .gpt : .msdos
    }

    /// The architecture of a PE file (cmd.exe) as libguestfs's `file_architecture` names it, from its first bytes
    /// (the COFF machine field), or nil when they do not say.
    static func peArchitecture(_ b: [UInt8]) -> Architecture? {
        guard b.count >= 0x40, b[0] == 0x4D, b[1] == 0x5A else { return nil }
        let pe = Int(b[0x3C]) | Int(b[0x3D]) << 8 | Int(b[0x3E]) << 16 | Int(b[0x3F]) << 24
        guard pe >= 0x40, pe + 6 <= b.count, Array(b[pe..<pe + 4]) == [0x50, 0x45, 0, 0] else { return nil }
        switch UInt16(b[pe + 4]) | UInt16(b[pe + 5]) << 8 {
        case 0x8664: return .x86_64
        case 0x014C: return .i386
        case 0xAA64: return .aarch64
        default: return nil
        }
    }

    /// Checksums of the boot loaders on the ESP `filesystem` (mounted read-only here): the Windows Boot Manager and
    /// the fallback loaders a firmware with an empty NVRAM starts.
    static func espFacts(_ root: RootMount, filesystem: String) -> ESPFacts? {
        let g = root.g
        guard root.mount(filesystem) else { return nil }
        var facts = ESPFacts(device: filesystem)
        for wanted in [ESPFacts.bootManager, ESPFacts.fallbackX64, ESPFacts.fallbackIA32] {
            guard let path = try? g.caseSensitivePath(wanted), (try? g.isFile(path)) == true,
                let size = try? g.fileSize(path), let sum = try? g.checksum("sha256", path)
            else { continue }
            facts.files[wanted.lowercased()] = GuestFile(path: path, size: size, sha256: sum)
        }
        return facts
    }

    /// The boot manager Windows starts from, looked for on this disk only: on
    /// a GPT disk `\EFI\Microsoft\Boot\bootmgfw.efi` on a FAT (EFI system)
    /// partition; on an MBR disk `\bootmgr` with `\Boot\BCD` on an NTFS
    /// partition (System Reserved or C: itself).
    static func bootManager(_ root: RootMount, filesystems: [(fs: String, type: String)], uefi: Bool) -> String? {
        let g = root.g
        let wanted = uefi ? ["/EFI/Microsoft/Boot/bootmgfw.efi"] : ["/bootmgr", "/Boot/BCD"]
        for (fs, type) in filesystems where (uefi ? type == "vfat" : type == "ntfs") {
            guard root.mount(fs) else { continue }
            let found = wanted.allSatisfy { path in
                (try? g.caseSensitivePath(path)).map { (try? g.isFile($0)) == true } ?? false
            }
            if found { return "\(fs):\(wanted[0])" }
        }
        return nil
    }

    /// Whether `/hiberfil.sys` on the mounted Windows volume holds a hibernation
    /// image: Windows writes its header signature (`hibr`, `HIBR`, `wake`, `WAKE`)
    /// on hibernation and on a Fast Startup shutdown, and zeroes it on resume.
    static func hibernated(_ g: Guestfs) -> Bool {
        guard let path = try? g.caseSensitivePath("/hiberfil.sys"), (try? g.isFile(path)) == true,
            let head = try? g.pread(path, count: 4, offset: 0), head.count == 4
        else { return false }
        return ["hibr", "wake", "rstr"].contains(String(decoding: head, as: UTF8.self).lowercased())
    }

    static func prettyName(_ osRelease: String) -> String? {
        for line in osRelease.split(separator: "\n") where line.hasPrefix("PRETTY_NAME=") {
            return line.dropFirst("PRETTY_NAME=".count).trimmingCharacters(in: CharacterSet(charactersIn: "\"'"))
        }
        return nil
    }

    /// OS facts from the hives (and the architecture found from `cmd.exe`).
    static func osFacts(
        _ install: WindowsInstall, system: any ReadableHive, software: any ReadableHive, arch: Architecture,
        controlSets: [ControlSet], current: String
    ) -> OSFacts {
        func value(_ hive: some ReadableHive, _ path: String, _ name: String) -> RegistryValue? {
            guard let node = try? hive.lookup(path) else { return nil }
            return try? hive.decodedValue(of: node, named: name)
        }
        func string(_ hive: any ReadableHive, _ path: String, _ name: String) -> String? {
            switch value(hive, path, name) {
            case .string(let s)?, .expandString(let s)?: return s
            default: return nil
            }
        }
        func number(_ hive: any ReadableHive, _ path: String, _ name: String) -> Int? {
            guard case .dword(let v)? = value(hive, path, name) else { return nil }
            return Int(v)
        }
        let cv = "Microsoft\\Windows NT\\CurrentVersion"
        var major = number(software, cv, "CurrentMajorVersionNumber")
        var minor = number(software, cv, "CurrentMinorVersionNumber")
        if major == nil, let legacy = string(software, cv, "CurrentVersion") {
            let parts = legacy.split(separator: ".").compactMap { Int($0) }
            if parts.count == 2 {
                major = parts[0]
                minor = parts[1]
            }
        }
        let installation = string(software, cv, "InstallationType") ?? ""
        let table = install.partitionTable
        return OSFacts(
            root: install.root,
            product: string(software, cv, "ProductName") ?? "Windows",
            variant: installation.isEmpty ? "unknown" : installation.hasPrefix("Server") ? "Server" : installation,
            majorVersion: major ?? 0,
            minorVersion: minor ?? 0,
            build: string(software, cv, "CurrentBuildNumber") ?? string(software, cv, "CurrentBuild"),
            arch: arch,
            hostname: string(system, "\(current)\\Control\\ComputerName\\ComputerName", "ComputerName"),
            systemRoot: install.systemRoot,
            currentControlSet: current,
            controlSets: controlSets,
            firmware: Firmware(partitionTable: table),
            partitionTable: table)
    }
}

/// What inspection has mounted read-only at `/`, so that a filesystem already there is not mounted again: an
/// ntfs-3g mount costs about 0.7 s under TCG, and a BIOS disk's one volume used to be mounted three times (to find
/// Windows, to find the boot manager, to read Windows).
final class RootMount {
    let g: Guestfs
    private(set) var current: String?

    init(_ g: Guestfs) { self.g = g }

    /// Mounts `fs` read-only at `/` (unmounting whatever else is there) unless it is there already.
    func mount(_ fs: String) -> Bool {
        if current == fs { return true }
        unmount()
        guard (try? g.mountReadOnly(fs, at: "/")) != nil else { return false }
        current = fs
        return true
    }

    func unmount() {
        try? g.umountAll()
        current = nil
    }
}
