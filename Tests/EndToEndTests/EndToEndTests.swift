import Foundation
import Guestfs
import Hivex
import RemedyCore
import RemedyFixtures
import Testing

/// Real appliance, real images: inspection, refusals, acceleration. Serialized: the DHCP image is planned by one
/// test and locked by another's rollback. (The life of an image, plan to rollback, is `ImageLifeEndToEndTests`,
/// which runs beside this suite.)
@Suite(.serialized) struct EndToEndTests {
    /// remedy's targeted inspection and libguestfs's own inspect_os, in one appliance carrying every image of the
    /// matrix, agree on each release (inspect_os runs after remedy's sessions are closed and everything unmounted).
    @Test func inspectionRecognisesEveryPhonyRelease() throws {
        let f = try Fixtures.get()
        let (appliance, sessions) = ImageSession.openMany(
            f.matrix.map(\.path), writable: false, options: Fixtures.options)
        let a = try #require(appliance)
        defer { a.close() }
        var ours: [OSFacts] = []
        var formats: [String] = []
        for result in sessions {
            let session = try result.get()
            ours.append(session.os)
            formats.append(session.imageInfo.format.rawValue)
            session.close()
        }

        let g = a.guestfs
        try g.umountAll()
        let roots = try g.inspectOS()
        #expect(roots.count == f.matrix.count)
        var found: [String: (String, Int, Int, String, String)] = [:]
        for r in roots {
            found[try g.inspectHostname(r)] = (
                try g.inspectProductName(r), try g.inspectMajorVersion(r), try g.inspectMinorVersion(r),
                try g.inspectArch(r), try g.inspectWindowsCurrentControlSet(r)
            )
        }
        for (i, m) in f.matrix.enumerated() {
            let got = try #require(found["M-\(m.release.rawValue.uppercased())"], "\(m.release) not found")
            #expect(got.0 == m.release.productName)
            #expect(
                got.1 == m.release.version.major && got.2 == m.release.version.minor, "\(m.release): \(got.1).\(got.2)")
            #expect(got.3 == m.arch.rawValue)
            #expect(got.4 == "ControlSet001")
            let os = ours[i]
            #expect(os.hostname == "M-\(m.release.rawValue.uppercased())", "\(m.release): \(os)")
            #expect(
                os.product == got.0 && os.majorVersion == got.1 && os.minorVersion == got.2
                    && os.arch.rawValue == got.3, "\(m.release): \(os)")
            #expect(os.currentControlSet == got.4)
            #expect(os.firmware == m.firmware, "\(m.release): \(os.firmware)")
            #expect(formats[i] == m.format.rawValue)
        }
    }

    @Test func rollbackOfAnUntouchedImageChangesNothing() throws {
        let f = try Fixtures.get()
        let before = try fileBytes(f.win2019Dhcp)
        let r = try remedy(["rollback", f.win2019Dhcp])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("Nothing to roll back"), "\(r.stdout)")
        #expect(try fileBytes(f.win2019Dhcp) == before)
    }

    /// A truncated SYSTEM hive: apply refuses with the image and the cause on its last line, the image is
    /// untouched, and the failed inspection leaves nothing in TMPDIR (the hive had been downloaded before it failed).
    @Test func truncatedHiveIsRefusedAndTheImageIsUntouched() throws {
        let f = try Fixtures.get()
        let before = try fileBytes(f.truncatedHive)
        let tmp = f.dir + "/private-tmp-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let r = try remedy(["apply", f.truncatedHive], environment: ["TMPDIR": tmp])
        #expect(r.status == 1)
        let line = r.stderr.split(separator: "\n").last.map(String.init) ?? ""
        #expect(line.contains(f.truncatedHive), "\(r.stderr)")
        #expect(line.lowercased().contains("hive"), "\(r.stderr)")
        #expect(try fileBytes(f.truncatedHive) == before, "a failed apply changed the image")
        let left = (FileManager.default.enumerator(atPath: tmp)?.allObjects as? [String]) ?? []
        #expect(left.isEmpty, "left in TMPDIR: \(left)")
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
    /// says why. Where /dev/kvm is absent, auto goes straight to TCG. The image is the DHCP-only one, which has
    /// nothing to do: exit 0, "No changes".
    @Test func dhcpOnlyImageHasNothingToDoAndAutoFallsBackToTCG() throws {
        let f = try Fixtures.get()
        let cache = f.dir + "/accel-cache.json"
        try? FileManager.default.removeItem(atPath: cache)
        let r = try remedy(
            ["plan", f.win2019Dhcp, "--accel", "auto", "--kvm-timeout", "0.5"],
            environment: ["REMEDY_ACCEL_CACHE": cache])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("No changes"), "\(r.stdout)")
        #expect(r.stdout.contains("Windows Server 2019"), "\(r.stdout)")
        if Appliance.kvmAvailable() {
            #expect(r.stderr.contains("falling back to TCG"), "\(r.stderr)")
            let saved = try json(String(decoding: fileBytes(cache), as: UTF8.self))
            #expect(saved["kvmBoots"] as? Bool == false)
            let again = try remedy(
                ["plan", f.win2019Dhcp, "--accel", "auto"], environment: ["REMEDY_ACCEL_CACHE": cache])
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
            _ = try Appliance.launch(
                drives: [Drive(path: "/dev/null", format: "raw", readonly: true)], options: options)
            Issue.record("an appliance started under TCG in less than a second")
        } catch let e as RemedyError {
            #expect(e.code == .applianceTimeout, "\(e)")
            #expect(e.message.contains("did not start within 1.0 s"), "\(e)")
        }
        #expect(Date().timeIntervalSince(start) < 30)
    }
}
