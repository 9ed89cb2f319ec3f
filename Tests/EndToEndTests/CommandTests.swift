import Foundation
import Hivex
import RegistryFormat
import RemedyCore
import RemedyFixtures
import Testing

/// Commands that need no appliance: `remedy hive check|recover`, `remedy convert`.
@Suite struct CommandTests {
    func dir() throws -> String {
        let d = NSTemporaryDirectory() + "/remedy-cmd-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    /// A dirty SYSTEM hive with SYSTEM.LOG1 beside it, and the content the log brings.
    func dirtyHive(in d: String) throws -> [UInt8] {
        var content = HiveContent(rootName: "ROOT", fileName: "\\SystemRoot\\System32\\Config\\SYSTEM")
        content.set("ControlSet001\\Control\\CrashControl", ["AutoReboot": .dword(1)])
        try content.write(to: d + "/before")
        let hive = try Hive(path: d + "/before", writable: true)
        try hive.setValue(
            of: try hive.ensureNode(at: "ControlSet001\\Control\\CrashControl"),
            HiveValue(name: "AutoReboot", value: .dword(0)))
        try hive.commit(to: d + "/after")
        hive.close()
        let before = [UInt8](try fileBytes(d + "/before")), after = [UInt8](try fileBytes(d + "/after"))
        let (primary, logs) = DirtyHive.newFormat([before, after])
        try Data(primary).write(to: URL(fileURLWithPath: d + "/SYSTEM"))
        try Data(logs[0].bytes).write(to: URL(fileURLWithPath: d + "/SYSTEM.LOG1"))
        return after
    }

    @Test func hiveCheckAndRecoverWorkOnFiles() throws {
        let d = try dir()
        let after = try dirtyHive(in: d)
        let check = try remedy(["hive", "check", d + "/SYSTEM", "--format", "json"])
        #expect(check.status == 2, "\(check.stdout) \(check.stderr)")
        let doc = try json(check.stdout)
        #expect(doc["dirty"] as? Bool == true && doc["recoverable"] as? Bool == true)
        #expect((doc["logs"] as? [[String: Any]])?.first?["format"] as? String == "new")

        let rec = try remedy(["hive", "recover", d + "/SYSTEM", "-o", d + "/SYSTEM.clean"])
        #expect(rec.status == 0, "\(rec.stderr)")
        #expect(rec.stdout.contains("SYSTEM.LOG1: 1 entry"), "\(rec.stdout)")
        let clean = [UInt8](try fileBytes(d + "/SYSTEM.clean"))
        #expect(
            clean[4096...].prefix(after.count - 4096) == after[4096...],
            "the recovered bins differ from the logged state")
        #expect(try remedy(["hive", "check", d + "/SYSTEM.clean"]).status == 0)

        // A damaged log: the hive cannot be recovered, and says so.
        var log = [UInt8](try fileBytes(d + "/SYSTEM.LOG1"))
        log[600] ^= 0xFF
        try Data(log).write(to: URL(fileURLWithPath: d + "/SYSTEM.LOG1"))
        let bad = try remedy(["hive", "check", d + "/SYSTEM"])
        #expect(bad.status == 1, "\(bad.stdout)")
        #expect(bad.stdout.contains("Recovery:  impossible"), "\(bad.stdout)")
        let refused = try remedy(["hive", "recover", d + "/SYSTEM", "-o", d + "/nope"])
        #expect(
            refused.status == 1 && refused.stderr.contains("SYSTEM") && refused.stderr.contains("no log holds"),
            "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: d + "/nope"))
    }

    @Test func explainCoversEveryRule() throws {
        let list = try remedy(["explain"])
        #expect(list.status == 0)
        for rule in BuiltinRule.all.map(\.documentation.id) {
            #expect(list.stdout.contains(rule), "\(rule) not listed")
            let r = try remedy(["explain", rule])
            #expect(
                r.status == 0 && r.stdout.contains("Checks:") && r.stdout.contains("Changes:")
                    && r.stdout.contains("Why:"), "\(rule): \(r.stderr)")
        }
        let registry = try remedy(["explain", "san-policy", "--policy", "azure"])
        #expect(registry.status == 0 && registry.stdout.contains("partmgr"), "\(registry.stderr)")
        let unknown = try remedy(["explain", "no-such-rule"])
        #expect(unknown.status != 0 && unknown.stderr.contains("known rules"))
    }

    @Test func convertWritesTheTargetFormatOrNothing() throws {
        let d = try dir()
        // A raw disk with an MBR signature: small and enough for qemu-img.
        var raw = [UInt8](repeating: 0, count: 1_048_576)
        raw[510] = 0x55
        raw[511] = 0xAA
        try Data(raw).write(to: URL(fileURLWithPath: d + "/disk.raw"))
        let r = try remedy(["convert", d + "/disk.raw", "--to", "qcow2", "-o", d + "/disk.qcow2"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try DiskFormat.detect(path: d + "/disk.qcow2") == .qcow2)
        let back = try remedy(["convert", d + "/disk.qcow2", "--to", "raw", "-o", d + "/back.raw"])
        #expect(back.status == 0, "\(back.stderr)")
        #expect(try fileBytes(d + "/back.raw") == Data(raw))
        let again = try remedy(["convert", d + "/disk.qcow2", "--to", "raw", "-o", d + "/back.raw"])
        #expect(again.status == 1 && again.stderr.contains("--force"))
        try Data("not a disk".utf8).write(to: URL(fileURLWithPath: d + "/junk.vmdk"))
        let junk = try remedy(["convert", d + "/junk.vmdk", "--to", "raw", "-o", d + "/junk.raw"])
        #expect(junk.status == 1 && junk.stderr.contains("junk.vmdk"))
        #expect(!FileManager.default.fileExists(atPath: d + "/junk.raw"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: d).filter { $0.contains("partial") }.isEmpty)
    }
}
