import Foundation
import Guestfs
import Hivex
import RegistryFormat
import RemedyCore
import Synchronization
import SystemPackage

/// What goes on a phony disk.
public enum PhonyDisk: Sendable {
    case windows(PhonyWindows)
    /// An NTFS data disk with a few files and no operating system.
    case dataDisk
    /// A Linux root filesystem (ext4 with os-release): an OS, but not Windows.
    case linux
}

/// One image to build: content, output path and format.
public struct ImageRequest: Sendable {
    public var disk: PhonyDisk
    public var path: String
    public var format: DiskFormat

    public init(_ disk: PhonyDisk, path: String, format: DiskFormat = .raw) {
        self.disk = disk
        self.path = path
        self.format = format
    }
}

/// Builds phony disk images: every requested image in one appliance launch
/// (raw disks attached side by side), then converted with qemu-img.
public enum ImageFactory {
    /// Builds `requests` in `appliances` launches that run at the same time (contiguous shares of the list; each
    /// image gets the disk signature and partition GUID of its index in the whole list, as with one launch).
    /// TCG runs an appliance on one core: two launches fill a two-core machine.
    public static func build(_ requests: [ImageRequest], options: ApplianceOptions, appliances: Int = 1) throws {
        let n = max(1, min(appliances, requests.count))
        guard n > 1 else { return try build(requests[...], firstIndex: 0, options: options) }
        let per = (requests.count + n - 1) / n
        let errors = ErrorBox()
        DispatchQueue.concurrentPerform(iterations: n) { k in
            let lo = k * per, hi = min(requests.count, lo + per)
            guard lo < hi else { return }
            do { try build(requests[lo..<hi], firstIndex: lo, options: options) } catch { errors.set(error) }
        }
        if let e = errors.first { throw e }
    }

    private final class ErrorBox: Sendable {  // the first error of the parallel builds
        private let error = Mutex<(any Error)?>(nil)
        func set(_ e: any Error) { error.withLock { if $0 == nil { $0 = e } } }
        var first: (any Error)? { error.withLock { $0 } }
    }

    static func build(_ slice: ArraySlice<ImageRequest>, firstIndex: Int, options: ApplianceOptions) throws {
        let requests = Array(slice)
        guard !requests.isEmpty else { return }
        let fm = FileManager.default
        let work = NSTemporaryDirectory() + "/remedy-factory-\(UUID().uuidString)"
        try fm.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: work) }

        var raws: [String] = []
        for (i, r) in requests.enumerated() {
            let raw = r.format == .raw ? r.path : "\(work)/disk\(i).raw"
            try? fm.removeItem(atPath: raw)
            let parent = FilePath(r.path).removingLastComponent().string
            if !parent.isEmpty { try fm.createDirectory(atPath: parent, withIntermediateDirectories: true) }
            guard fm.createFile(atPath: raw, contents: nil) else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: raw])
            }
            let mib: Int
            if case .windows(let w) = r.disk { mib = w.diskMiB } else { mib = 64 }
            guard truncate(raw, off_t(mib) * 1_048_576) == 0 else {
                throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
            }
            raws.append(raw)
        }

        let appliance = try Appliance.launch(
            drives: raws.map { Drive(path: $0, format: "raw", readonly: false) }, options: options)
        defer { appliance.close() }
        let g = appliance.guestfs
        let devices = try g.listDevices()
        for (i, r) in requests.enumerated() {
            let dev = devices[i]
            switch r.disk {
            case .windows(let w): try buildWindows(w, on: dev, g: g, work: "\(work)/w\(i)", index: firstIndex + i)
            case .dataDisk: try buildDataDisk(on: dev, g: g)
            case .linux: try buildLinux(on: dev, g: g)
            }
        }
        try appliance.shutdown()

        for (i, r) in requests.enumerated() where r.format != .raw {
            try? fm.removeItem(atPath: r.path)
            try convert(raws[i], to: r.path, format: r.format)
        }
    }

    /// `qemu-img convert` from raw to another format.
    public static func convert(_ raw: String, to path: String, format: DiskFormat) throws {
        var args = ["convert", "-q", "-f", "raw", "-O", format.qemuName]
        if format == .vhd { args += ["-o", "subformat=dynamic"] }
        try QemuImg.run(args + [raw, path], image: path)
    }

    static func buildWindows(_ w: PhonyWindows, on dev: String, g: Guestfs, work: String, index: Int) throws {
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let ntfs: String
        var mounted: [UInt8]
        // The partition table is written as bytes (PartitionTables), not with parted: the disk is `diskMiB` MiB.
        let sectors = Int64(w.diskMiB) * 2048
        switch w.firmware {
        case .bios:
            // A fixed disk signature, as MountedDevices refers to it.
            let signature: [UInt8] = [0x52, 0x4D, 0x44, UInt8(0x30 + index % 10)]
            let twoVolumes = w.damage == .bitLockerDataVolume || w.states.contains(.dataPartition)
            let partitions: [PartitionTables.MBRPartition] =
                twoVolumes
                ? [
                    .init(start: 2048, end: sectors - 32 * 2048 - 1, bootable: true),
                    .init(start: sectors - 32 * 2048, end: sectors - 1),
                ]
                : [.init(start: 2048, end: sectors - 1, bootable: true)]
            try g.pwriteDevice(dev, PartitionTables.mbr(partitions, signature: signature), offset: 0)
            try g.blockdevRereadpt(dev)
            if w.damage == .bitLockerDataVolume {
                try writeBitLockerHeader(g, partition: dev + "2")
            } else if twoVolumes {
                try g.mkfs("ntfs", dev + "2", label: "Data")
            }
            ntfs = dev + "1"
            var entry = signature
            let offset: UInt64 = 2048 * 512
            for b in 0..<8 { entry.append(UInt8(truncatingIfNeeded: offset >> (8 * UInt64(b)))) }
            mounted = entry
        case .uefi, .unknown:  // a phony image is built with a table: unknown is not asked for
            let partGUID = String(format: "6E6F6E79-7265-6D65-6479-%012X", index)
            let table = PartitionTables.gpt(
                [
                    .init(
                        start: 2048, end: 2048 + 32 * 2048 - 1, type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
                        guid: String(format: "6E6F6E79-6573-7000-0000-%012X", index), name: "EFI system partition"),
                    .init(
                        start: 2048 + 32 * 2048, end: sectors - 34, type: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
                        guid: partGUID,
                        name: "Basic data partition"),
                ], sectors: sectors, diskGUID: String(format: "6E6F6E79-6469-736B-0000-%012X", index))
            try g.pwriteDevice(dev, table.primary, offset: 0)
            try g.pwriteDevice(dev, table.backup, offset: table.backupOffset)
            try g.blockdevRereadpt(dev)
            try g.mkfs("vfat", dev + "1", label: "SYSTEM")
            try g.mount(dev + "1", at: "/")
            try g.mkdirP("/EFI/Microsoft/Boot")
            try g.mkdirP("/EFI/Boot")
            let efi = MinimalPE.bytes(machine: w.arch == .x86_64 ? .amd64 : .i386, subsystem: 10)
            if !w.states.contains(.bootOnOtherDisk) { try g.write("/EFI/Microsoft/Boot/bootmgfw.efi", efi) }
            try g.write(
                "/EFI/Boot/bootx64.efi",
                w.states.contains(.staleUefiFallback) ? efi + Array("an older boot loader".utf8) : efi)
            let bcd = "\(work)/BCD"
            try HiveContent(rootName: "ROOT", fileName: "\\EFI\\Microsoft\\Boot\\BCD").write(to: bcd)
            try g.upload(bcd, to: "/EFI/Microsoft/Boot/BCD")
            try g.umountAll()
            ntfs = dev + "2"
            mounted = Array("DMIO:ID:".utf8) + WindowsGUID.bytes(partGUID)!
        }
        try g.mkfs("ntfs", ntfs, label: "Windows")
        try g.mount(ntfs, at: "/")
        for dir in [
            "/Windows/System32/config", "/Windows/System32/drivers", "/Windows/inf", "/Program Files",
            "/Users/Administrator", "/ProgramData",
        ] {
            try g.mkdirP(dir)
        }
        try g.write("/Windows/System32/cmd.exe", MinimalPE.bytes(machine: w.arch == .x86_64 ? .amd64 : .i386))
        for (path, bytes) in w.stateFiles.sorted(by: { $0.key < $1.key }) {
            try g.mkdirP(FilePath(path).removingLastComponent().string)
            try g.write(path, bytes)
        }
        if w.firmware == .bios && !w.states.contains(.bootOnOtherDisk) {
            try g.write("/bootmgr", Array("phony bootmgr".utf8))
            try g.mkdirP("/Boot")
            let bcd = "\(work)/BCD"
            try HiveContent(rootName: "ROOT", fileName: "\\Boot\\BCD").write(to: bcd)
            try g.upload(bcd, to: "/Boot/BCD")
        }
        let system = "\(work)/SYSTEM"
        try w.writeSystemHive(to: system, mountedDevice: mounted)
        switch w.damage {
        case .truncateSystemHive(let n)?:
            guard truncate(system, off_t(n)) == 0 else { throw POSIXError(.EIO) }
        case .dirtySystemHive?, .dirtySystemHiveWithoutLogs?:
            try makeDirty(system, withLogs: w.damage == .dirtySystemHive, g: g)
        case .hibernated?:
            try g.write("/hiberfil.sys", Array("HIBR".utf8) + [UInt8](repeating: 0, count: 65532))
        default:
            break
        }
        try w.softwareHive().write(to: "\(work)/SOFTWARE")
        try w.samHive().write(to: "\(work)/SAM")
        for name in ["SECURITY", "DEFAULT"] {
            try HiveContent(rootName: "ROOT", fileName: "\\SystemRoot\\System32\\Config\\\(name)").write(
                to: "\(work)/\(name)")
        }
        for name in ["SYSTEM", "SOFTWARE", "SAM", "SECURITY", "DEFAULT"] {
            try g.upload("\(work)/\(name)", to: "/Windows/System32/config/\(name)")
        }
        try g.umountAll()
        if w.damage == .bitLockerSystemVolume { try writeBitLockerHeader(g, partition: ntfs) }
    }

    /// The SYSTEM hive at `path` made dirty as Windows leaves it mid-write: the
    /// primary keeps the old content and SYSTEM.LOG1 (new format) the write.
    static func makeDirty(_ path: String, withLogs: Bool, g: Guestfs) throws {
        let after = path + ".after"
        let hive = try Hive(path: path, writable: true)
        try hive.setValue(
            of: try hive.ensureNode(at: "ControlSet001\\Control\\CrashControl"),
            HiveValue(name: "CrashDumpEnabled", value: .dword(3)))
        try hive.setValue(
            of: try hive.ensureNode(at: "ControlSet001\\Services\\RemedyLogged"),
            HiveValue(name: "Start", value: .dword(3)))
        try hive.commit(to: after)
        hive.close()
        let before = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let (primary, logs) = DirtyHive.newFormat([before, [UInt8](try Data(contentsOf: URL(fileURLWithPath: after)))])
        try Data(primary).write(to: URL(fileURLWithPath: path))
        guard withLogs else { return }
        try g.write("/Windows/System32/config/SYSTEM.LOG1", logs[0].bytes)
        try g.write("/Windows/System32/config/SYSTEM.LOG2", [])
    }

    /// A BitLocker volume header, as blkid recognises it: the -FVE-FS- boot
    /// sector signature and three FVE metadata blocks it points to.
    static func writeBitLockerHeader(_ g: Guestfs, partition: String) throws {
        var boot = [UInt8](repeating: 0, count: 512)
        boot.replaceSubrange(0..<11, with: [0xEB, 0x58, 0x90] + Array("-FVE-FS-".utf8))
        boot[11] = 0x00
        boot[12] = 0x02
        boot[13] = 0x08
        for i in 0..<16 { boot[160 + i] = UInt8(0xB0 + i) }
        let metadata: [UInt64] = [0x10000, 0x20000, 0x30000]
        for (i, off) in metadata.enumerated() {
            for b in 0..<8 { boot[176 + i * 8 + b] = UInt8(truncatingIfNeeded: off >> (8 * UInt64(b))) }
        }
        boot[510] = 0x55
        boot[511] = 0xAA
        try g.pwriteDevice(partition, boot, offset: 0)
        for off in metadata {
            try g.pwriteDevice(partition, Array("-FVE-FS-".utf8) + [64, 0, 2, 0], offset: Int64(off))
        }
    }

    static func buildDataDisk(on dev: String, g: Guestfs) throws {
        try g.partInit(dev, type: "mbr")
        try g.partAdd(dev, startSector: 2048, endSector: -1)
        try g.mkfs("ntfs", dev + "1", label: "Data")
        try g.mount(dev + "1", at: "/")
        try g.mkdirP("/Backups/2024")
        try g.write("/Backups/readme.txt", Array("not an operating system\r\n".utf8))
        try g.umountAll()
    }

    static func buildLinux(on dev: String, g: Guestfs) throws {
        try g.partInit(dev, type: "mbr")
        try g.partAdd(dev, startSector: 2048, endSector: -1)
        try g.mkfs("ext4", dev + "1")
        try g.mount(dev + "1", at: "/")
        for d in ["/etc", "/bin", "/sbin", "/usr/bin", "/usr/lib", "/var", "/root", "/home"] { try g.mkdirP(d) }
        try g.write(
            "/etc/os-release",
            Array(
                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n"
                    .utf8))
        try g.write("/etc/debian_version", Array("12.5\n".utf8))
        try g.write("/etc/fstab", Array("/dev/sda1 / ext4 defaults 0 1\n".utf8))
        try g.write("/etc/hostname", Array("phony-linux\n".utf8))
        try g.umountAll()
    }

}
