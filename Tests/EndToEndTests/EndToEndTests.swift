import Foundation
import Guestfs
import Hivex
import RemedyCore
import RemedyFixtures
import Testing

/// Real appliance, real images. Serialized: each test launches at most one
/// appliance, and TCG launches are slow on CI.
@Suite(.serialized) struct EndToEndTests {
    @Test func inspectionRecognisesEveryPhonyRelease() throws {
        let f = try Fixtures.get()
        let g = try Guestfs()
        try g.setBackend("direct")
        try g.setBackendSettings(["force_tcg"])
        for m in f.matrix { try g.addDrive(m.path, format: m.format.qemuName, readonly: true) }
        try g.launch()
        defer { g.close() }
        let roots = try g.inspectOS()
        #expect(roots.count == f.matrix.count)
        var found: [String: (String, Int, Int, String, String)] = [:]
        for r in roots {
            found[try g.inspectHostname(r)] = (try g.inspectProductName(r), try g.inspectMajorVersion(r), try g.inspectMinorVersion(r),
                                                try g.inspectArch(r), try g.inspectWindowsCurrentControlSet(r))
        }
        for m in f.matrix {
            let got = try #require(found["M-\(m.release.rawValue.uppercased())"], "\(m.release) not found")
            #expect(got.0 == m.release.productName)
            #expect(got.1 == m.release.version.major && got.2 == m.release.version.minor, "\(m.release): \(got.1).\(got.2)")
            #expect(got.3 == m.arch.rawValue)
            #expect(got.4 == "ControlSet001")
        }

        // remedy's targeted inspection, all images in one appliance, agrees with libguestfs's inspect_os.
        let (appliance, sessions) = ImageSession.openMany(f.matrix.map(\.path), writable: false, options: Fixtures.options)
        defer { appliance?.close() }
        #expect(appliance != nil)
        for (m, result) in zip(f.matrix, sessions) {
            let session = try result.get()
            defer { session.close() }
            let os = session.os
            let lib = try #require(found[os.hostname ?? ""], "\(m.release): hostname \(os.hostname ?? "none") not found by inspect_os")
            #expect(os.product == lib.0 && os.majorVersion == lib.1 && os.minorVersion == lib.2 && os.arch == lib.3, "\(m.release): \(os)")
            #expect(os.currentControlSet == lib.4)
            #expect(os.firmware == m.firmware.rawValue, "\(m.release): \(os.firmware)")
            #expect(session.imageInfo.format == m.format.rawValue)
        }
    }

    @Test func planListsBothStaticInterfacesInBothControlSetsAndExits2() throws {
        let f = try Fixtures.get()
        let before = try fileBytes(f.win2016Static)
        let r = try remedy(["plan", f.win2016Static, "--format", "json"])
        #expect(r.status == 2, "\(r.stderr)")
        let doc = try json(r.stdout)
        #expect(doc["schema"] as? String == "remedy.plan/1")
        let os = try #require(doc["os"] as? [String: Any])
        #expect(os["product"] as? String == "Windows Server 2016 Datacenter")
        #expect(os["majorVersion"] as? Int == 10)
        #expect(os["arch"] as? String == "x86_64")
        #expect(os["currentControlSet"] as? String == "ControlSet001")
        #expect((os["controlSets"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == ["ControlSet001", "ControlSet002"])
        let actions = try #require(doc["actions"] as? [[String: Any]]).filter { $0["rule"] as? String == "nic-dhcp" }
        let keys = actions.compactMap { ($0["changes"] as? [[String: Any]])?.first?["key"] as? String }
        for cs in ["ControlSet001", "ControlSet002"] {
            for guid in [Fixtures.guidA, Fixtures.guidB] {
                #expect(keys.contains("\(cs)\\Services\\Tcpip\\Parameters\\Interfaces\\\(guid)"), "\(cs) \(guid) missing from \(keys)")
            }
        }
        #expect(actions.count == 4)
        #expect(try fileBytes(f.win2016Static) == before, "plan wrote to the image")
    }

    @Test func applyDoesExactlyThePlanAndTheNextPlanIsClean() throws {
        let f = try Fixtures.get()
        let planned = try remedy(["plan", f.win2016Static, "--format", "json", "--out", f.dir + "/saved-plan.json"])
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
        let facts = try session.facts(for: ["ControlSet001", "ControlSet002"].map {
            RegistryRequirement(.system, RegistryPath("\($0)\\Services\\Tcpip\\Parameters\\Interfaces"), depth: 1)
        })
        for cs in ["ControlSet001", "ControlSet002"] {
            for guid in [Fixtures.guidA, Fixtures.guidB] {
                let k = try #require(facts.registry.key(.system, RegistryPath("\(cs)\\Services\\Tcpip\\Parameters\\Interfaces\\\(guid)")))
                #expect(k.value("EnableDHCP") == .dword(1))
                #expect(k.value("IPAddress") == .multiString(["0.0.0.0"]))
                #expect(k.value("SubnetMask") == .multiString(["0.0.0.0"]))
                #expect(k.value("NameServer") == .string(""))
                #expect(k.value("RegistrationEnabled") == .dword(1), "unrelated value lost")
            }
        }
        let g = session.appliance.guestfs
        let backup = try #require(report.backups["SYSTEM"])
        try g.download(backup, to: f.dir + "/backup-SYSTEM")
        let original = try Hive(path: f.dir + "/backup-SYSTEM")
        let node = try #require(try original.node(at: "ControlSet002\\Services\\Tcpip\\Parameters\\Interfaces\\\(Fixtures.guidA)"))
        #expect(try original.value(of: node, named: "IPAddress") == .multiString(["10.1.2.10"]))
        #expect(try g.isFile(try #require(report.record)))
        #expect(try g.ls("/Windows/System32/config").filter { $0.contains("remedy") }.isEmpty, "temporary hive left behind")

        // And the CLI agrees: exit 0, no actions.
        let again = try remedy(["plan", f.win2016Static, "--format", "json"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect((try json(again.stdout)["actions"] as? [Any])?.isEmpty == true)
    }

    @Test func dhcpOnlyImageHasNothingToDo() throws {
        let f = try Fixtures.get()
        let r = try remedy(["plan", f.win2019Dhcp])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("No changes"))
        #expect(r.stdout.contains("Windows Server 2019"))
    }

    /// The whole life of a broken image: plan lists every fix, apply makes
    /// exactly those in one launch, the next plan is clean, rollback puts
    /// back the original hives byte for byte and removes remedy's directory.
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
        #expect(perRule == ["nic-dhcp": 2, "pv-cleanup": 28, "input-devices": 10, "ide-boot": 20, "crash-settings": 2, "driver-restrictions": 1],
                "\(perRule)")
        #expect(plan.findings.filter { $0.id == "old-tools-installed" }.count == 4)
        #expect(plan.properties["hw_disk_bus"] == "ide" && plan.properties["hw_firmware_type"] == "bios")

        // The original hives, as the image holds them now; and the same plan computed in-process.
        var originals: [HiveName: Data] = [:]
        do {
            let session = try ImageSession.open(image: image, writable: false, options: Fixtures.options)
            defer { session.close() }
            for (hive, local) in session.localHives { originals[hive] = try fileBytes(local) }
            #expect(try session.plan(policy: PolicyLoader.load("huawei-ims")).sameChanges(as: plan))
        }
        #expect(Set(originals.keys) == [.system, .software])

        let applied = try remedy(["apply", image, "--format", "json"])
        #expect(applied.status == (plan.blockers.isEmpty ? 0 : 2), "\(applied.stderr)")
        let report = try RemedyJSON.decoder().decode(ApplyReport.self, from: Data(applied.stdout.utf8))
        #expect(report.plan.sameChanges(as: plan), "apply did not do exactly what plan showed")
        #expect(Set(report.backups.keys) == ["SYSTEM", "SOFTWARE"])

        let clean = try remedy(["plan", image, "--format", "json"])
        #expect(clean.status == 0, "\(clean.stderr)")
        #expect((try json(clean.stdout)["actions"] as? [Any])?.isEmpty == true)

        let dry = try remedy(["rollback", image, "--dry-run", "--format", "json"])
        #expect(dry.status == 0, "\(dry.stderr)")
        let dryReport = try RemedyJSON.decoder().decode(RollbackReport.self, from: Data(dry.stdout.utf8))
        #expect(dryReport.runs == [report.runID] && dryReport.restored == report.backups)

        let rolled = try remedy(["rollback", image])
        #expect(rolled.status == 0, "\(rolled.stderr)")
        #expect(rolled.stdout.contains("Rolled back"), "\(rolled.stdout)")

        let session = try ImageSession.open(image: image, writable: false, options: Fixtures.options)
        defer { session.close() }
        for (hive, bytes) in originals {
            #expect(try fileBytes(try #require(session.localHives[hive])) == bytes, "\(hive.rawValue) is not the original after rollback")
        }
        #expect(try !session.appliance.guestfs.exists("/Windows/remedy"), "remedy's directory is still in the image")
        #expect(try session.plan(policy: PolicyLoader.load("huawei-ims")).sameChanges(as: plan), "after rollback the image should need the same plan again")
    }

    @Test func rollbackOfAnUntouchedImageChangesNothing() throws {
        let f = try Fixtures.get()
        let before = try fileBytes(f.win2019Dhcp)
        let r = try remedy(["rollback", f.win2019Dhcp])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("Nothing to roll back"), "\(r.stdout)")
        #expect(try fileBytes(f.win2019Dhcp) == before)
    }

    @Test func truncatedHiveIsRefusedAndTheImageIsUntouched() throws {
        let f = try Fixtures.get()
        let before = try fileBytes(f.truncatedHive)
        let r = try remedy(["apply", f.truncatedHive])
        #expect(r.status == 1)
        let line = r.stderr.split(separator: "\n").last.map(String.init) ?? ""
        #expect(line.contains(f.truncatedHive), "\(r.stderr)")
        #expect(line.lowercased().contains("hive"), "\(r.stderr)")
        #expect(try fileBytes(f.truncatedHive) == before, "a failed apply changed the image")
    }

    @Test func dataDiskHasNoOperatingSystem() throws {
        let f = try Fixtures.get()
        let before = try fileBytes(f.dataDisk)
        let r = try remedy(["plan", f.dataDisk, "--format", "json"])
        #expect(r.status == 1)
        #expect(r.stderr.contains(f.dataDisk) && r.stderr.contains("no operating system"), "\(r.stderr)")
        #expect(try json(r.stdout)["code"] as? String == "no-operating-system")
        #expect(try fileBytes(f.dataDisk) == before)
    }

    @Test func linuxIsNotWindows() throws {
        let f = try Fixtures.get()
        let before = try fileBytes(f.linux)
        let r = try remedy(["apply", f.linux])
        #expect(r.status == 1)
        #expect(r.stderr.contains(f.linux), "\(r.stderr)")
        #expect(r.stderr.contains("not a Windows image") || r.stderr.contains("no operating system"), "\(r.stderr)")
        #expect(try fileBytes(f.linux) == before)
    }

    @Test func garbageFileFailsFastWithoutAnAppliance() throws {
        let f = try Fixtures.get()
        let before = try fileBytes(f.garbage)
        let start = Date()
        let r = try remedy(["apply", f.garbage])
        #expect(r.status == 1)
        #expect(r.stderr.contains(f.garbage) && r.stderr.contains("not a disk image"), "\(r.stderr)")
        #expect(Date().timeIntervalSince(start) < 5, "an appliance was launched for a file that is not a disk")
        #expect(try fileBytes(f.garbage) == before)
        let missing = try remedy(["plan", f.dir + "/does-not-exist.qcow2"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("does-not-exist.qcow2"))
    }

    /// `auto` with a KVM deadline no appliance can meet: the watchdog must kill the
    /// KVM attempt (or qemu fails at once, as it does on some hosts), remedy falls
    /// back to TCG, says so, and remembers it; the next run goes straight to TCG and
    /// says why. Where /dev/kvm is absent, auto goes straight to TCG.
    @Test func autoFallsBackToTCGWhenKVMDoesNotBootInTime() throws {
        let f = try Fixtures.get()
        let cache = f.dir + "/accel-cache.json"
        try? FileManager.default.removeItem(atPath: cache)
        let r = try remedy(["plan", f.win2019Dhcp, "--accel", "auto", "--kvm-timeout", "0.5"],
                           environment: ["REMEDY_ACCEL_CACHE": cache])
        #expect(r.status == 0, "\(r.stderr)")
        if Appliance.kvmAvailable() {
            #expect(r.stderr.contains("falling back to TCG"), "\(r.stderr)")
            let saved = try json(String(decoding: fileBytes(cache), as: UTF8.self))
            #expect(saved["kvmBoots"] as? Bool == false)
            let again = try remedy(["plan", f.win2019Dhcp, "--accel", "auto"], environment: ["REMEDY_ACCEL_CACHE": cache])
            #expect(again.status == 0, "\(again.stderr)")
            #expect(again.stderr.contains("using TCG"), "\(again.stderr)")
        } else {
            #expect(!FileManager.default.fileExists(atPath: cache))
        }
    }

    /// The watchdog itself: a launch that cannot finish in time is killed and
    /// reported, never left hanging.
    @Test func launchPastItsDeadlineIsStoppedNotHung() throws {
        var options = Fixtures.options
        options.launchTimeout = 1
        let start = Date()
        do {
            _ = try Appliance.launch(drives: [Drive(path: "/dev/null", format: "raw", readonly: true)], options: options)
            Issue.record("an appliance started under TCG in less than a second")
        } catch let e as RemedyError {
            #expect(e.code == .applianceTimeout, "\(e)")
            #expect(e.message.contains("did not start within 1.0 s"), "\(e)")
        }
        #expect(Date().timeIntervalSince(start) < 30)
    }
}
