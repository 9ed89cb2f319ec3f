import Foundation
import Hivex
import RemedyFixtures
import Testing

@testable import RemedyCore
@testable import RemedyPlanning

/// A Registry.pol written by the test from Microsoft's "Registry Policy File Format": `PReg`, version 1, then
/// `[key;value;type;size;data]` with UTF-16LE brackets, semicolons and NUL-terminated names.
struct PolFile {
    var entries: [(key: String, value: String, type: UInt32, data: [UInt8])]

    static func utf16z(_ s: String) -> [UInt8] { s.utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] } + [0, 0] }
    static func ch(_ c: Character) -> [UInt8] { [c.asciiValue!, 0] }
    static func le(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }
    static func dword(_ v: UInt32) -> [UInt8] { le(v) }

    var bytes: [UInt8] {
        var out = Array("PReg".utf8) + Self.le(1)
        for e in entries {
            out +=
                Self.ch("[") + Self.utf16z(e.key) + Self.ch(";") + Self.utf16z(e.value) + Self.ch(";") + Self.le(e.type)
                + Self.ch(";")
                + Self.le(UInt32(e.data.count)) + Self.ch(";") + e.data + Self.ch("]")
        }
        return out
    }
}

@Suite struct RegistryPolTests {
    static let restrictions = "Software\\Policies\\Microsoft\\Windows\\DeviceInstall\\Restrictions"
    static let path = "/Windows/System32/GroupPolicy/Machine/Registry.pol"

    static func pol(deny: UInt32) -> PolFile {
        PolFile(entries: [
            (
                "Software\\Policies\\Microsoft\\Windows\\Control Panel\\Desktop", "Wallpaper", 1,
                PolFile.utf16z("C:\\Fotos\\Été.jpg")
            ),
            (restrictions, "DenyUnspecified", 4, PolFile.dword(deny)),
            (restrictions, "DenyDeviceIDs", 4, PolFile.dword(deny)),
            (restrictions, "DenyDeviceIDsRetroactive", 4, PolFile.dword(deny)),
            (restrictions + "\\DenyDeviceIDs", "1", 1, PolFile.utf16z("PCI\\VEN_1AF4&DEV_1000")),
            (restrictions, "**del.DenyInstanceIDs", 1, PolFile.utf16z(" ")),
            ("Software\\Policies\\Example", "Blob", 3, [0xFF, 0x80, 0x00, 0xC3]),
        ])
    }

    /// The file as inspection reports it (the session's file facts: checksum and decoded text).
    static func guestFile(_ bytes: [UInt8]) -> GuestFile {
        let (text, encoding) = TextEncoding.decode(bytes)
        return GuestFile(
            path: path, size: Int64(bytes.count), sha256: SHA256Hex.of(bytes), text: text, encoding: encoding)
    }

    static func windows(_ bytes: [UInt8]?) throws -> LocalWindows {
        var w = try LocalWindows(PhonyWindows(release: .server2016, states: [.noAutoReboot]))
        w.files.files[FileSnapshot.key(path)] = .some(bytes.map(guestFile))
        return w
    }

    static let remove = "name: r\ndescription: d\nrules:\n  - id: driver-restrictions\n    with: {remove: true}\n"
    static let report = "name: r\ndescription: d\nrules:\n  - id: driver-restrictions\n"

    @Test func parsesTheDocumentedFormat() throws {
        let pol = try #require(RegistryPol(Self.pol(deny: 1).bytes))
        #expect(
            pol.entries.map(\.value) == [
                "Wallpaper", "DenyUnspecified", "DenyDeviceIDs", "DenyDeviceIDsRetroactive", "1",
                "**del.DenyInstanceIDs", "Blob",
            ])
        #expect(pol.entries[1].key == Self.restrictions && pol.number(pol.entries[1]) == 1)
        #expect(RegistryPol(Array("PReg".utf8) + [2, 0, 0, 0]) == nil)
        #expect(RegistryPol(Array(Self.pol(deny: 1).bytes.dropLast(3))) == nil)
    }

    @Test func removeSwitchesTheRestrictionsOffKeepingEveryOtherByte() throws {
        var w = try Self.windows(Self.pol(deny: 1).bytes)
        let policy = try PolicyLoader.parse(Self.remove, source: "r.yaml")
        let plan = try w.plan(policy)
        let action = try #require(
            plan.actions.first { $0.target == "Registry.pol" }, "\(plan.actions.map(\.description))")
        let change = try #require(action.files.first)
        #expect(change.path == Self.path && change.before == SHA256Hex.of(Self.pol(deny: 1).bytes))
        // Exactly the file the documented format gives with the three switches 0: the rest byte for byte.
        var expected = Self.pol(deny: 1)
        for i in 1...3 { expected.entries[i].data = PolFile.dword(0) }
        #expect(try #require(change.contentBytes) == expected.bytes)
        #expect(change.sha256 == SHA256Hex.of(expected.bytes))
        try w.apply(plan)
        #expect(try w.plan(policy).actions.isEmpty)
    }

    @Test func reportModeNamesTheLocalPolicyAndChangesNothing() throws {
        let w = try Self.windows(Self.pol(deny: 1).bytes)
        let plan = try w.plan(try PolicyLoader.parse(Self.report, source: "r.yaml"))
        #expect(plan.actions.isEmpty)
        let found = plan.findings.filter { $0.id == "device-install-restricted" }
        #expect(
            found.map(\.measured) == ["Registry.pol DenyUnspecified=1", "Registry.pol DenyDeviceIDs=1"],
            "\(plan.findings)")
        #expect(found.first?.severity == .blocker)
    }

    @Test func noFileOrNothingEnabledNeedsNothing() throws {
        for bytes in [nil, Self.pol(deny: 0).bytes] {
            let w = try Self.windows(bytes)
            let plan = try w.plan(try PolicyLoader.parse(Self.remove, source: "r.yaml"))
            #expect(
                plan.actions.isEmpty && plan.findings.isEmpty, "\(plan.actions.map(\.description)) \(plan.findings)")
        }
    }

    @Test func anUnreadableFileIsAWarningNotAnEdit() throws {
        let w = try Self.windows(Array("PReg".utf8) + [1, 0, 0, 0] + [0x5B, 0, 0x41])
        let plan = try w.plan(try PolicyLoader.parse(Self.remove, source: "r.yaml"))
        #expect(plan.actions.isEmpty)
        #expect(plan.findings.map(\.id) == ["local-policy-unreadable"])
    }
}
