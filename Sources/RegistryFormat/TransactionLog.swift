/// A registry transaction log (`HIVE.LOG`, `.LOG1`, `.LOG2`), either format.
public struct TransactionLog: Sendable {
    public enum Format: String, Sendable { case old, new }

    /// One new-format log entry (`HvLE`): pages to write, and the sequence and bins size they bring.
    public struct Entry: Sendable, Equatable {
        public var sequence: UInt32
        public var hiveBinsSize: UInt32
        public var flags: UInt32
        /// (offset from the first hive bin, page bytes)
        public var pages: [(offset: UInt32, data: [UInt8])]

        public static func == (a: Entry, b: Entry) -> Bool {
            a.sequence == b.sequence && a.hiveBinsSize == b.hiveBinsSize && a.flags == b.flags
                && a.pages.map(\.offset) == b.pages.map(\.offset) && a.pages.map(\.data) == b.pages.map(\.data)
        }
    }

    public var name: String
    public var base: BaseBlock
    /// The first 512 bytes: the log's copy of the hive's base block.
    public var baseBytes: [UInt8]
    public var format: Format
    /// New format: the entries up to the first invalid one.
    public var entries: [Entry] = []
    /// Why reading entries stopped early, when it did.
    public var stoppedBecause: String?
    /// Old format: 512-byte pages and where they go (offset from the first hive bin).
    public var dirtyPages: [(offset: Int, data: ArraySlice<UInt8>)] = []

    /// A log is usable when its base block is a log's, intact (checksum) and
    /// complete (both sequence numbers equal).
    public var isValid: Bool { base.checksumValid && base.primarySequence == base.secondarySequence }

    public init(name: String, bytes: [UInt8]) throws {
        self.name = name
        guard bytes.count <= RegistryLimits.maxLogFile else {
            throw RegfError(
                "\(name) is \(bytes.count) bytes, more than a transaction log can be (\(RegistryLimits.maxLogFile) bytes)"
            )
        }
        base = try BaseBlock(bytes)
        baseBytes = Array(bytes[0..<512])
        switch base.fileType {
        case 1, 2:
            format = .old
            try readDirtyVector(bytes)
        case 6:
            format = .new
            readEntries(bytes)
        default:
            throw RegfError("\(name) has file type \(base.fileType): not a transaction log")
        }
    }

    mutating func readDirtyVector(_ bytes: [UInt8]) throws {
        guard bytes.matches("DIRT", at: 512) else { throw RegfError("\(name): old-format log without its DIRT vector") }
        guard Int(base.hiveBinsSize) <= RegistryLimits.maxHiveBinsSize else {
            throw RegfError(
                "\(name): hive bins size \(base.hiveBinsSize) is more than a hive can be (\(RegistryLimits.maxHiveBinsSize) bytes)"
            )
        }
        let bits = Int(base.hiveBinsSize / 512)
        let bitmapBytes = (bits + 7) / 8
        guard 516 + bitmapBytes <= bytes.count else {
            throw RegfError("\(name): the dirty vector runs past the end of the file")
        }
        var page = (516 + bitmapBytes + 511) / 512 * 512
        for bit in 0..<bits where bytes[516 + bit / 8] & (1 << (bit % 8)) != 0 {
            guard page + 512 <= bytes.count else {
                throw RegfError("\(name): dirty page \(dirtyPages.count + 1) is missing (the log is truncated)")
            }
            dirtyPages.append((bit * 512, bytes[page..<page + 512]))
            page += 512
        }
    }

    mutating func readEntries(_ bytes: [UInt8]) {
        var at = 512
        while at + 40 <= bytes.count {
            guard bytes.matches("HvLE", at: at) else {
                if bytes[at..<min(at + 4, bytes.count)].contains(where: { $0 != 0 }) {
                    stoppedBecause = "no HvLE signature at offset \(at)"
                }
                return
            }
            let size = Int(bytes.u32(at + 4)!)
            let count = Int(bytes.u32(at + 20)!)
            guard size >= 40, size % 512 == 0, at + size <= bytes.count else {
                stoppedBecause = "the entry at offset \(at) has an impossible size \(size)"
                return
            }
            guard count <= (size - 40) / 8 else {
                stoppedBecause = "the entry at offset \(at) claims \(count) pages"
                return
            }
            let entry = Array(bytes[at..<at + size])
            guard Marvin32.hash(entry[40...]) == entry.u64(24)!, Marvin32.hash(entry[0..<32]) == entry.u64(32)! else {
                stoppedBecause = "the entry at offset \(at) fails its Marvin32 hashes"
                return
            }
            let binsSize = entry.u32(16)!
            guard binsSize % 4096 == 0, binsSize > 0, Int(binsSize) <= RegistryLimits.maxHiveBinsSize else {
                stoppedBecause = "the entry at offset \(at) has an invalid hive bins size \(binsSize)"
                return
            }
            var pages: [(UInt32, [UInt8])] = []
            var data = 40 + count * 8
            for i in 0..<count {
                let offset = entry.u32(40 + i * 8)!
                let length = Int(entry.u32(44 + i * 8)!)
                guard length % 512 == 0, data + length <= size, UInt64(offset) + UInt64(length) <= UInt64(binsSize)
                else {
                    stoppedBecause = "page \(i) of the entry at offset \(at) does not fit"
                    return
                }
                pages.append((offset, Array(entry[data..<data + length])))
                data += length
            }
            entries.append(Entry(sequence: entry.u32(12)!, hiveBinsSize: binsSize, flags: entry.u32(8)!, pages: pages))
            at += size
        }
    }
}
