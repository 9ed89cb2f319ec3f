import Foundation
import Guestfs
import Hivex
import RegistryFormat
import RemedyCore
import Testing

/// The cloud's image rules and the states Windows can leave an image in:
/// one phony image per rule, planned in one batch; dirty, unrecoverable,
/// hibernated and encrypted images applied in another.
@Suite(.serialized) struct AcceptanceTests {
    static func ids(_ e: BatchEntry, severity: Finding.Severity? = nil) -> Set<FindingID> {
        Set(
            e.findings.filter {
                (severity == nil || $0.severity == severity) && !Fixtures.noInputFindings.contains($0.id)
            }.map(\.id))
    }

    @Test func everyAcceptanceRuleHasAPassingAndAFailingImage() throws {
        let f = try Fixtures.get()
        let reportPath = f.dir + "/accept.json"
        let r = try remedy(["batch", f.acceptDir, "--report", reportPath, "--jobs", "1"])
        #expect(r.status == 2, "\(r.stderr)")  // changes pending nowhere but nothing failed: some need manual work
        let report = try readReport(reportPath)
        var by: [String: BatchEntry] = [:]
        for e in report.entries { by[(e.path as NSString).lastPathComponent] = e }
        #expect(by.count == 9, "\(by.keys.sorted())")
        let pass = try #require(by["pass.qcow2"])
        #expect(pass.status == .compliant && Self.ids(pass) == ["password-complexity"], "\(pass.findings)")
        let expected: [String: (id: FindingID, severity: Finding.Severity)] = [
            "small.qcow2": ("system-disk-size", .blocker),
            "huge.raw": ("image-size", .warning),
            "noboot.qcow2": ("boot-partition", .blocker),
            "uefi2008r2.qcow2": ("boot-mode", .blocker),
            "noadmin.qcow2": ("admin-account", .blocker),
            "bitlocker-data.qcow2": ("encrypted-volume", .blocker),
            "hibernated.qcow2": ("hibernated", .blocker),
            "data.qcow2": ("data-partition", .warning),
        ]
        for (name, want) in expected {
            let e = try #require(by[name], "\(name) missing")
            let failing = e.findings.filter {
                $0.severity != .info && $0.id != "password-complexity" && !Fixtures.noInputFindings.contains($0.id)
            }
            #expect(failing.map(\.id) == [want.id], "\(name): \(failing.map { "\($0.id) \($0.severity)" })")
            #expect(failing.first?.severity == want.severity, "\(name)")
            #expect(failing.first?.measured != nil && !(failing.first?.message.isEmpty ?? true))
        }
        #expect(by["huge.raw"]?.findings.first { $0.id == "image-size" }?.message.contains(".mf") == true)
        #expect(by["uefi2008r2.qcow2"]?.os?.firmware == .uefi)
        // The format list is policy data: a site that takes only RAW fails a qcow2 image.
        let policy = f.dir + "/raw-only.yaml"
        try
            "name: raw-only\ndescription: d\nextends: huawei-ims\nrules:\n  - id: image-acceptance\n    with: {formats: [raw]}\n"
            .write(toFile: policy, atomically: true, encoding: .utf8)
        let rawOnly = try remedy(["plan", f.acceptDir + "/pass.qcow2", "--policy", policy, "--format", "json"])
        let plan = try RemedyJSON.decoder().decode(Plan.self, from: Data(rawOnly.stdout.utf8))
        #expect(
            plan.findings.contains { $0.id == "image-format" && $0.severity == .blocker && $0.measured == "qcow2" },
            "\(rawOnly.stderr)")
    }

    @Test func dirtyHiveIsRecoveredThenEditedAndBadStatesAreRefusedUntouched() throws {
        let f = try Fixtures.get()
        let untouched = ["unrecoverable.qcow2", "hibernated.qcow2", "bitlocker-system.qcow2"]
        var before: [String: Data] = [:]
        for n in untouched { before[n] = try fileBytes("\(f.integrityDir)/\(n)") }

        let reportPath = f.dir + "/integrity.json"
        let r = try remedy(["batch", f.integrityDir, "--apply", "--report", reportPath, "--jobs", "1"])
        #expect(r.status == 1, "\(r.stderr)")
        let report = try readReport(reportPath)
        #expect(
            reportStatuses(report) == [
                "dirty.qcow2": "fixed", "unrecoverable.qcow2": "failed:hive-unrecoverable",
                "hibernated.qcow2": "failed:hibernated", "bitlocker-system.qcow2": "failed:encrypted",
            ], "\(reportStatuses(report))")
        for n in untouched { #expect(try fileBytes("\(f.integrityDir)/\(n)") == before[n], "\(n) was changed") }
        #expect(
            report.entries.first { $0.path.hasSuffix("hibernated.qcow2") }?.error?.message.contains("powercfg /h off")
                == true)
        // The dirty image's entry is the plan apply made (before writing): it says what it did about the logs, and
        // the logged write is seen: its CrashDumpEnabled=3 is what the plan starts from (crash-settings only
        // touches AutoReboot).
        let dirty = try #require(report.entries.first { $0.path.hasSuffix("dirty.qcow2") })
        let note = try #require(dirty.findings.first { $0.id == "hive-recovered" })
        #expect(note.message.contains("SYSTEM.LOG1: 1 entry"), "\(note.message)")
        #expect(!dirty.actions.flatMap(\.changes).isEmpty)
        #expect(!dirty.actions.flatMap(\.changes).contains { $0.name == "CrashDumpEnabled" })

        // Nothing the log held was lost, remedy's edits are there, the hive is clean above every log, the logs are in the backup.
        let session = try ImageSession.open(
            image: f.integrityDir + "/dirty.qcow2", writable: false, options: Fixtures.options)
        defer { session.close() }
        let info = try #require(session.integrity[.system])
        #expect(!info.dirty && info.logs.isEmpty, "\(info)")
        let local = try #require(try session.localHives([.system])[.system])
        let hive = try Hive(path: local)
        defer { hive.close() }
        let crash = try #require(try hive.node(at: "ControlSet001\\Control\\CrashControl"))
        #expect(try hive.value(of: crash, named: "CrashDumpEnabled") == .dword(3), "the logged write was lost")
        #expect(try hive.value(of: crash, named: "AutoReboot") == .dword(0))
        #expect(try hive.node(at: "ControlSet001\\Services\\RemedyLogged") != nil, "the logged key was lost")
        let base = try BaseBlock([UInt8](fileBytes(local)))
        #expect(!base.isDirty)
        let g = session.appliance.guestfs
        let backups = try g.ls("/Windows/remedy/backup")
        #expect(backups.count == 1)
        #expect(try g.isFile("/Windows/remedy/backup/\(backups[0])/SYSTEM.LOG1"))
        let log = try TransactionLog(
            name: "SYSTEM.LOG1", bytes: try g.readFile("/Windows/remedy/backup/\(backups[0])/SYSTEM.LOG1"))
        #expect(base.primarySequence > log.entries.map(\.sequence).max() ?? 0)
    }
}
