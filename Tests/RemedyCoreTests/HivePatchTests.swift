import Foundation
import RemedyFixtures
import Testing

@testable import RemedyCore

/// The patch apply writes a hive with and keeps as its backup, on a real Windows SYSTEM hive (regipy) edited by
/// hivex's own tool (`hivexregedit --merge`), not by remedy.
@Suite struct HivePatchTests {
    /// The real hive, and the same hive after hivexregedit merged two new keys and a value into it.
    static func realEdit() throws -> (original: [UInt8], edited: [UInt8]) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("remedy-patch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let hive = try RealSystemHive.windows7.write(to: dir.appendingPathComponent("SYSTEM").path)
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: hive)))
        let reg = dir.appendingPathComponent("edit.reg").path
        try Data(
            ("Windows Registry Editor Version 5.00\r\n\r\n"
                + "[\\ControlSet001\\Services\\Tcpip\\Parameters]\r\n\"RemedyPatchTest\"=dword:00000001\r\n\r\n"
                + "[\\RemedyPatchTest]\r\n\"Name\"=\"value\"\r\n\r\n"
                + "[\\RemedyPatchTest\\Sub]\r\n\"Name\"=\"value\"\r\n\r\n").utf8
        ).write(to: URL(fileURLWithPath: reg))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/hivexregedit")
        p.arguments = ["--merge", hive, reg]
        try p.run()
        p.waitUntilExit()
        try #require(p.terminationStatus == 0, "hivexregedit --merge failed")
        let edited = [UInt8](try Data(contentsOf: URL(fileURLWithPath: hive)))
        try #require(edited != original)
        return (original, edited)
    }

    @Test func aRealEditIsAFewPagesAndRevertsByteForByte() throws {
        let (original, edited) = try Self.realEdit()
        let patch = HivePatch(original: original, patched: edited)
        let written = patch.ranges.reduce(0) { $0 + $1.count }
        // A handful of cells and one appended bin in an 11.8 MB hive.
        #expect(written > 0 && written < original.count / 20, "\(written) bytes in \(patch.ranges.count) ranges")
        #expect(patch.ranges.allSatisfy { $0.lowerBound % HivePatch.page == 0 })

        // What apply does in place: the edited bytes written over the original in the ranges only, the size set.
        var inPlace = Array(original.prefix(edited.count))
        inPlace += [UInt8](repeating: 0, count: max(0, edited.count - inPlace.count))
        for r in patch.ranges where r.lowerBound < edited.count {
            let end = min(r.upperBound, edited.count)
            inPlace.replaceSubrange(r.lowerBound..<end, with: edited[r.lowerBound..<end])
        }
        #expect(inPlace == edited, "the ranges miss a changed byte")

        // The backup file, read back, reverts the edited hive to the original, byte for byte.
        let decoded = try HivePatch(decoding: try patch.encoded())
        #expect(decoded == patch)
        #expect(decoded.revert(edited) == original)
        // ... and nothing else: a hive changed since (one byte) is refused.
        var changed = edited
        changed[5000] ^= 0xFF
        #expect(decoded.revert(changed) == nil)
        #expect(decoded.revert(original) == nil)
    }

    @Test func aDamagedPatchIsRefused() throws {
        let original = [UInt8](repeating: 1, count: 3 * HivePatch.page)
        var edited = original
        edited[HivePatch.page + 7] = 2
        edited += [UInt8](repeating: 3, count: HivePatch.page)
        let patch = HivePatch(original: original, patched: edited)
        #expect(patch.ranges == [HivePatch.page..<(2 * HivePatch.page), (3 * HivePatch.page)..<(4 * HivePatch.page)])
        let bytes = try patch.encoded()
        #expect(try HivePatch(decoding: bytes).revert(edited) == original)

        #expect(throws: HivePatch.Invalid.self) { try HivePatch(decoding: Array(bytes.dropLast())) }
        #expect(throws: HivePatch.Invalid.self) { try HivePatch(decoding: Array("regf".utf8) + bytes) }
        let text = String(decoding: bytes, as: UTF8.self)
        for (from, to) in [
            ("[[4096,4096],[12288,4096]]", "[[12288,4096],[4096,4096]]"),  // out of order
            ("[[4096,4096],[12288,4096]]", "[[4096,4096],[12288,8192]]"),  // past the end
            ("[[4096,4096],[12288,4096]]", "[[-4096,4096],[12288,4096]]"),  // negative
            ("\"originalSize\":12288", "\"originalSize\":99999999999"),  // too large
        ] {
            #expect(text.contains(from))
            #expect(throws: HivePatch.Invalid.self, "\(to)") {
                try HivePatch(decoding: Array(text.replacingOccurrences(of: from, with: to).utf8))
            }
        }
    }

    /// The appliance calls of an in-place write: the ranges cut at the new size, in pieces of at most 1 MiB.
    @Test func inPlaceWritesGoInPiecesOfOneMessage() {
        let mib = InPlaceWrite.piece
        let ranges = [0..<4096, (2 * mib)..<(4 * mib + 8192), (5 * mib)..<(5 * mib + 4096)]
        #expect(
            InPlaceWrite.pieces(ranges, size: 4 * mib + 4096) == [
                0..<4096, (2 * mib)..<(3 * mib), (3 * mib)..<(4 * mib), (4 * mib)..<(4 * mib + 4096),
            ])
        #expect(InPlaceWrite.pieces(ranges, size: 1000) == [0..<1000])
    }
}
