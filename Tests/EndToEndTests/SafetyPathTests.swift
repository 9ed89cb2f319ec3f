import Foundation
import Guestfs
import Hivex
import RemedyCore
import RemedyFixtures
import Testing

/// Safety paths of apply and rollback (issue 11, items 2, 6 and 8): each gives its exact error code and exit code,
/// and leaves the image byte for byte as it was (SHA-256 of the file). Several cases share one batch run (faults
/// are injected with the `REMEDY_FAULT` developer hook at the n-th time a point is reached in the process).
@Suite(.serialized) struct SafetyPathTests {
    static let work = NSTemporaryDirectory() + "/remedy-safety-\(getpid())"

    func sha(_ path: String) throws -> String { try CrashSafetyTests.sha256(path) }

    @Test func everySafetyPathLeavesTheImageUntouched() throws {
        let w = Self.work
        try? FileManager.default.removeItem(atPath: w)
        let faults = w + "/faults", outs = w + "/outputs"
        for d in [faults, outs] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        }
        // From the shared build: the base is only copied, the hibernated image only refused.
        let fixtures = try Fixtures.get()
        let base = fixtures.ownBase2016, hib = fixtures.ownHibernated
        let virtio = w + "/virtio-win"
        try FakeVirtioWin.write(at: virtio, layout: .isoTree)
        let inputs = ["--virtio-win", virtio]
        for n in ["f1.qcow2", "f2.qcow2", "f3.qcow2", "logfile.qcow2"] {
            try FileManager.default.copyItem(atPath: base, toPath: "\(faults)/\(n)")
        }
        let norecord = w + "/norecord.qcow2", stale = w + "/stale.qcow2"
        for p in [norecord, stale] { try FileManager.default.copyItem(atPath: base, toPath: p) }

        // Prepared with libguestfs directly (one launch): C:\Windows\remedy\log is a file (writing the record fails);
        // an image edited by a run that left backups but no record (SYSTEM changed, its original in backup\<run>\).
        let originalSystem = w + "/SYSTEM.orig"
        do {
            let g = try Guestfs()
            try g.setBackend("direct")
            try g.setBackendSettings(["force_tcg"])
            try g.addDrive("\(faults)/logfile.qcow2", format: "qcow2", readonly: false)
            try g.addDrive(norecord, format: "qcow2", readonly: false)
            try g.launch()
            defer { g.close() }
            let roots = try g.inspectOS().sorted()
            try #require(roots.count == 2)
            try g.mount(roots[0], at: "/")
            let windows = try g.caseSensitivePath("/Windows")
            try g.mkdirP(windows + "/remedy")
            try g.touch(windows + "/remedy/log")
            try g.umountAll()
            try g.mount(roots[1], at: "/")
            let system = try g.caseSensitivePath("/Windows/System32/config/SYSTEM")
            try g.download(system, to: originalSystem)
            let run = windows + "/remedy/backup/20260101T000000Z-1"
            try g.mkdirP(run)
            try g.upload(originalSystem, to: run + "/SYSTEM")
            let hive = try Hive(path: originalSystem, writable: true)
            try hive.setValue(
                of: try hive.ensureNode(at: "RemedyTest"),
                HiveValue(name: "Edited", value: .string("by a run without a record")))
            try hive.commit(to: w + "/SYSTEM.edited")
            hive.close()
            try g.upload(w + "/SYSTEM.edited", to: system)
            try g.shutdown()
        }
        var before: [String: String] = [:]
        for n in ["f1.qcow2", "f2.qcow2", "f3.qcow2", "logfile.qcow2"] { before[n] = try sha("\(faults)/\(n)") }

        // One batch, four failures: a hive upload read back wrong (verify-failed), a failure after files and the first
        // hive were written (write-failed: nothing to undo in the image), a read-back after drop_caches that differs
        // (verify-failed), the record's directory a file (write-failed). All four images unchanged byte for byte.
        let report = w + "/faults.json"
        let r = try remedy(
            ["batch", faults, "--apply", "--jobs", "1", "--report", report] + inputs,
            environment: ["REMEDY_FAULT": "corrupt:hive-upload@1,fail:after-hive-write@1,corrupt:read-back@1"])
        #expect(r.status == 1, "\(r.stderr)")
        let entries = try readReport(report).entries
        let codes = Dictionary(
            uniqueKeysWithValues: entries.map {
                (($0.path as NSString).lastPathComponent, $0.error?.code ?? $0.status.rawValue)
            })
        #expect(
            codes == [
                "f1.qcow2": "verify-failed", "f2.qcow2": "write-failed", "f3.qcow2": "verify-failed",
                "logfile.qcow2": "write-failed",
            ],
            "\(codes) \(entries.map { $0.error?.message ?? "" })")
        for e in entries {
            #expect(
                e.error?.message.contains("nothing was written to the image") == true,
                "\(e.path): \(e.error?.message ?? "")")
        }
        for (n, s) in before {
            #expect(try sha("\(faults)/\(n)") == s, "\(n) changed")
            #expect(
                !FileManager.default.fileExists(atPath: "\(faults)/.\(n).remedy-overlay.qcow2"), "\(n): overlay left")
        }

        // A hibernated image with nothing else to change: apply exits 2 (blocking finding), like batch; nothing written.
        let hibSHA = try sha(hib)
        let h = try remedy(["apply", hib])
        #expect(h.status == 2, "\(h.stdout)\(h.stderr)")
        #expect(try sha(hib) == hibSHA)

        // A stale plan: a change whose `before` is not what the image holds -> plan-mismatch, exit 1, untouched.
        let planFile = w + "/plan.json"
        let p = try remedy(["plan", stale, "--out", planFile] + inputs)
        #expect(p.status == 2, "\(p.stderr)")
        var plan = try #require(try JSONSerialization.jsonObject(with: fileBytes(planFile)) as? [String: Any])
        var actions = try #require(plan["actions"] as? [[String: Any]])
        var mutated = false
        for (i, a) in actions.enumerated() where !mutated {
            guard var changes = a["changes"] as? [[String: Any]] else { continue }
            for (j, c) in changes.enumerated()
            where !mutated && c["before"] != nil && c["after"] != nil && !(c["before"] is NSNull) {
                changes[j]["before"] = c["after"]
                actions[i]["changes"] = changes
                mutated = true
            }
        }
        #expect(mutated)
        plan["actions"] = actions
        try JSONSerialization.data(withJSONObject: plan).write(to: URL(fileURLWithPath: w + "/stale-plan.json"))
        let staleSHA = try sha(stale)
        let s = try remedy(["apply", stale, "--plan", w + "/stale-plan.json", "--format", "json"] + inputs)
        #expect(s.status == 1, "\(s.stderr)")
        #expect((try? json(s.stdout))?["code"] as? String == "plan-mismatch", "\(s.stdout)")
        #expect(try sha(stale) == staleSHA)

        // In place, a streamOptimized VMDK is refused before any appliance starts; --output writes a new image.
        let stream = outs + "/export.vmdk"
        try HostToolForTests.run(
            "/usr/bin/qemu-img",
            ["convert", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized", base, stream])
        let streamSHA = try sha(stream)
        let refused = try remedy(["apply", stream, "--format", "json"])
        #expect(
            refused.status == 1 && (try? json(refused.stdout))?["code"] as? String == "image-read-only",
            "\(refused.stdout)\(refused.stderr)")
        #expect(refused.stderr.contains("--output"))
        let out = w + "/export-fixed.qcow2"
        let o = try remedy(["apply", stream, "--output", out] + inputs)
        #expect(o.status == 0, "\(o.stderr)")
        #expect(try sha(stream) == streamSHA, "the source is only read")
        #expect(FileManager.default.fileExists(atPath: out) && !FileManager.default.fileExists(atPath: out + ".tmp"))
        #expect(try DiskFormat.detect(path: out) == .qcow2)
        // --output that fails leaves neither the output nor its temporary file.
        let failed = w + "/never.raw"
        let f = try remedy(
            ["apply", stale, "--output", failed] + inputs, environment: ["REMEDY_FAULT": "fail:after-file-writes"])
        #expect(f.status == 1, "\(f.stderr)")
        #expect(
            !FileManager.default.fileExists(atPath: failed) && !FileManager.default.fileExists(atPath: failed + ".tmp")
                && !FileManager.default.fileExists(atPath: w + "/.never.raw.remedy-overlay.qcow2"))
        #expect(try sha(stale) == staleSHA)
        let again = try remedy(["plan", out] + inputs)
        #expect(again.status == 0, "the output re-plans clean: \(again.stdout)")

        // Rollback of a run that has backups but no record restores the hive from its backup.
        let rb = try remedy(["rollback", norecord, "--format", "json"])
        #expect(rb.status == 0, "\(rb.stdout)\(rb.stderr)")
        let back = try CrashSafetyTests.readBack([norecord], into: w)
        #expect(
            try fileBytes(back[0].system) == fileBytes(originalSystem),
            "SYSTEM restored from the record-less run's backup")
        #expect(
            back[0].files.contains("windows/system32/config/system")
                && !back[0].files.contains { $0.hasPrefix("windows/remedy/") },
            "remedy's backups and records are removed")

        // --accel kvm never falls back to TCG: it fails (or works), and never says it fell back.
        let k = try remedy(
            ["plan", stale, "--accel", "kvm", "--kvm-timeout", "5"], environment: ["REMEDY_ACCEL": "kvm"])
        #expect(!k.stderr.contains("falling back"), "\(k.stderr)")
        if k.status != 0 && k.status != 2 {
            #expect(
                k.stderr.contains("appliance-") || k.stderr.contains("KVM") || k.stderr.contains("kvm"), "\(k.stderr)")
        }
        try? FileManager.default.removeItem(atPath: w)
    }
}

enum HostToolForTests {
    static func run(_ executable: String, _ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw CocoaError(.fileWriteUnknown) }
    }
}
