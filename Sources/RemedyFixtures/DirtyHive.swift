import RegistryFormat

/// Dirty hives and their transaction logs, written from the published
/// registry file format specification: what Windows leaves on disk when it
/// stops between logging a write and finishing it in the primary file.
public enum DirtyHive {
    static func binsSize(_ hive: [UInt8]) -> Int { Int(hive.u32(40)!) }

    /// Offsets (from the first hive bin) of the `page`-sized pages of `after`'s bins that differ from `before`'s.
    static func changedPages(_ before: [UInt8], _ after: [UInt8], page: Int) -> [Int] {
        let size = binsSize(after)
        return stride(from: 0, to: size, by: page).filter { off in
            let a = 4096 + off
            let theirs = a + page <= before.count && off + page <= binsSize(before) ? Array(before[a..<a + page]) : nil
            return theirs != Array(after[a..<a + page])
        }
    }

    /// The primary as Windows leaves it mid-write: the old content, primary sequence one ahead of the secondary.
    public static func dirtyPrimary(_ before: [UInt8]) -> [UInt8] {
        var p = before
        p.put32(p.u32(8)! &+ 1, at: 4)
        p.put32(BaseBlock.checksum(p), at: 508)
        return p
    }

    /// A log's copy of a base block: file type, both sequence numbers, checksum.
    static func logBase(_ from: [UInt8], type: UInt32, sequence: UInt32, timestamp: UInt64? = nil) -> [UInt8] {
        var b = Array(from[0..<512])
        b.put32(type, at: 28)
        b.put32(sequence, at: 4)
        b.put32(sequence, at: 8)
        if let timestamp { b.put64(timestamp, at: 12) }
        b.put32(BaseBlock.checksum(b), at: 508)
        return b
    }

    /// One `HvLE` entry taking `before` to `after`.
    public static func entry(from before: [UInt8], to after: [UInt8], sequence: UInt32) -> [UInt8] {
        let pages = changedPages(before, after, page: 4096)
        var e = [UInt8](repeating: 0, count: 40 + pages.count * 8)
        e.replaceSubrange(0..<4, with: Array("HvLE".utf8))
        e.put32(sequence, at: 12)
        e.put32(UInt32(binsSize(after)), at: 16)
        e.put32(UInt32(pages.count), at: 20)
        for (i, off) in pages.enumerated() {
            e.put32(UInt32(off), at: 40 + i * 8)
            e.put32(4096, at: 44 + i * 8)
        }
        for off in pages { e += after[4096 + off..<4096 + off + 4096] }
        if e.count % 512 != 0 { e += [UInt8](repeating: 0, count: 512 - e.count % 512) }
        e.put32(UInt32(e.count), at: 4)
        e.put64(Marvin32.hash(e[40...]), at: 24)
        e.put64(Marvin32.hash(e[0..<32]), at: 32)
        return e
    }

    /// A new-format dirty hive: `states[0]` on disk, and logs whose entries
    /// (sequence numbers from the primary's) bring it through every later
    /// state. `split` entries go to `.LOG1`, the rest to `.LOG2`.
    public static func newFormat(
        _ states: [[UInt8]], split: Int? = nil
    ) -> (primary: [UInt8], logs: [(name: String, bytes: [UInt8])]) {
        let primary = dirtyPrimary(states[0])
        let first = primary.u32(4)!
        var entries: [[UInt8]] = []
        for i in 1..<states.count {
            entries.append(entry(from: states[i - 1], to: states[i], sequence: first &+ UInt32(i - 1)))
        }
        let cut = split ?? entries.count
        var log1 = logBase(states.last!, type: 6, sequence: first)
        for e in entries[..<cut] { log1 += e }
        var logs = [(name: "HIVE.LOG1", bytes: log1)]
        if cut < entries.count {
            var log2 = logBase(states.last!, type: 6, sequence: first &+ UInt32(cut))
            for e in entries[cut...] { log2 += e }
            logs.append((name: "HIVE.LOG2", bytes: log2))
        }
        return (primary, logs)
    }

    /// An old-format dirty hive: `before` on disk and a `.LOG` with a DIRT
    /// vector of the 512-byte pages that make it `after`.
    public static func oldFormat(before: [UInt8], after: [UInt8]) -> (primary: [UInt8], log: [UInt8]) {
        let primary = dirtyPrimary(before)
        let pages = changedPages(before, after, page: 512)
        let bits = binsSize(after) / 512
        var log = logBase(after, type: 1, sequence: primary.u32(4)!, timestamp: before.u64(12)!)
        var vector = Array("DIRT".utf8) + [UInt8](repeating: 0, count: (bits + 7) / 8)
        for off in pages { vector[4 + off / 512 / 8] |= 1 << UInt8(off / 512 % 8) }
        log += vector
        if log.count % 512 != 0 { log += [UInt8](repeating: 0, count: 512 - log.count % 512) }
        for off in pages { log += after[4096 + off..<4096 + off + 512] }
        return (primary, log)
    }
}
