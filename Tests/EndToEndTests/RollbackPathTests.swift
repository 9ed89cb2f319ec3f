import Foundation
import Guestfs
import RemedyCore
import RemedyFixtures
import Testing

/// Rollback paths without a test before (issue 11, item 8), on two images of the shared build (7 appliance launches in all):
/// - several runs: an image whose local Group Policy already runs a startup script (`scripts.ini`, `gpt.ini`) is
///   applied with the default policy, then again with `openstack-kvm` (remote access, guest agent: more to do) and a
///   newer virtio-win (so run 2 replaces a driver file run 1 injected), then rolled back once; SYSTEM, SOFTWARE, `scripts.ini`, `gpt.ini` and every other file are byte for byte those of a
///   pristine copy kept before the first run, no injected file is left and `C:\Windows\remedy` is gone;
/// - a missing backup: rollback refuses (exit 1, `hive-unreadable`, naming the image and the backup) and leaves the
///   image file byte for byte as it was.
/// Everything is read back with libguestfs directly (one read-only launch), never with remedy's own reader.
@Suite(.serialized) struct RollbackPathTests {
    static let work = NSTemporaryDirectory() + "/remedy-rollback-paths-\(getpid())"
    static let scriptsIni = "/Windows/System32/GroupPolicy/Machine/Scripts/scripts.ini"
    static let gptIni = "/Windows/System32/GroupPolicy/gpt.ini"

    func sha(_ path: String) throws -> String { try CrashSafetyTests.sha256(path) }

    @Test func rollbackUndoesSeveralRunsAndRefusesAMissingBackup() throws {
        let w = Self.work
        try? FileManager.default.removeItem(atPath: w)
        try FileManager.default.createDirectory(atPath: w, withIntermediateDirectories: true)
        // Both images come from the shared build (this test's alone: it writes them).
        let f = try Fixtures.get()
        let a = f.rollbackA, pristine = w + "/a-pristine.qcow2", b = f.rollbackB
        try FileManager.default.copyItem(atPath: a, toPath: pristine)
        let virtio = w + "/virtio-win"
        try FakeVirtioWin.write(at: virtio, layout: .isoTree)
        let inputs = ["--virtio-win", virtio]
        // A newer virtio-win for run 2: viostor.sys differs, so run 2 replaces a driver file run 1 injected.
        let newer = w + "/virtio-win-newer"
        try FakeVirtioWin.write(at: newer, layout: .isoTree)
        for rel in try FileManager.default.subpathsOfDirectory(atPath: newer)
        where rel.lowercased().hasSuffix("viostor.sys") {
            let h = try FileHandle(forWritingTo: URL(fileURLWithPath: newer + "/" + rel))
            try h.seekToEnd()
            try h.write(contentsOf: Data("a newer build".utf8))
            try h.close()
        }

        // 1. Two runs on A (launches 1, 2), then one rollback (launch 3). Small disks: apply exits 2 (disk-size blocker).
        let r1 = try remedy(["apply", a, "--format", "json"] + inputs)
        #expect(r1.status == 0 || r1.status == 2, "\(r1.stderr)")
        let run1 = try RemedyJSON.decoder().decode(ApplyReport.self, from: Data(r1.stdout.utf8))
        #expect(Set(run1.backups.keys) == ["SYSTEM", "SOFTWARE"], "\(run1.backups)")
        #expect(
            run1.fileBackups[Self.scriptsIni] != nil && run1.fileBackups[Self.gptIni] != nil,
            "run 1 replaced the existing scripts.ini and gpt.ini: \(run1.fileBackups.keys.sorted())")
        #expect(run1.injected.contains("/Windows/remedy/firstboot/run.cmd"), "\(run1.injected)")
        let r2 = try remedy(["apply", a, "--policy", "openstack-kvm", "--format", "json", "--virtio-win", newer])
        #expect(r2.status == 0 || r2.status == 2, "\(r2.stderr)")
        let run2 = try RemedyJSON.decoder().decode(ApplyReport.self, from: Data(r2.stdout.utf8))
        #expect(run2.runID != run1.runID)
        #expect(run2.plan.actions.contains { $0.rule == "remote-access" }, "run 2 has remote access to do")
        #expect(!run2.injected.isEmpty, "run 2 injects files of its own")
        let replacedInjected = "/Windows/Drivers/VirtIO/viostor.sys"
        #expect(
            run1.injected.contains(replacedInjected) && run2.fileBackups[replacedInjected] != nil,
            "run 2 replaced the viostor.sys run 1 injected: \(run2.fileBackups.keys.sorted())")
        let rb = try remedy(["rollback", a, "--format", "json"])
        #expect(rb.status == 0, "\(rb.stdout)\(rb.stderr)")
        let rolled = try RemedyJSON.decoder().decode(RollbackReport.self, from: Data(rb.stdout.utf8))
        #expect(rolled.runs == [run1.runID, run2.runID], "\(rolled.runs)")
        #expect(rolled.restored == run1.backups, "each hive from its oldest backup: \(rolled.restored)")
        #expect(
            rolled.restoredFiles[Self.scriptsIni] == run1.fileBackups[Self.scriptsIni]
                && rolled.restoredFiles[Self.gptIni] == run1.fileBackups[Self.gptIni], "\(rolled.restoredFiles)")
        #expect(
            Set(rolled.restoredFiles.keys) == Set(run1.fileBackups.keys),
            "only the originals go back: \(rolled.restoredFiles.keys.sorted())")
        #expect(
            rolled.removed.contains(replacedInjected), "a file run 1 injected is removed although run 2 replaced it")

        // 2. B: applied (launch 4), its SYSTEM backup deleted (launch 5), rollback refused (launch 6), B untouched.
        let rB = try remedy(["apply", b, "--format", "json"] + inputs)
        #expect(rB.status == 0 || rB.status == 2, "\(rB.stderr)")
        let runB = try RemedyJSON.decoder().decode(ApplyReport.self, from: Data(rB.stdout.utf8))
        let systemBackup = try #require(runB.backups["SYSTEM"], "\(runB.backups)")
        #expect(systemBackup.hasPrefix("/Windows/remedy/backup/" + runB.runID + "/"), "\(systemBackup)")
        do {
            let g = try Guestfs()
            try g.setBackend("direct")
            try g.setBackendSettings(["force_tcg"])
            try g.addDrive(b, format: "qcow2", readonly: false)
            try g.launch()
            defer { g.close() }
            let root = try #require(try g.inspectOS().first)
            try g.mount(root, at: "/")
            let runs = try g.ls("/Windows/remedy/backup")
            #expect(runs == [runB.runID], "\(runs)")
            let found = try g.ls("/Windows/remedy/backup/\(runB.runID)").filter { $0.lowercased() == "system" }
            try #require(found.count == 1)
            try g.rm("/Windows/remedy/backup/\(runB.runID)/\(found[0])")
            try g.umountAll()
            try g.shutdown()
        }
        let beforeB = try sha(b)
        let refused = try remedy(["rollback", b, "--format", "json"])
        #expect(refused.status == 1, "\(refused.stdout)\(refused.stderr)")
        let error = (try? json(refused.stdout)) ?? [:]
        #expect(error["code"] as? String == "hive-unreadable" && error["image"] as? String == b, "\(refused.stdout)")
        let line = refused.stderr.split(separator: "\n").last.map(String.init) ?? ""
        let windowsBackup = systemBackup.replacingOccurrences(of: "/", with: "\\")
        #expect(
            line.contains(b) && line.contains(windowsBackup) && line.contains("missing")
                && line.contains("nothing was changed"),
            "the error names the image and the missing backup: \(refused.stderr)")
        #expect(try sha(b) == beforeB, "a refused rollback changed the image")
        #expect(
            !FileManager.default.fileExists(atPath: "\(w)/.b.qcow2.remedy-overlay.qcow2")
                && !FileManager.default.fileExists(atPath: "\(w)/.b.qcow2.remedy-commit"), "leftovers beside B")

        // Read back (launch 7): the pristine copy and A, read-only.
        let back = try Self.readBack(pristine: pristine, image: a, into: w + "/read")
        for name in ["SYSTEM", "SOFTWARE", "scripts.ini", "gpt.ini"] {
            let original = try fileBytes(back.pristine + "/" + name), now = try fileBytes(back.image + "/" + name)
            #expect(
                !original.isEmpty && now == original,
                "\(name) is not the original after rollback (\(now.count) vs \(original.count) bytes)")
        }
        #expect(
            try fileBytes(back.pristine + "/scripts.ini").starts(with: [0xFF, 0xFE]),
            "the pristine scripts.ini is UTF-16LE as gpedit writes it")
        #expect(
            back.imageFiles.keys.sorted() == back.pristineFiles.keys.sorted(),
            "files left or lost: \(Set(back.imageFiles.keys).symmetricDifference(back.pristineFiles.keys).sorted().prefix(20))"
        )
        let differing = back.pristineFiles.filter {
            back.imageFiles[$0.key] != nil && back.imageFiles[$0.key] != $0.value
        }.keys.sorted()
        #expect(differing.isEmpty, "files that are not the original: \(differing)")
        #expect(!back.remedyDirectory, "C:\\Windows\\remedy is still in the image")
        #expect(
            back.pristineFiles.keys.contains { $0.hasSuffix("/scripts/startup/inventory.cmd") },
            "the pristine image has its startup script")
        try? FileManager.default.removeItem(atPath: w)
    }

    /// SYSTEM, SOFTWARE, scripts.ini and gpt.ini of both images, the SHA-256 of every regular file (lowercased path),
    /// and whether `C:\Windows\remedy` exists in `image`; one read-only launch.
    static func readBack(
        pristine: String, image: String, into dir: String
    )
        throws -> (
            pristine: String, image: String, pristineFiles: [String: String], imageFiles: [String: String],
            remedyDirectory: Bool
        )
    {
        let g = try Guestfs()
        try g.setBackend("direct")
        try g.setBackendSettings(["force_tcg"])
        for i in [pristine, image] { try g.addDrive(i, format: "qcow2", readonly: true) }
        try g.launch()
        defer { g.close() }
        let devices = try g.listDevices()
        let roots = try g.inspectOS()
        var files: [[String: String]] = []
        var remedyDirectory = false
        for (n, name) in ["pristine", "image"].enumerated() {
            let root = try #require(roots.first { $0.hasPrefix(devices[n]) }, "\(name): no Windows found")
            try g.umountAll()
            try g.mountReadOnly(root, at: "/")
            let local = dir + "/" + name
            try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
            for (path, as_) in [
                ("/Windows/System32/config/SYSTEM", "SYSTEM"), ("/Windows/System32/config/SOFTWARE", "SOFTWARE"),
                (scriptsIni, "scripts.ini"), (gptIni, "gpt.ini"),
            ] {
                try g.download(try g.caseSensitivePath(path), to: local + "/" + as_)
            }
            try g.checksumsOut("sha256", "/", to: local + ".sha256")
            var sums: [String: String] = [:]
            for l in try String(contentsOfFile: local + ".sha256", encoding: .utf8).split(separator: "\n") {
                let parts = l.split(separator: " ", maxSplits: 1)
                guard parts.count == 2 else { continue }
                var path = parts[1].trimmingCharacters(in: .whitespaces)
                if path.hasPrefix("./") { path.removeFirst(1) }
                sums[path.lowercased()] = String(parts[0])
            }
            files.append(sums)
            if n == 1 { remedyDirectory = try g.exists(try g.caseSensitivePath("/Windows") + "/remedy") }
        }
        return (dir + "/pristine", dir + "/image", files[0], files[1], remedyDirectory)
    }
}
