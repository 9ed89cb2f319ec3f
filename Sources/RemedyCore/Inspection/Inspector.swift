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
    public var partitionTable: String
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
        try? g.umountAll()
        let partitions = try g.listPartitions().filter { $0.hasPrefix(device) && $0 != device }
        let candidates = partitions.isEmpty ? [device] : partitions
        var found: [(fs: String, systemRoot: String)] = []
        var seen: [(fs: String, type: String)] = []
        for fs in candidates {
            let type = (try? g.vfsType(fs)) ?? ""
            seen.append((fs, type.isEmpty ? "unknown" : type))
            guard type == "ntfs" else { continue }
            guard (try? g.mountReadOnly(fs, at: "/")) != nil else { continue }
            for dir in ["/Windows", "/WINNT"] {
                if let real = try? g.caseSensitivePath(dir + "/System32/config/SYSTEM"), (try? g.isFile(real)) == true {
                    found.append((fs, String(real.dropLast("/System32/config/SYSTEM".count))))
                    break
                }
            }
            try g.umountAll()
        }
        let encrypted = seen.filter { $0.type.lowercased() == "bitlocker" }.map(\.fs)
        guard let windows = found.first else {
            if !encrypted.isEmpty {
                throw RemedyError(.encrypted, "the disk has BitLocker-encrypted volumes (\(encrypted.joined(separator: ", "))) and no readable Windows: "
                                  + "remedy cannot inspect it and the cloud rejects encrypted images; decrypt it in Windows (manage-bde -off C:) and export it again")
            }
            var others: [String] = []
            for (fs, type) in seen where linuxFilesystems.contains(type) {
                guard (try? g.mountReadOnly(fs, at: "/")) != nil else { continue }
                defer { try? g.umountAll() }
                if (try? g.isFile("/etc/os-release")) == true {
                    let name = (try? g.readFile("/etc/os-release")).flatMap { prettyName(String(decoding: $0, as: UTF8.self)) } ?? "Linux"
                    others.append("linux (\(name)) on \(fs)")
                }
            }
            if !others.isEmpty { throw RemedyError(.notWindows, "not a Windows image: found " + others.joined(separator: "; ")) }
            let list = seen.map { "\($0.fs) \($0.type)" }.joined(separator: ", ")
            throw RemedyError(.noOperatingSystem, "no operating system found (filesystems: \(list.isEmpty ? "none" : list))")
        }
        guard found.count == 1 else {
            throw RemedyError(.multipleOperatingSystems, "more than one Windows installation found (\(found.map(\.fs).joined(separator: ", "))); remedy edits images with exactly one")
        }
        let table = (try? g.partitionTableType(device)) ?? "unknown"
        let boot = bootManager(g, filesystems: seen, uefi: table == "gpt")
        let esp = table == "gpt" ? boot.flatMap { espFacts(g, filesystem: String($0.prefix { $0 != ":" })) } : nil
        try g.umountAll()
        try g.mountReadOnly(windows.fs, at: "/")
        return WindowsInstall(device: device, root: windows.fs, systemRoot: windows.systemRoot, partitionTable: table,
                              hibernated: hibernated(g), encrypted: encrypted,
                              filesystems: seen.map { FilesystemFacts(device: $0.fs, type: $0.type, windows: $0.fs == windows.fs) },
                              bootManager: boot, esp: esp)
    }

    /// Checksums of the boot loaders on the ESP `filesystem` (mounted read-only here): the Windows Boot Manager and
    /// the fallback loaders a firmware with an empty NVRAM starts.
    static func espFacts(_ g: Guestfs, filesystem: String) -> ESPFacts? {
        try? g.umountAll()
        guard (try? g.mountReadOnly(filesystem, at: "/")) != nil else { return nil }
        var facts = ESPFacts(device: filesystem)
        for wanted in [ESPFacts.bootManager, ESPFacts.fallbackX64, ESPFacts.fallbackIA32] {
            guard let path = try? g.caseSensitivePath(wanted), (try? g.isFile(path)) == true,
                  let size = try? g.fileSize(path), let sum = try? g.checksum("sha256", path) else { continue }
            facts.files[wanted.lowercased()] = GuestFile(path: path, size: size, sha256: sum)
        }
        return facts
    }

    /// The boot manager Windows starts from, looked for on this disk only: on
    /// a GPT disk `\EFI\Microsoft\Boot\bootmgfw.efi` on a FAT (EFI system)
    /// partition; on an MBR disk `\bootmgr` with `\Boot\BCD` on an NTFS
    /// partition (System Reserved or C: itself).
    static func bootManager(_ g: Guestfs, filesystems: [(fs: String, type: String)], uefi: Bool) -> String? {
        let wanted = uefi ? ["/EFI/Microsoft/Boot/bootmgfw.efi"] : ["/bootmgr", "/Boot/BCD"]
        for (fs, type) in filesystems where (uefi ? type == "vfat" : type == "ntfs") {
            try? g.umountAll()
            guard (try? g.mountReadOnly(fs, at: "/")) != nil else { continue }
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
              let head = try? g.pread(path, count: 4, offset: 0), head.count == 4 else { return false }
        return ["hibr", "wake", "rstr"].contains(String(decoding: head, as: UTF8.self).lowercased())
    }

    static func prettyName(_ osRelease: String) -> String? {
        for line in osRelease.split(separator: "\n") where line.hasPrefix("PRETTY_NAME=") {
            return line.dropFirst("PRETTY_NAME=".count).trimmingCharacters(in: CharacterSet(charactersIn: "\"'"))
        }
        return nil
    }

    /// OS facts from the hives (and the architecture found from `cmd.exe`).
    static func osFacts(_ install: WindowsInstall, system: Hive, software: Hive, arch: String,
                        controlSets: [ControlSet], current: String) -> OSFacts {
        func string(_ hive: Hive, _ path: String, _ name: String) -> String? {
            guard let node = try? hive.node(at: path) else { return nil }
            switch try? hive.value(of: node, named: name) {
            case .string(let s)?, .expandString(let s)?: return s
            default: return nil
            }
        }
        func number(_ hive: Hive, _ path: String, _ name: String) -> Int? {
            guard let node = try? hive.node(at: path), case .dword(let v)? = try? hive.value(of: node, named: name) else { return nil }
            return Int(v)
        }
        let cv = "Microsoft\\Windows NT\\CurrentVersion"
        var major = number(software, cv, "CurrentMajorVersionNumber")
        var minor = number(software, cv, "CurrentMinorVersionNumber")
        if major == nil, let legacy = string(software, cv, "CurrentVersion") {
            let parts = legacy.split(separator: ".").compactMap { Int($0) }
            if parts.count == 2 { major = parts[0]; minor = parts[1] }
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
            firmware: table == "gpt" ? "uefi" : table == "msdos" ? "bios" : "unknown",
            partitionTable: table)
    }
}
