/// Reads keys and values of a clean hive where they are, cell by cell, without holding the whole file: the planner
/// needs a few subtrees of a SOFTWARE hive of 60 MB or more, and copying the whole file out of the appliance costs
/// seconds. Bytes come from `source` (an offset and a length of the hive file; remedy reads them from the image
/// through the appliance) in aligned chunks, each read once.
///
/// The layout (the regf format as Windows writes it): cell offsets are relative to the first hive bin (file offset
/// 4096); a cell starts with its size as a signed 32-bit number, negative while the cell is in use. A key is an
/// `nk` cell; its subkeys are listed by an `lf`, `lh` or `li` cell, or an `ri` cell of such lists; its values by a
/// cell of `vk` offsets; a value's data sits in its `vk` cell (up to 4 bytes), in a data cell, or, past 16,344 bytes
/// in hives of format 1.4 and later, in segments listed by a `db` cell.
///
/// Every number read is untrusted: each cell must lie inside the hive bins and be in use, each count must fit the
/// cell that holds it, and what it returns is what libhivex returns on the same hive (the tests compare the two on
/// real hives). A hive Windows left dirty must be recovered from its logs first; this reader does not look at logs.
public final class HiveCells {
    /// A key: the file offset of its `nk` cell.
    public struct Key: Hashable, Sendable {
        public let offset: Int
    }

    /// What a key can list, as libhivex bounds it.
    public static let maxSubkeys = 70_000
    public static let maxValues = 110_000
    /// The largest value data read (libhivex's bound).
    public static let maxValueBytes = 8 << 20
    /// Bytes fetched from the source at a time.
    public static let chunkSize = 64 << 10

    public let base: BaseBlock
    /// The hive file's size.
    public let fileSize: Int
    /// Bytes the source has been asked for, for the benchmark and the tests.
    public private(set) var bytesRead = 0
    public private(set) var reads = 0
    private let source: (_ offset: Int, _ count: Int) throws -> [UInt8]
    private var chunks: [Int: [UInt8]] = [:]
    private let end: Int

    /// `source(offset, count)` returns `count` bytes of the hive file from `offset` (fewer only at its end); `first`,
    /// when the caller has it, is the file's first chunk (its first `chunkSize` bytes, or all of a smaller file).
    public init(
        fileSize: Int, first: [UInt8]? = nil, source: @escaping (_ offset: Int, _ count: Int) throws -> [UInt8]
    ) throws {
        guard fileSize >= BaseBlock.firstBin, fileSize <= RegistryLimits.maxHiveFile else {
            throw RegfError("the hive is \(fileSize) bytes: not a registry hive remedy reads")
        }
        self.fileSize = fileSize
        self.source = source
        let given = first
        let first = try given ?? source(0, min(Self.chunkSize, fileSize))
        guard first.count == min(Self.chunkSize, fileSize) else { throw RegfError("the hive file is cut short") }
        base = try BaseBlock(Array(first.prefix(BaseBlock.size)))
        guard !base.isDirty else {
            throw RegfError("the hive is dirty: it must be recovered from its logs before it is read")
        }
        let bins = Int(base.hiveBinsSize)
        guard bins > 0, bins % 4096 == 0, BaseBlock.firstBin + bins <= fileSize else {
            throw RegfError("the hive bins size \(bins) does not fit the \(fileSize)-byte file")
        }
        end = BaseBlock.firstBin + bins
        chunks[0] = first
        if given == nil {
            bytesRead = first.count
            reads = 1
        }
    }

    // MARK: - Bytes

    /// `count` bytes at file offset `offset`, inside the hive bins.
    private func bytes(_ offset: Int, _ count: Int) throws -> [UInt8] {
        guard offset >= BaseBlock.firstBin, count >= 0, offset <= end - count else {
            throw RegfError("a cell reaches outside the hive bins (offset \(offset), \(count) bytes)")
        }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var at = offset
        while at < offset + count {
            let start = at - at % Self.chunkSize
            let chunk = try chunk(start)
            let from = at - start
            let take = min(chunk.count - from, offset + count - at)
            guard take > 0 else { throw RegfError("the hive file ends at \(start + chunk.count), before \(at)") }
            out += chunk[from..<from + take]
            at += take
        }
        return out
    }

    private func chunk(_ start: Int) throws -> [UInt8] {
        if let c = chunks[start] { return c }
        let want = min(Self.chunkSize, fileSize - start)
        let got = try source(start, want)
        guard got.count == want else {
            throw RegfError("read \(got.count) of \(want) bytes of the hive at \(start)")
        }
        bytesRead += got.count
        reads += 1
        chunks[start] = got
        return got
    }

    /// The data of the cell at `relative` (an offset as the hive stores it, from the first hive bin), without its
    /// size field. The cell must be in use.
    private func cell(_ relative: UInt32) throws -> [UInt8] {
        let offset = BaseBlock.firstBin + Int(relative)
        guard relative % 4 == 0, relative != 0xFFFF_FFFF else {
            throw RegfError("a cell offset is not aligned (\(relative))")
        }
        let head = try bytes(offset, 4)
        let size = Int32(bitPattern: head.u32(0)!)
        guard size < 0 else { throw RegfError("the cell at \(relative) is not in use") }
        let length = Int(-Int64(size))
        guard length >= 8 else { throw RegfError("the cell at \(relative) is \(length) bytes long") }
        return try bytes(offset + 4, length - 4)
    }

    private func signature(_ c: [UInt8]) -> String {
        c.count >= 2 ? String(decoding: c[0..<2], as: UTF8.self) : ""
    }

    private func u16(_ c: [UInt8], _ o: Int) throws -> Int {
        guard o >= 0, o + 2 <= c.count else { throw RegfError("a record is cut short") }
        return Int(c[o]) | Int(c[o + 1]) << 8
    }

    private func u32(_ c: [UInt8], _ o: Int) throws -> UInt32 {
        guard let v = c.u32(o) else { throw RegfError("a record is cut short") }
        return v
    }

    private func nk(_ key: Key) throws -> [UInt8] {
        let c = try cell(UInt32(key.offset - BaseBlock.firstBin))
        guard signature(c) == "nk", c.count >= 76 else {
            throw RegfError("the cell at \(key.offset - BaseBlock.firstBin) is not a key")
        }
        return c
    }

    /// A name as stored: Latin-1 when `compressed`, UTF-16LE otherwise.
    private func name(_ c: [UInt8], at o: Int, length: Int, compressed: Bool) throws -> String {
        guard o + length <= c.count else { throw RegfError("a name runs past its cell") }
        let raw = c[o..<o + length]
        if compressed { return String(raw.map { Character(Unicode.Scalar($0)) }) }
        var units: [UInt16] = []
        units.reserveCapacity(length / 2)
        var i = raw.startIndex
        while i + 1 < raw.endIndex {
            units.append(UInt16(raw[i]) | UInt16(raw[i + 1]) << 8)
            i += 2
        }
        return String(decoding: units, as: UTF16.self)
    }

    // MARK: - Keys

    public func root() throws -> Key {
        let key = Key(offset: BaseBlock.firstBin + Int(base.rootCellOffset))
        _ = try nk(key)
        return key
    }

    public func name(of key: Key) throws -> String {
        let c = try nk(key)
        return try name(c, at: 76, length: try u16(c, 72), compressed: try u16(c, 2) & 0x20 != 0)
    }

    /// The subkeys, in stored order (sorted as Windows sorts them).
    public func children(of key: Key) throws -> [Key] {
        let c = try nk(key)
        let count = Int(try u32(c, 20))
        guard count > 0 else { return [] }
        guard count <= Self.maxSubkeys else { throw RegfError("a key claims \(count) subkeys") }
        var out: [Key] = []
        out.reserveCapacity(count)
        try collect(try u32(c, 28), into: &out, limit: count, nested: false)
        guard out.count == count else {
            throw RegfError("a key claims \(count) subkeys and lists \(out.count)")
        }
        return out
    }

    private func collect(_ list: UInt32, into out: inout [Key], limit: Int, nested: Bool) throws {
        let c = try cell(list)
        let n = try u16(c, 2)
        switch signature(c) {
        case "lf", "lh":
            guard 4 + 8 * n <= c.count else { throw RegfError("a subkey list runs past its cell") }
            for i in 0..<n { out.append(Key(offset: BaseBlock.firstBin + Int(try u32(c, 4 + 8 * i)))) }
        case "li":
            guard 4 + 4 * n <= c.count else { throw RegfError("a subkey list runs past its cell") }
            for i in 0..<n { out.append(Key(offset: BaseBlock.firstBin + Int(try u32(c, 4 + 4 * i)))) }
        case "ri" where !nested:
            guard 4 + 4 * n <= c.count else { throw RegfError("a subkey index runs past its cell") }
            for i in 0..<n {
                try collect(try u32(c, 4 + 4 * i), into: &out, limit: limit, nested: true)
                if out.count > limit { break }
            }
        default:
            throw RegfError("the cell at \(list) is not a subkey list")
        }
        guard out.count <= limit else { throw RegfError("a key lists more subkeys than it claims (\(limit))") }
    }

    /// The subkey with this name, compared as Windows compares (case-insensitively), or nil.
    public func child(of key: Key, named wanted: String) throws -> Key? {
        let folded = wanted.uppercased()
        for child in try children(of: key) where try name(of: child).uppercased() == folded { return child }
        return nil
    }

    /// Follows a backslash-separated path from the root.
    public func key(at path: String) throws -> Key? {
        var key = try root()
        for part in path.split(separator: "\\") where !part.isEmpty {
            guard let next = try child(of: key, named: String(part)) else { return nil }
            key = next
        }
        return key
    }

    // MARK: - Values

    /// The values of a key as stored (name, type, bytes), in stored order.
    public func values(of key: Key) throws -> [RawHiveValue] {
        let c = try nk(key)
        let count = Int(try u32(c, 36))
        guard count > 0 else { return [] }
        guard count <= Self.maxValues else { throw RegfError("a key claims \(count) values") }
        let list = try cell(try u32(c, 40))
        guard 4 * count <= list.count else { throw RegfError("a value list runs past its cell") }
        return try (0..<count).map { try value(try u32(list, 4 * $0)) }
    }

    private func value(_ offset: UInt32) throws -> RawHiveValue {
        let vk = try cell(offset)
        guard signature(vk) == "vk", vk.count >= 20 else { throw RegfError("the cell at \(offset) is not a value") }
        let name = try name(vk, at: 20, length: try u16(vk, 2), compressed: try u16(vk, 16) & 0x1 != 0)
        let declared = try u32(vk, 4)
        let type = try u32(vk, 12)
        let length = Int(declared & 0x7FFF_FFFF)
        if declared & 0x8000_0000 != 0 {
            guard length <= 4 else { throw RegfError("the value \(name) declares \(length) bytes inline") }
            return RawHiveValue(name: name, type: type, data: Array(vk[8..<8 + length]))
        }
        guard length <= Self.maxValueBytes else { throw RegfError("the value \(name) declares \(length) bytes") }
        let data = try cell(try u32(vk, 8))
        if length <= data.count { return RawHiveValue(name: name, type: type, data: Array(data[0..<length])) }
        guard signature(data) == "db", data.count >= 8 else {
            throw RegfError("the value \(name) declares \(length) bytes, more than its cell holds")
        }
        // Big data: segments, each a cell whose last 4 bytes are not data.
        let segments = try u16(data, 2)
        let list = try cell(try u32(data, 4))
        guard 4 * segments <= list.count else { throw RegfError("the value \(name)'s segment list is cut short") }
        var out: [UInt8] = []
        out.reserveCapacity(length)
        for i in 0..<segments where out.count < length {
            let segment = try cell(try u32(list, 4 * i))
            let take = min(max(0, segment.count - 4), length - out.count)
            out += segment[0..<take]
        }
        return RawHiveValue(name: name, type: type, data: out)
    }
}
