import Foundation
import Hivex
import RemedyFixtures
import Testing

@testable import RemedyCore
@testable import RemedyPlanning

/// Editing one value must not rewrite the key's other values through a decoder: values remedy does not change keep
/// their exact type and bytes. The odd values are written with hivexregedit --merge and read back with
/// hivexregedit --export (hivex's own tools, not remedy's wrapper).
@Suite struct LosslessValueTests {
    /// REG_MULTI_SZ "a","","b"; REG_SZ with an unpaired surrogate and bytes after its NUL; REG_SZ without a
    /// terminator; REG_EXPAND_SZ of odd length; a DWORD stored in 3 bytes; type 0x20000 (a device property type).
    static let odd = [
        "\"Multi\"=hex(7):61,00,00,00,00,00,62,00,00,00,00,00",
        "\"Sz\"=hex(1):61,00,00,d8,62,00,00,00,7a,7a",
        "\"NoNul\"=hex(1):61,00,62,00",
        "\"Odd\"=hex(2):25,00,41,00,25",
        "\"Short\"=hex(4):01,02,03",
        "\"Prop\"=hex(20000):0a,0b",
    ]

    func merge(_ hive: String, _ lines: [String]) throws {
        let reg = hive + ".reg"
        let text =
            "Windows Registry Editor Version 5.00\r\n\r\n[\\Keep]\r\n" + lines.joined(separator: "\r\n")
            + "\r\n\"Plain\"=dword:00000001\r\n"
        try Data(text.utf8).write(to: URL(fileURLWithPath: reg))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/hivexregedit")
        p.arguments = ["--merge", hive, reg]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
    }

    func oddHive() throws -> String {
        let dir = NSTemporaryDirectory() + "/remedy-lossless-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/SYSTEM"
        try HiveContent(fileName: "SYSTEM").write(to: path)
        try merge(path, Self.odd)
        let export = try hivexExport(path, "\\Keep")
        for line in Self.odd { #expect(export.contains(line), "the fixture itself: \(line) not in \(export)") }
        return path
    }

    @Test(arguments: [Change.Op.setValue, .deleteValue])
    func editingOneValueKeepsTheOthersByteForByte(op: Change.Op) throws {
        let path = try oddHive()
        let change =
            op == .setValue
            ? Change.set(.system, RegistryPath("Keep"), "Plain", from: .dword(1), to: .dword(2))
            : Change(op: .deleteValue, hive: .system, key: RegistryPath("Keep"), name: "Plain", before: .dword(1))
        let edited = path + ".new"
        try Applier.edit(path, writingTo: edited, [change], hive: .system, image: "test")
        try Applier.verify(original: path, edited: edited, [change], hive: .system, image: "test")
        let export = try hivexExport(edited, "\\Keep")
        for line in Self.odd { #expect(export.contains(line), "\(line) not in \(export)") }
        #expect(export.contains("\"Plain\"=dword:00000002") == (op == .setValue), "\(export)")
        #expect(export.contains("\"Plain\"") == (op == .setValue))
    }

    /// Verification compares raw bytes: an edit that re-encoded an untouched value is caught.
    @Test func verifyCatchesARewrittenUntouchedValue() throws {
        let path = try oddHive()
        let change = Change.set(.system, RegistryPath("Keep"), "Plain", from: .dword(1), to: .dword(2))
        let edited = path + ".new"
        try Applier.edit(path, writingTo: edited, [change], hive: .system, image: "test")
        // What the lossy path did: every value decoded and re-encoded.
        let hive = try Hive(path: edited, writable: true)
        let node = try #require(try hive.node(at: "Keep"))
        try hive.setValues(of: node, try hive.values(of: node))
        let lossy = path + ".lossy"
        try hive.commit(to: lossy)
        hive.close()
        #expect(!(try hivexExport(lossy, "\\Keep")).contains(Self.odd[0]))
        #expect(throws: RemedyError.self) {
            try Applier.verify(original: path, edited: lossy, [change], hive: .system, image: "test")
        }
    }
}
