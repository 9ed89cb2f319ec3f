import Foundation
import Guestfs
import RemedyCore
import RemedyFixtures
import Testing

/// Crash safety of apply (issue 11, item 5): remedy and its appliance killed with SIGKILL at named points
/// (`REMEDY_FAULT`, a developer hook) and at a random moment. After each, every image is the original byte for
/// byte or one that the next apply finishes; a re-plan is clean, every hive is sound (hivexregedit reads it),
/// and rollback gives back the original hives and file set although the first run never finished.
/// Few appliance launches: one batch kill leaves three images in three different states at once.
@Suite(.serialized) struct CrashSafetyTests {
    static let work = NSTemporaryDirectory() + "/remedy-crash-\(getpid())"

    static func sha256(_ path: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        p.arguments = ["-b", path]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data.prefix(64), as: UTF8.self)
    }

    static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    /// Starts remedy and kills it and its children (the appliance's qemu, qemu-img) with SIGKILL after `seconds`.
    static func killed(after seconds: Double, _ args: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: remedyExecutable())
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["REMEDY_ACCEL"] = "tcg"
        env["REMEDY_ACCEL_CACHE"] = NSTemporaryDirectory() + "/remedy-tests-accel.json"
        p.environment = env
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        Thread.sleep(forTimeInterval: seconds)
        let children = childProcesses(of: p.processIdentifier)
        kill(p.processIdentifier, SIGKILL)
        for c in children { kill(c, SIGKILL) }
        p.waitUntilExit()
        return p.terminationStatus
    }

    static func childProcesses(of parent: Int32) -> [Int32] {
        var out: [Int32] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, Int32(fields[1]) == parent {
                out.append(pid)
                out += childProcesses(of: pid)
            }
        }
        return out
    }

    /// SYSTEM and SOFTWARE of each image (read-only, one appliance), plus the listing of every regular file.
    static func readBack(
        _ images: [String], into work: String = work
    ) throws -> [(system: String, software: String, files: Set<String>)] {
        let g = try Guestfs()
        try g.setBackend("direct")
        try g.setBackendSettings(["force_tcg"])
        for i in images { try g.addDrive(i, format: try DiskFormat.detect(path: i).qemuName, readonly: true) }
        try g.launch()
        defer { g.close() }
        let devices = try g.listDevices()
        var out: [(String, String, Set<String>)] = []
        for (n, image) in images.enumerated() {
            let root = try #require(try g.inspectOS().first { $0.hasPrefix(devices[n]) }, "\(image): no Windows found")
            try g.umountAll()
            try g.mountReadOnly(root, at: "/")
            let dir = work + "/read-\(n)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try g.download(try g.caseSensitivePath("/Windows/System32/config/SYSTEM"), to: dir + "/SYSTEM")
            try g.download(try g.caseSensitivePath("/Windows/System32/config/SOFTWARE"), to: dir + "/SOFTWARE")
            // Regular files only: rollback removes the files remedy injected, not the directories it created for them
            // (they are not recorded; left empty).
            out.append(
                (
                    dir + "/SYSTEM", dir + "/SOFTWARE",
                    Set(try g.find("/").filter { (try? g.isFile("/" + $0)) == true }.map { $0.lowercased() })
                ))
        }
        return out
    }

    /// A loop device over a raw copy of `image` (root and a free loop device needed), or nil with a notice.
    static func loopDevice(copyOf image: String) -> String? {
        let raw = work + "/device.raw"
        guard getuid() == 0,
            let c = try? runProgram("/usr/bin/qemu-img", ["convert", "-O", "raw", image, raw], environment: [:]),
            c.status == 0,
            let l = try? runProgram("/usr/sbin/losetup", ["-f", "--show", raw], environment: [:]), l.status == 0
        else {
            print("CrashSafetyTests: no loop device here (not root, or none free): the block-device step is not run")
            return nil
        }
        return l.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// hivexregedit (an independent reader) exports the whole hive without an error.
    static func sound(_ hive: String) -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/hivexregedit")
        p.arguments = ["--export", hive, "\\"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }

    @Test func killedAtAnyPointTheImageIsTheOriginalOrOneApplyFinishes() throws {
        try? FileManager.default.removeItem(atPath: Self.work)
        let dir = Self.work + "/batch"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let original = try Fixtures.get().ownBase2016  // copied, never written
        let virtio = Self.work + "/virtio-win"
        try FakeVirtioWin.write(at: virtio, layout: .isoTree)
        let names = ["a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2"]
        for n in names { try FileManager.default.copyItem(atPath: original, toPath: "\(dir)/\(n)") }
        let originalSHA = try Self.sha256(original)
        func path(_ n: String) -> String { "\(dir)/\(n)" }
        func overlay(_ n: String) -> String { "\(dir)/.\(n).remedy-overlay.qcow2" }
        func marker(_ n: String) -> String { "\(dir)/.\(n).remedy-commit" }
        let inputs = ["--virtio-win", virtio]

        // 1. One batch of a, b, c killed in the commit of b (a torn commit: part of b already overwritten).
        try FileManager.default.moveItem(atPath: path("d.qcow2"), toPath: Self.work + "/d.qcow2")
        let r1 = try remedy(
            ["batch", dir, "--apply", "--jobs", "1", "--per-appliance", "3"] + inputs,
            environment: ["REMEDY_FAULT": "kill:mid-commit@2"])
        #expect(r1.status == SIGKILL, "\(r1.stderr)")
        #expect(
            try Self.sha256(path("a.qcow2")) != originalSHA && !Self.exists(overlay("a.qcow2"))
                && !Self.exists(marker("a.qcow2")), "a is committed")
        #expect(Self.exists(marker("b.qcow2")) && Self.exists(overlay("b.qcow2")), "b: marker and overlay kept")
        #expect(try Self.sha256(path("b.qcow2")) != originalSHA, "b: torn by the injected partial commit")
        #expect(
            try Self.sha256(path("c.qcow2")) == originalSHA && Self.exists(overlay("c.qcow2"))
                && !Self.exists(marker("c.qcow2")),
            "c: untouched, its overlay unmarked")
        // A plan (read-only) of b finishes its commit first; the plan is then clean.
        let planB = try remedy(["plan", path("b.qcow2")] + inputs)
        #expect(planB.status == 0, "\(planB.stdout)\(planB.stderr)")
        // The engine's notice (swift-log) reaches stderr as one plain line, as scripts match it.
        #expect(
            planB.stderr.split(separator: "\n").contains {
                $0.hasPrefix("remedy: /")
                    && $0.contains("/b.qcow2: finishing the commit of an apply that was interrupted (")
            }, "\(planB.stderr)")
        #expect(!Self.exists(marker("b.qcow2")) && !Self.exists(overlay("b.qcow2")))

        // 2. c killed in the appliance, after its first hive was replaced (in the overlay): the image is untouched.
        let r2 = try remedy(
            ["apply", path("c.qcow2")] + inputs, environment: ["REMEDY_FAULT": "kill:after-hive-write@1"])
        #expect(r2.status == SIGKILL, "\(r2.stderr)")
        #expect(
            try Self.sha256(path("c.qcow2")) == originalSHA && Self.exists(overlay("c.qcow2"))
                && !Self.exists(marker("c.qcow2")))

        // 3. d killed at a random moment of its apply (remedy and its children, as the OOM killer would).
        try FileManager.default.moveItem(atPath: Self.work + "/d.qcow2", toPath: path("d.qcow2"))
        let when = Double.random(in: 2...40)
        let r3 = try Self.killed(after: when, ["apply", path("d.qcow2")] + inputs)
        let dState =
            try Self.sha256(path("d.qcow2")) == originalSHA
            ? "original" : Self.exists(marker("d.qcow2")) ? "marked" : "applied"
        print("random kill after \(String(format: "%.1f", when)) s (status \(r3)): d is \(dState)")

        // 4. One batch apply finishes everything: c's overlay dropped and c applied, d finished either way.
        let r4 = try remedy(["batch", dir, "--apply", "--jobs", "1"] + inputs)
        #expect(r4.status == 0, "\(r4.stdout)\(r4.stderr)")
        for n in names { #expect(!Self.exists(overlay(n)) && !Self.exists(marker(n)), "\(n): leftovers") }
        let r5 = try remedy(["batch", dir, "--format", "json", "--jobs", "1"] + inputs)
        #expect(r5.status == 0, "re-plan is clean: \(r5.stdout)")

        // 5. A block device (a loop device over a raw copy), killed mid-commit: its overlay and marker live in the
        // state directory (REMEDY_STATE_DIR), not in /dev (a tmpfs a power cut empties), and the next command on the
        // same device path finishes the commit. Needs root and a free loop device; otherwise this step says so.
        let device = Self.loopDevice(copyOf: original)
        defer { if let device { _ = try? runProgram("/usr/sbin/losetup", ["-d", device], environment: [:]) } }
        if let device {
            let state = Self.work + "/state"
            let env = ["REMEDY_STATE_DIR": state]
            let dirInState = state + "/block-devices/"
            let r = try remedy(
                ["apply", device] + inputs, environment: env.merging(["REMEDY_FAULT": "kill:mid-commit"]) { $1 })
            #expect(r.status == SIGKILL, "\(r.stderr)")
            let kept = (try? FileManager.default.contentsOfDirectory(atPath: dirInState)) ?? []
            #expect(
                kept.contains { $0.hasSuffix(".remedy-commit") }
                    && kept.contains { $0.hasSuffix(".remedy-overlay.qcow2") },
                "the block device's marker and overlay are in \(dirInState): \(kept)")
            let inDev =
                (try? FileManager.default.contentsOfDirectory(atPath: "/dev"))?.filter { $0.contains(".remedy-") } ?? []
            #expect(inDev.isEmpty, "nothing of remedy's in /dev: \(inDev)")
            let plan = try remedy(["plan", device, "--format", "json"] + inputs, environment: env)
            #expect(plan.status == 0 && plan.stderr.contains("finishing the commit"), "\(plan.stderr)")
            #expect(
                ((try? FileManager.default.contentsOfDirectory(atPath: dirInState)) ?? ["?"]).isEmpty,
                "marker and overlay removed after the proven commit")
            let applied = try Self.readBack([device], into: Self.work + "/dev-applied")
            #expect(Self.sound(applied[0].system) && Self.sound(applied[0].software), "the device's hives are sound")
            #expect(applied[0].files.contains { $0.hasSuffix("/viostor.sys") }, "the device got its drivers")
            let rbd = try remedy(["rollback", device], environment: env)
            #expect(rbd.status == 0, "\(rbd.stderr)")
        }

        // 6. Rollback of b (whose first run was killed mid-commit) gives back the original hives and file set.
        let rb = try remedy(["rollback", path("b.qcow2")])
        #expect(rb.status == 0, "\(rb.stderr)")
        let back = try Self.readBack([original] + names.map(path) + (device.map { [$0] } ?? []))
        for (i, n) in (["original"] + names).enumerated() {
            #expect(Self.sound(back[i].system) && Self.sound(back[i].software), "\(n): a hive hivexregedit cannot read")
        }
        #expect(try fileBytes(back[2].system) == fileBytes(back[0].system), "b SYSTEM is the original")
        #expect(try fileBytes(back[2].software) == fileBytes(back[0].software), "b SOFTWARE is the original")
        #expect(
            back[2].files == back[0].files,
            "b: the original's files, no injected one: \(back[2].files.symmetricDifference(back[0].files).sorted().prefix(20))"
        )
        #expect(back[1].files.contains { $0.hasSuffix("/viostor.sys") }, "a got its drivers")
        if device != nil, let d = back.last {
            #expect(
                try fileBytes(d.system) == fileBytes(back[0].system)
                    && fileBytes(d.software) == fileBytes(back[0].software),
                "the block device's hives are the original after rollback")
            #expect(d.files == back[0].files, "the block device: the original's files after rollback")
        }
        try? FileManager.default.removeItem(atPath: Self.work)
    }
}
