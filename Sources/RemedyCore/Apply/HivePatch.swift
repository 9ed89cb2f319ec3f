import Foundation
import Guestfs
import RegistryFormat
import RemedyPlanning

/// The 4 KiB pages in which an edited hive differs from the original, with the original's bytes there.
///
/// Apply writes only these pages of the new hive over the hive in place (a few hundred KiB for a change of a few dozen
/// values in a 12 MB hive: hivex edits cells where they are and appends new bins), and keeps this patch as the
/// hive's backup: rollback reverts it, byte for byte, after checking that the hive is the one apply left. Everything
/// apply writes goes to the session's overlay, which reaches the image whole or not at all, so the in-place writes
/// need no log of their own.
///
/// The file, in the run's backup directory under the hive's name: the line `remedy-hive-patch 1`, a line of JSON
/// (``Header``), then the original's bytes of each range, in order (a range past the original's end has none).
struct HivePatch: Equatable {
    static let page = 4096
    static let magic = Array("remedy-hive-patch 1\n".utf8)

    struct Header: Codable, Equatable {
        var originalSize: Int
        var originalSHA256: String
        var patchedSize: Int
        var patchedSHA256: String
        /// `[offset, length]` of each changed range, page-aligned, in order, not touching each other.
        var ranges: [[Int]]
    }

    var header: Header
    /// The original's bytes of every range, concatenated (each range cut at the original's end).
    var originalBytes: [UInt8]

    var ranges: [Range<Int>] { header.ranges.map { $0[0]..<($0[0] + $0[1]) } }

    /// The changed pages between two versions of a file, merged where they touch.
    static func changedRanges(_ old: [UInt8], _ new: [UInt8]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        let size = max(old.count, new.count)
        old.withUnsafeBufferPointer { a in
            new.withUnsafeBufferPointer { b in
                var offset = 0
                while offset < size {
                    let end = min(offset + page, size)
                    let same =
                        end <= a.count && end <= b.count
                        && memcmp(a.baseAddress! + offset, b.baseAddress! + offset, end - offset) == 0
                    if !same {
                        if let last = out.last, last.upperBound == offset {
                            out[out.count - 1] = last.lowerBound..<end
                        } else {
                            out.append(offset..<end)
                        }
                    }
                    offset = end
                }
            }
        }
        return out
    }

    init(original: [UInt8], patched: [UInt8]) {
        let ranges = Self.changedRanges(original, patched)
        var kept: [UInt8] = []
        for r in ranges where r.lowerBound < original.count {
            kept += original[r.lowerBound..<min(r.upperBound, original.count)]
        }
        header = Header(
            originalSize: original.count, originalSHA256: SHA256Hex.of(original), patchedSize: patched.count,
            patchedSHA256: SHA256Hex.of(patched), ranges: ranges.map { [$0.lowerBound, $0.count] })
        originalBytes = kept
    }

    func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Self.magic + Array(try encoder.encode(header)) + [0x0A] + originalBytes
    }

    /// Whether a backup file is a patch (a hive backup starts with `regf`).
    static func isPatch(_ bytes: [UInt8]) -> Bool { bytes.starts(with: magic) }

    struct Invalid: Error, CustomStringConvertible {
        var description: String
    }

    /// Reads a patch file: the backup is in the image, so every field is checked before it is used.
    init(decoding bytes: [UInt8]) throws {
        guard Self.isPatch(bytes), let newline = bytes[Self.magic.count...].firstIndex(of: 0x0A) else {
            throw Invalid(description: "not a remedy hive patch")
        }
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: Data(bytes[Self.magic.count..<newline]))
        } catch {
            throw Invalid(description: "its header is not readable (\(error))")
        }
        let limit = RegistryLimits.maxHiveFile
        guard (0...limit).contains(header.originalSize), (0...limit).contains(header.patchedSize) else {
            throw Invalid(description: "its sizes are out of range")
        }
        var expected = 0
        var previousEnd = -1
        for r in header.ranges {
            guard r.count == 2, r[0] >= 0, r[1] > 0, r[0] > previousEnd,
                r[0] + r[1] <= max(header.originalSize, header.patchedSize)
            else { throw Invalid(description: "its ranges are not in order or out of the file") }
            previousEnd = r[0] + r[1]
            expected += max(0, min(previousEnd, header.originalSize) - r[0])
        }
        let payload = Array(bytes[(newline + 1)...])
        guard payload.count == expected else {
            throw Invalid(description: "it holds \(payload.count) bytes of the original, its ranges need \(expected)")
        }
        self.header = header
        self.originalBytes = payload
    }

    /// The original, from the hive as apply left it; nil when `patched` is not that hive (its size or SHA-256 differ).
    func revert(_ patched: [UInt8]) -> [UInt8]? {
        guard patched.count == header.patchedSize, SHA256Hex.of(patched) == header.patchedSHA256 else { return nil }
        var out = Array(patched.prefix(header.originalSize))
        if out.count < header.originalSize { out += [UInt8](repeating: 0, count: header.originalSize - out.count) }
        var at = 0
        for r in ranges where r.lowerBound < header.originalSize {
            let end = min(r.upperBound, header.originalSize)
            out.replaceSubrange(r.lowerBound..<end, with: originalBytes[at..<(at + end - r.lowerBound)])
            at += end - r.lowerBound
        }
        return SHA256Hex.of(out) == header.originalSHA256 ? out : nil
    }
}

/// Writing a new version of a guest file over the old one in place, only where they differ.
enum InPlaceWrite {
    /// Bytes per pwrite and pread call (one protocol message carries them).
    static let piece = 1 << 20

    /// Writes `new`'s bytes in `ranges` (``HivePatch/changedRanges(_:_:)`` against what the guest file holds) over
    /// the guest file, and sets its size to `new`'s.
    static func write(_ g: Guestfs, _ path: String, new: [UInt8], ranges: [Range<Int>]) throws {
        for p in pieces(ranges, size: new.count) { try g.pwrite(path, Array(new[p]), offset: Int64(p.lowerBound)) }
        if try g.fileSize(path) != Int64(new.count) { try g.truncateSize(path, Int64(new.count)) }
    }

    /// Whether the guest file holds `new`'s bytes in `ranges` (read back piece by piece) and has its size.
    static func holds(_ g: Guestfs, _ path: String, _ new: [UInt8], in ranges: [Range<Int>]) throws -> Bool {
        guard try g.fileSize(path) == Int64(new.count) else { return false }
        for p in pieces(ranges, size: new.count) {
            guard try g.pread(path, count: p.count, offset: Int64(p.lowerBound)) == Array(new[p]) else { return false }
        }
        return true
    }

    /// `ranges` cut at `size` and split into pieces of at most ``piece`` bytes: one appliance call each.
    static func pieces(_ ranges: [Range<Int>], size: Int) -> [Range<Int>] {
        ranges.filter { $0.lowerBound < size }.flatMap { r in
            stride(from: r.lowerBound, to: min(r.upperBound, size), by: piece).map {
                $0..<min($0 + piece, r.upperBound, size)
            }
        }
    }
}
