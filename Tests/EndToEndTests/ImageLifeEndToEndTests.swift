import Foundation
import Guestfs
import Hivex
import RemedyCore
import RemedyFixtures
import Testing

/// The life of an image through the `remedy` binary: plan, apply exactly that, the next plan clean, rollback to the
/// original bytes (a Server 2016 with static NICs, and a Server 2008 R2 with every broken state remedy knows).
/// Serialized: two tests use the Server 2016 image. Split from `EndToEndTests` so that the two run side by side.
@Suite(.serialized) struct ImageLifeEndToEndTests {
    /// `remedy plan` of win2016Static before anything writes to it, run once for the two tests that read it (and
    /// saved with `--out` for apply's `--plan`), with whether the image file was the same before and after it.
    static let win2016Plan: Result<(result: CommandResult, unchanged: Bool), any Error> = Result {
        let f = try Fixtures.get()
        let before = try fileBytes(f.win2016Static)
        let r = try remedy(["plan", f.win2016Static, "--format", "json", "--out", f.dir + "/saved-plan.json"])
        return (r, try fileBytes(f.win2016Static) == before)
    }

    @Test func planListsBothStaticInterfacesInBothControlSetsAndExits2() throws {
        let (r, unchanged) = try Self.win2016Plan.get()
        #expect(r.status == 2, "\(r.stderr)")
        let doc = try json(r.stdout)
        #expect(doc["schema"] as? String == "remedy.plan/1")
        let os = try #require(doc["os"] as? [String: Any])
        #expect(os["product"] as? String == "Windows Server 2016 Datacenter")
        #expect(os["majorVersion"] as? Int == 10)
        #expect(os["arch"] as? String == "x86_64")
        #expect(os["currentControlSet"] as? String == "ControlSet001")
        #expect(
            (os["controlSets"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == [
                "ControlSet001", "ControlSet002",
            ])
        let actions = try #require(doc["actions"] as? [[String: Any]]).filter { $0["rule"] as? String == "nic-dhcp" }
        let keys = actions.compactMap { ($0["changes"] as? [[String: Any]])?.first?["key"] as? String }
        for cs in ["ControlSet001", "ControlSet002"] {
            for guid in [Fixtures.guidA, Fixtures.guidB] {
                #expect(
                    keys.contains("\(cs)\\Services\\Tcpip\\Parameters\\Interfaces\\\(guid)"),
                    "\(cs) \(guid) missing from \(keys)")
            }
        }
        #expect(actions.count == 4)
        #expect(unchanged, "plan wrote to the image")
    }

    @Test func applyDoesExactlyThePlanAndTheNextPlanIsClean() throws {
        let f = try Fixtures.get()
        let planned = try Self.win2016Plan.get().result
        #expect(planned.status == 2, "\(planned.stderr)")
        let plan = try RemedyJSON.decoder().decode(Plan.self, from: Data(planned.stdout.utf8))

        let applied = try remedy(["apply", f.win2016Static, "--format", "json", "--plan", f.dir + "/saved-plan.json"])
        // Exit 2 when blocking findings remain after the changes (as batch's needs-manual), else 0.
        #expect(applied.status == (plan.blockers.isEmpty ? 0 : 2), "\(applied.stderr)")
        let report = try RemedyJSON.decoder().decode(ApplyReport.self, from: Data(applied.stdout.utf8))
        #expect(report.plan == plan, "apply did not do exactly what plan showed")
        #expect(report.backups["SYSTEM"]?.hasPrefix("/Windows/remedy/backup/") == true)
        #expect(report.record?.hasPrefix("/Windows/remedy/log/") == true)

        // Read the result back from the image, and the backup and record left in it.
        let session = try ImageSession.open(image: f.win2016Static, writable: false, options: Fixtures.options)
        defer { session.close() }
        let policy = try PolicyLoader.load("huawei-ims")
        #expect(!(try session.plan(policy: policy)).hasChanges)
        let facts = try session.facts(
            for: ["ControlSet001", "ControlSet002"].map {
                RegistryRequirement(.system, RegistryPath("\($0)\\Services\\Tcpip\\Parameters\\Interfaces"), depth: 1)
            })
        for cs in ["ControlSet001", "ControlSet002"] {
            for guid in [Fixtures.guidA, Fixtures.guidB] {
                let k = try #require(
                    facts.registry.key(.system, RegistryPath("\(cs)\\Services\\Tcpip\\Parameters\\Interfaces\\\(guid)"))
                )
                #expect(k.value("EnableDHCP") == .dword(1))
                #expect(k.value("IPAddress") == .multiString(["0.0.0.0"]))
                #expect(k.value("SubnetMask") == .multiString(["0.0.0.0"]))
                #expect(k.value("NameServer") == .string(""))
                #expect(k.value("RegistrationEnabled") == .dword(1), "unrelated value lost")
            }
        }
        let g = session.appliance.guestfs
        // The SYSTEM backup is the patch that undoes the run: the original's bytes of the pages written, and the
        // original value among them (REG_MULTI_SZ "10.1.2.10" in UTF-16).
        let backup = try #require(report.backups["SYSTEM"])
        let kept = try g.readFile(backup)
        #expect(kept.starts(with: Array("remedy-hive-patch 1\n".utf8)), "not a patch: \(kept.prefix(32))")
        let utf16 = Array("10.1.2.10".utf16).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        #expect(kept.count < 1_000_000 && kept.firstRange(of: utf16) != nil, "\(kept.count) bytes")
        #expect(try g.isFile(try #require(report.record)))
        #expect(
            try g.ls("/Windows/System32/config").filter { $0.contains("remedy") }.isEmpty, "temporary hive left behind")
    }

    /// The whole life of a broken image: plan lists every fix, apply makes
    /// exactly those in one launch, the next plan is clean, rollback puts
    /// back the original hives byte for byte and removes remedy's directory.
    /// Read back in one appliance with host-side copies taken before and after apply.
    @Test func brokenImageIsPlannedAppliedAndRolledBack() throws {
        let f = try Fixtures.get()
        let image = f.win2008r2Broken
        let planned = try remedy(["plan", image, "--format", "json"])
        #expect(planned.status == 2, "\(planned.stderr)")
        let plan = try RemedyJSON.decoder().decode(Plan.self, from: Data(planned.stdout.utf8))
        var perRule: [String: Int] = [:]
        for a in plan.actions { perRule[a.rule, default: 0] += 1 }
        // Per control set (2): NIC A; 14 PV services; 5 class filter lists; 3 IDE services + 7 CriticalDeviceDatabase entries;
        // AutoReboot. Once: the device-install restrictions in SOFTWARE.
        #expect(
            perRule == [
                "nic-dhcp": 2, "pv-cleanup": 28, "input-devices": 10, "ide-boot": 20, "crash-settings": 2,
                "driver-restrictions": 1,
            ],
            "\(perRule)")
        #expect(plan.findings.filter { $0.id == "old-tools-installed" }.count == 4)
        #expect(plan.properties["hw_disk_bus"] == "ide" && plan.properties["hw_firmware_type"] == "bios")

        // Copies of the image before apply and after it (host only: qemu-img), read back with the rolled-back image
        // at the end, in one appliance.
        let pre = f.dir + "/broken-pre.qcow2", post = f.dir + "/broken-post.qcow2"
        try convertCopy(image, to: pre)

        let applied = try remedy(["apply", image, "--format", "json"])
        #expect(applied.status == (plan.blockers.isEmpty ? 0 : 2), "\(applied.stderr)")
        let report = try RemedyJSON.decoder().decode(ApplyReport.self, from: Data(applied.stdout.utf8))
        #expect(report.plan.sameChanges(as: plan), "apply did not do exactly what plan showed")
        #expect(Set(report.backups.keys) == ["SYSTEM", "SOFTWARE"])
        try convertCopy(image, to: post)

        let dry = try remedy(["rollback", image, "--dry-run", "--format", "json"])
        #expect(dry.status == 0, "\(dry.stderr)")
        let dryReport = try RemedyJSON.decoder().decode(RollbackReport.self, from: Data(dry.stdout.utf8))
        #expect(dryReport.runs == [report.runID] && dryReport.restored == report.backups)

        let rolled = try remedy(["rollback", image])
        #expect(rolled.status == 0, "\(rolled.stderr)")
        #expect(rolled.stdout.contains("Rolled back"), "\(rolled.stdout)")

        // Before apply: the original hives, and the same plan computed in-process. After apply: nothing left to do.
        // After rollback: the original hives byte for byte, no remedy directory, the same plan again.
        let (appliance, sessions) = ImageSession.openMany(
            [pre, post, image], writable: false, options: Fixtures.options)
        let a = try #require(appliance)
        defer { a.close() }
        let (before, after, back) = (try sessions[0].get(), try sessions[1].get(), try sessions[2].get())
        defer { for s in [before, after, back] { s.close() } }
        let policy = try PolicyLoader.load("huawei-ims")
        #expect(try before.plan(policy: policy).sameChanges(as: plan))
        #expect(try !after.plan(policy: policy).hasChanges, "the plan after apply is not clean")
        // Inspection read the clean hives in place; these are downloaded now, each session's own.
        let originals = try before.localHives([.system, .software]),
            restored = try back.localHives([.system, .software])
        #expect(Set(originals.keys) == [.system, .software])
        for (hive, local) in originals {
            #expect(
                try fileBytes(try #require(restored[hive])) == fileBytes(local),
                "\(hive.rawValue) is not the original after rollback")
        }
        #expect(
            try back.plan(policy: policy).sameChanges(as: plan),
            "after rollback the image should need the same plan again")
        let g = a.guestfs
        try g.umountAll()
        try g.mountReadOnly(try #require(back.volume.filesystems.first { $0.windows }?.device), at: "/")
        #expect(try !g.exists("/Windows/remedy"), "remedy's directory is still in the image")
        try g.umountAll()
    }

    /// A host-side copy of an image (qemu-img convert to qcow2), for reading it back later beside others.
    func convertCopy(_ image: String, to copy: String) throws {
        try? FileManager.default.removeItem(atPath: copy)
        let r = try runProgram(
            "/usr/bin/qemu-img", ["convert", "-O", "qcow2", image, copy],
            environment: ProcessInfo.processInfo.environment)
        #expect(r.status == 0, "\(r.stderr)")
    }
}
