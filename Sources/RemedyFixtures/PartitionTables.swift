import Foundation
import RegistryFormat

/// MBR and GPT partition tables as bytes, written into a phony disk with one `pwrite_device` each instead of a
/// parted run per step (each parted start costs 1-2 s in an appliance under TCG, and a phony disk took four to six).
/// The layouts are the ones parted made before: MBR partitions from sector 2048; GPT with a protective MBR, the
/// primary header at LBA 1 and 128 entries of 128 bytes from LBA 2, their copy and the backup header at the end.
public enum PartitionTables {
    public struct MBRPartition: Sendable {
        public var start: Int64  // first sector
        public var end: Int64  // last sector (inclusive)
        public var type: UInt8
        public var bootable: Bool
        public init(start: Int64, end: Int64, type: UInt8 = 0x07, bootable: Bool = false) {
            self.start = start
            self.end = end
            self.type = type
            self.bootable = bootable
        }
    }

    public struct GPTPartition: Sendable {
        public var start: Int64
        public var end: Int64
        public var type: String  // partition type GUID
        public var guid: String  // unique partition GUID
        public var name: String
        public init(start: Int64, end: Int64, type: String, guid: String, name: String) {
            self.start = start
            self.end = end
            self.type = type
            self.guid = guid
            self.name = name
        }
    }

    /// The 512-byte master boot record: no boot code, the disk signature at 440, up to four entries, 0x55AA.
    public static func mbr(_ partitions: [MBRPartition], signature: [UInt8]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 512)
        b.replaceSubrange(440..<444, with: signature.prefix(4))
        for (i, p) in partitions.prefix(4).enumerated() {
            entry(
                &b, at: 446 + 16 * i, bootable: p.bootable, type: p.type, start: p.start, sectors: p.end - p.start + 1)
        }
        b[510] = 0x55
        b[511] = 0xAA
        return b
    }

    /// A GPT for a disk of `sectors` 512-byte sectors: the bytes from LBA 0 to 33 (protective MBR, header,
    /// entries) and, to be written at `backupOffset`, the entries' copy and the backup header (the last 33 sectors).
    public static func gpt(
        _ partitions: [GPTPartition], sectors: Int64, diskGUID: String
    ) -> (primary: [UInt8], backup: [UInt8], backupOffset: Int64) {
        let last = sectors - 1
        var entries = [UInt8](repeating: 0, count: 128 * 128)
        for (i, p) in partitions.enumerated() {
            let o = 128 * i
            entries.replaceSubrange(o..<o + 16, with: WindowsGUID.bytes(p.type) ?? [UInt8](repeating: 0, count: 16))
            entries.replaceSubrange(
                o + 16..<o + 32, with: WindowsGUID.bytes(p.guid) ?? [UInt8](repeating: 0, count: 16))
            put64(&entries, o + 32, UInt64(p.start))
            put64(&entries, o + 40, UInt64(p.end))
            for (k, unit) in p.name.utf16.prefix(36).enumerated() {
                entries[o + 56 + 2 * k] = UInt8(unit & 0xFF)
                entries[o + 57 + 2 * k] = UInt8(unit >> 8)
            }
        }
        let entriesCRC = crc32(entries)
        func header(current: Int64, backup: Int64, entriesLBA: Int64) -> [UInt8] {
            var h = [UInt8](repeating: 0, count: 512)
            h.replaceSubrange(0..<8, with: Array("EFI PART".utf8))
            put32(&h, 8, 0x0001_0000)
            put32(&h, 12, 92)
            put64(&h, 24, UInt64(current))
            put64(&h, 32, UInt64(backup))
            put64(&h, 40, 34)
            put64(&h, 48, UInt64(last - 33))
            h.replaceSubrange(56..<72, with: WindowsGUID.bytes(diskGUID) ?? [UInt8](repeating: 0, count: 16))
            put64(&h, 72, UInt64(entriesLBA))
            put32(&h, 80, 128)
            put32(&h, 84, 128)
            put32(&h, 88, entriesCRC)
            put32(&h, 16, crc32(h[0..<92]))
            return h
        }
        var protective = [UInt8](repeating: 0, count: 512)
        entry(&protective, at: 446, bootable: false, type: 0xEE, start: 1, sectors: min(last, 0xFFFF_FFFF))
        protective[510] = 0x55
        protective[511] = 0xAA
        let primary = protective + header(current: 1, backup: last, entriesLBA: 2) + entries
        let backup = entries + header(current: last, backup: 1, entriesLBA: last - 32)
        return (primary, backup, (last - 32) * 512)
    }

    /// An MBR partition entry (CHS fields as for a disk beyond CHS addressing).
    static func entry(_ b: inout [UInt8], at o: Int, bootable: Bool, type: UInt8, start: Int64, sectors: Int64) {
        b[o] = bootable ? 0x80 : 0
        b.replaceSubrange(o + 1..<o + 4, with: [0xFE, 0xFF, 0xFF])
        b[o + 4] = type
        b.replaceSubrange(o + 5..<o + 8, with: [0xFE, 0xFF, 0xFF])
        put32(&b, o + 8, UInt32(truncatingIfNeeded: start))
        put32(&b, o + 12, UInt32(truncatingIfNeeded: min(sectors, 0xFFFF_FFFF)))
    }

    static func put32(_ b: inout [UInt8], _ o: Int, _ v: UInt32) {
        for i in 0..<4 { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
    }

    static func put64(_ b: inout [UInt8], _ o: Int, _ v: UInt64) {
        for i in 0..<8 { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    /// CRC-32 (IEEE 802.3, reflected, as GPT uses it).
    public static func crc32<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }
}
