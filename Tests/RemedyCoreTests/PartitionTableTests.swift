import Foundation
import RemedyFixtures
import Testing

@testable import RemedyCore

/// The phony images' partition tables are written as bytes (no parted in the appliance); util-linux's sfdisk and
/// gdisk's sgdisk, independent readers, must see them as parted made them, and remedy's own reading of the first
/// sectors must name them as parted does.
@Suite final class PartitionTableTests {
    let dir: String

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    init() throws {
        dir = NSTemporaryDirectory() + "/remedy-ptable-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    /// A sparse disk of `mib` MiB with `writes` (bytes at offsets) in it.
    func disk(_ name: String, mib: Int, _ writes: [(bytes: [UInt8], offset: Int64)]) throws -> String {
        let path = dir + "/" + name
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? h.close() }
        try h.truncate(atOffset: UInt64(mib) << 20)
        for w in writes {
            try h.seek(toOffset: UInt64(w.offset))
            try h.write(contentsOf: Data(w.bytes))
        }
        return path
    }

    func sfdisk(_ path: String) throws -> [String: Any] {
        let doc =
            try JSONSerialization.jsonObject(with: Data(try runTool("/usr/sbin/sfdisk", ["--json", path]).utf8))
            as? [String: Any]
        return try #require(doc?["partitiontable"] as? [String: Any])
    }

    @Test func anMBRIsReadBySfdiskAsParted() throws {
        let sectors: Int64 = 256 * 2048
        let mbr = PartitionTables.mbr(
            [
                .init(start: 2048, end: sectors - 32 * 2048 - 1, bootable: true),
                .init(start: sectors - 32 * 2048, end: sectors - 1),
            ],
            signature: [0x52, 0x4D, 0x44, 0x33])
        let path = try disk("mbr.raw", mib: 256, [(mbr, 0)])
        let t = try sfdisk(path)
        #expect(t["label"] as? String == "dos")
        #expect(t["id"] as? String == "0x33444d52")
        let parts = try #require(t["partitions"] as? [[String: Any]])
        #expect(parts.map { $0["start"] as? Int } == [2048, Int(sectors - 32 * 2048)])
        #expect(parts.map { $0["size"] as? Int } == [Int(sectors - 33 * 2048), 32 * 2048])
        #expect(parts.map { $0["type"] as? String } == ["7", "7"])
        #expect(parts.map { $0["bootable"] as? Bool } == [true, nil])
        #expect(WindowsInspector.partitionTable(firstSectors: mbr + [UInt8](repeating: 0, count: 512)) == .msdos)
    }

    @Test func aGPTIsValidForSgdiskAndReadBySfdiskAsParted() throws {
        let sectors: Int64 = 300 * 2048
        let esp = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", data = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
        let table = PartitionTables.gpt(
            [
                .init(
                    start: 2048, end: 2048 + 32 * 2048 - 1, type: esp, guid: "6E6F6E79-6573-7000-0000-000000000007",
                    name: "EFI system partition"),
                .init(
                    start: 2048 + 32 * 2048, end: sectors - 34, type: data,
                    guid: "6E6F6E79-7265-6D65-6479-000000000007", name: "Basic data partition"),
            ], sectors: sectors, diskGUID: "6E6F6E79-6469-736B-0000-000000000007")
        let path = try disk("gpt.raw", mib: 300, [(table.primary, 0), (table.backup, table.backupOffset)])
        // sgdisk checks both headers, their CRCs and the entries' CRC.
        let verify = try runTool("/usr/sbin/sgdisk", ["--verify", path])
        #expect(verify.contains("No problems found"), "\(verify)")
        let t = try sfdisk(path)
        #expect(t["label"] as? String == "gpt")
        #expect(t["id"] as? String == "6E6F6E79-6469-736B-0000-000000000007")
        #expect(t["lastlba"] as? Int == Int(sectors - 34))
        let parts = try #require(t["partitions"] as? [[String: Any]])
        #expect(parts.map { $0["start"] as? Int } == [2048, 2048 + 32 * 2048])
        #expect(parts.map { $0["size"] as? Int } == [32 * 2048, Int(sectors - 34 - 2048 - 32 * 2048 + 1)])
        #expect(parts.map { $0["type"] as? String } == [esp, data])
        #expect(
            parts.map { $0["uuid"] as? String } == [
                "6E6F6E79-6573-7000-0000-000000000007", "6E6F6E79-7265-6D65-6479-000000000007",
            ])
        #expect(parts.map { $0["name"] as? String } == ["EFI system partition", "Basic data partition"])
        #expect(WindowsInspector.partitionTable(firstSectors: Array(table.primary.prefix(1024))) == .gpt)
        // A GPT whose primary header is gone is still one: the protective MBR entry says so.
        var damaged = Array(table.primary.prefix(1024))
        damaged.replaceSubrange(512..<520, with: [UInt8](repeating: 0, count: 8))
        #expect(WindowsInspector.partitionTable(firstSectors: damaged) == .gpt)
        #expect(WindowsInspector.partitionTable(firstSectors: [UInt8](repeating: 0, count: 1024)) == nil)
    }

    /// cmd.exe's architecture from its PE header, as libguestfs's `file_architecture` names it (file(1) on the
    /// host, an independent reader, agrees about the same bytes).
    @Test func thePEMachineFieldNamesTheArchitecture() throws {
        for (machine, arch, fileSays) in [
            (MinimalPE.Machine.amd64, "x86_64", "x86-64"), (.i386, "i386", "Intel 80386"),
        ] {
            let bytes = MinimalPE.bytes(machine: machine)
            #expect(WindowsInspector.peArchitecture(bytes)?.rawValue == arch)
            let path = try disk("cmd-\(arch).exe", mib: 0, [(bytes, 0)])
            #expect(try runTool("/usr/bin/file", ["-b", path]).contains(fileSays))
        }
        #expect(
            WindowsInspector.peArchitecture(Array("MZ not a PE file".utf8) + [UInt8](repeating: 0, count: 100)) == nil)
    }

    /// With 27 or more disks in one appliance (a batch with a large `--per-appliance`), `/dev/sdb` is a prefix of
    /// `/dev/sdba`: each image must see only its own partitions.
    @Test func aDiskSeesOnlyItsOwnPartitions() {
        let all = [
            "/dev/sda1", "/dev/sdb1", "/dev/sdb2", "/dev/sdb10", "/dev/sdba1", "/dev/sdbb2", "/dev/sdc1", "/dev/sdb",
        ]
        #expect(WindowsInspector.partitions(of: "/dev/sdb", in: all) == ["/dev/sdb1", "/dev/sdb2", "/dev/sdb10"])
        #expect(WindowsInspector.partitions(of: "/dev/sdba", in: all) == ["/dev/sdba1"])
        #expect(WindowsInspector.partitions(of: "/dev/sdd", in: all).isEmpty)
    }
}
