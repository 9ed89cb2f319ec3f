/// What a hive file holds and whether Windows would accept it as it is.
public struct HiveCheck: Sendable {
    public var base: BaseBlock
    public var fileSize: Int
    /// Hive bins walked from the first one.
    public var bins: Int
    /// Structural problems found (none for a sound hive).
    public var problems: [String]
    public var isDirty: Bool { base.isDirty }

    /// Checks the base block and walks the hive bins (signature, offset,
    /// size) without trusting any field.
    public init(_ bytes: [UInt8]) throws {
        base = try BaseBlock(bytes)
        fileSize = bytes.count
        problems = []
        bins = 0
        if base.fileType != 0 { problems.append("file type \(base.fileType) is not a primary hive") }
        if !base.checksumValid {
            problems.append(
                "base block checksum is \(hex(base.storedChecksum)), its content calls for \(hex(base.expectedChecksum))"
            )
        }
        if base.majorVersion != 1 || !(2...6).contains(base.minorVersion) {
            problems.append("format version \(base.majorVersion).\(base.minorVersion) is not 1.2-1.6")
        }
        let end = BaseBlock.firstBin + Int(base.hiveBinsSize)
        if base.hiveBinsSize % 4096 != 0 || base.hiveBinsSize == 0 {
            problems.append("hive bins data size \(base.hiveBinsSize) is not a positive multiple of 4096")
            return
        }
        if end > bytes.count {
            problems.append(
                "hive bins data (\(base.hiveBinsSize) bytes) runs past the end of the file (\(bytes.count) bytes): truncated"
            )
            return
        }
        var at = BaseBlock.firstBin
        while at < end {
            guard bytes.matches("hbin", at: at) else {
                problems.append("no hbin signature at file offset \(at)")
                return
            }
            let offset = Int(bytes.u32(at + 4)!)
            let size = Int(bytes.u32(at + 8)!)
            if offset != at - BaseBlock.firstBin {
                problems.append("the hive bin at file offset \(at) says it is at \(offset)")
            }
            guard size >= 4096, size % 4096 == 0, at + size <= end else {
                problems.append("the hive bin at file offset \(at) has an impossible size \(size)")
                return
            }
            bins += 1
            at += size
        }
        if Int(base.rootCellOffset) + 4 > Int(base.hiveBinsSize) {
            problems.append("the root cell offset \(base.rootCellOffset) is outside the hive bins")
        }
    }
}

/// `0x0000ABCD`.
func hex(_ v: UInt32) -> String {
    let digits = String(v, radix: 16, uppercase: true)
    return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
}

/// Replays transaction logs into a dirty hive, as Windows does when it loads
/// one, following the published registry file format specification.
public enum HiveRecovery {
    public struct Result: Sendable {
        /// The recovered hive: clean, checksum by Windows' rule.
        public var bytes: [UInt8]
        /// One line per log used, e.g. `SYSTEM.LOG1: 3 entries (sequence 41-43)`.
        public var applied: [String]
        /// The sequence number the recovered hive carries.
        public var sequence: UInt32
        /// The highest sequence number any log holds (a rewritten hive must go above it).
        public var highestLogSequence: UInt32
    }

    /// Recovers `primary` with `logs` (name, bytes). A clean hive comes back
    /// unchanged. Throws when the hive is dirty and no log can bring it back.
    ///
    /// Memory is bounded by the inputs: a hive larger than ``RegistryLimits/maxHiveFile`` is refused, and a log may
    /// grow the hive by no more than the bytes the logs hold (new bins are dirty, so their pages are in a log),
    /// checked before anything is allocated: a 1.5 KiB log claiming 1 GiB of hive bins is refused, not obeyed.
    public static func recover(primary: [UInt8], logs: [(name: String, bytes: [UInt8])]) throws -> Result {
        guard primary.count <= RegistryLimits.maxHiveFile else {
            throw RegfError(
                "the hive is \(primary.count) bytes, more than a hive can be (\(RegistryLimits.maxHiveFile) bytes)")
        }
        let base = try BaseBlock(primary)
        var parsed: [TransactionLog] = []
        var rejected: [String] = []
        for (name, bytes) in logs where !bytes.isEmpty {
            do {
                let log = try TransactionLog(name: name, bytes: bytes)
                if log.isValid {
                    parsed.append(log)
                } else {
                    rejected.append("\(name): incomplete or damaged base block")
                }
            } catch let e as RegfError {
                rejected.append(e.message)
            }
        }
        let highest = parsed.flatMap { log in log.entries.map(\.sequence) + [log.base.primarySequence] }.max() ?? 0
        guard base.isDirty else {
            return Result(bytes: primary, applied: [], sequence: base.primarySequence, highestLogSequence: highest)
        }
        let newLogs = parsed.filter { $0.format == .new }
        let oldLogs = parsed.filter { $0.format == .old }
        let why = rejected.isEmpty ? "" : " (" + rejected.joined(separator: "; ") + ")"
        let allowed = allowedBinsSize(primary: primary, logs: parsed.isEmpty ? [] : logs.map(\.bytes.count))
        if !newLogs.isEmpty {
            return try replayNew(primary, base: base, logs: newLogs, highest: highest, why: why, allowed: allowed)
        }
        if !oldLogs.isEmpty {
            return try replayOld(primary, base: base, logs: oldLogs, highest: highest, why: why, allowed: allowed)
        }
        throw RegfError(
            "the hive is dirty (sequence \(base.primarySequence)/\(base.secondarySequence)\(base.checksumValid ? "" : ", bad checksum")) and no usable transaction log was found\(why)"
        )
    }

    /// The largest hive bins size a replay may produce: what the primary holds plus what the logs hold (rounded up
    /// to a 4 KiB bin), never more than a hive can be.
    static func allowedBinsSize(primary: [UInt8], logs: [Int]) -> Int {
        let held = max(0, primary.count - BaseBlock.firstBin) + logs.reduce(0, +)
        return min(RegistryLimits.maxHiveBinsSize, (held + 4095) / 4096 * 4096)
    }

    static func tooLarge(_ what: String, _ size: UInt32, allowed: Int) -> RegfError {
        RegfError(
            "\(what) claims \(size) bytes of hive bins, more than the hive and its logs could hold (\(allowed) bytes): refused"
        )
    }

    static func replayNew(
        _ primary: [UInt8], base: BaseBlock, logs: [TransactionLog], highest: UInt32, why: String, allowed: Int
    ) throws -> Result {
        var out = primary
        if out.count < BaseBlock.size { out += [UInt8](repeating: 0, count: BaseBlock.size - out.count) }
        var start = base
        // LOG1 before LOG2, as Windows reads them; ordered by the sequence their entries start at.
        let ordered = logs.sorted {
            ($0.entries.first?.sequence ?? $0.base.primarySequence, $0.name) < (
                $1.entries.first?.sequence ?? $1.base.primarySequence, $1.name
            )
        }
        if !base.checksumValid {
            // The primary base block is unusable: take the one the latest log carries.
            guard let latest = logs.max(by: { $0.base.primarySequence < $1.base.primarySequence }),
                let source = logBaseBytes(latest)
            else {
                throw RegfError("the base block is damaged and no log carries one\(why)")
            }
            out.replaceSubrange(0..<512, with: source)
            start = try BaseBlock(out)
        }
        var expected = start.primarySequence
        var binsSize = start.hiveBinsSize
        var applied: [String] = []
        var last: UInt32?
        for log in ordered {
            var used: [UInt32] = []
            for entry in log.entries {
                if entry.sequence < expected { continue }  // already in the primary
                if let l = last, entry.sequence != l &+ 1 { break }  // a gap: what follows is not ours
                guard Int(entry.hiveBinsSize) <= allowed else {
                    throw tooLarge("\(log.name) entry \(entry.sequence)", entry.hiveBinsSize, allowed: allowed)
                }
                for page in entry.pages { out.write(page.data[...], at: BaseBlock.firstBin + Int(page.offset)) }
                binsSize = entry.hiveBinsSize
                if entry.flags & 1 != 0 { out[144] |= 1 } else { out[144] &= ~1 }
                last = entry.sequence
                expected = entry.sequence &+ 1
                used.append(entry.sequence)
            }
            if !used.isEmpty {
                applied.append(
                    "\(log.name): \(used.count) entr\(used.count == 1 ? "y" : "ies") (sequence \(used.first!)\(used.count > 1 ? "-\(used.last!)" : ""))"
                        + (log.stoppedBecause.map { "; stopped: \($0)" } ?? ""))
            }
        }
        guard let sequence = last ?? (base.checksumValid ? nil : start.primarySequence) else {
            throw RegfError(
                "the hive is dirty (sequence \(base.primarySequence)/\(base.secondarySequence)) but no log holds an entry from sequence \(base.primarySequence) on\(why)"
            )
        }
        guard Int(binsSize) <= allowed else { throw tooLarge("the base block", binsSize, allowed: allowed) }
        return finish(&out, binsSize: binsSize, sequence: sequence, applied: applied, highest: highest)
    }

    static func replayOld(
        _ primary: [UInt8], base: BaseBlock, logs: [TransactionLog], highest: UInt32, why: String, allowed: Int
    ) throws -> Result {
        var out = primary
        if out.count < BaseBlock.size { out += [UInt8](repeating: 0, count: BaseBlock.size - out.count) }
        // The applicable log has the primary's timestamp (the first hive bin's copy when the base block is damaged).
        let stamp = base.checksumValid ? base.timestamp : (primary.u64(BaseBlock.firstBin + 20) ?? 0)
        guard
            let log = logs.filter({ $0.base.timestamp == stamp }).max(by: {
                $0.base.primarySequence < $1.base.primarySequence
            })
        else {
            throw RegfError("no old-format log has the hive's timestamp: none applies\(why)")
        }
        guard Int(log.base.hiveBinsSize) <= allowed else {
            throw tooLarge(log.name, log.base.hiveBinsSize, allowed: allowed)
        }
        if !base.checksumValid, let source = logBaseBytes(log) { out.replaceSubrange(0..<512, with: source) }
        for page in log.dirtyPages { out.write(page.data, at: BaseBlock.firstBin + page.offset) }
        return finish(
            &out, binsSize: log.base.hiveBinsSize, sequence: max(log.base.primarySequence, base.primarySequence),
            applied: [
                "\(log.name): \(log.dirtyPages.count) dirty page\(log.dirtyPages.count == 1 ? "" : "s") (old format)"
            ], highest: highest)
    }

    /// The log's copy of the base block (``finish`` makes it a primary's again).
    static func logBaseBytes(_ log: TransactionLog) -> [UInt8]? { log.baseBytes.count == 512 ? log.baseBytes : nil }

    static func finish(
        _ out: inout [UInt8], binsSize: UInt32, sequence: UInt32, applied: [String], highest: UInt32
    ) -> Result {
        out.put32(binsSize, at: 40)
        let end = BaseBlock.firstBin + Int(binsSize)
        if out.count < end { out += [UInt8](repeating: 0, count: end - out.count) }
        BaseBlock.seal(&out, sequence: sequence)
        return Result(bytes: out, applied: applied, sequence: sequence, highestLogSequence: highest)
    }
}
