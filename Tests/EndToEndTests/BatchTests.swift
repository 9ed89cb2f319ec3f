import Foundation
import RemedyCore
import Testing

/// `remedy batch`: many images, shared appliances, failures isolated,
/// shards in separate processes, resumption. Part of the serialized
/// end-to-end suite.
@Suite(.serialized) struct BatchTests {

    static let expectedPlan = [
        "win-a.qcow2": "pending", "win-b.vhdx": "pending", "win-clean.qcow2": "compliant",
        "truncated.raw": "failed:hive-unreadable", "linux.img": "failed:not-windows",
        "junk.vmdk": "failed:unsupported-format",
    ]

    @Test func batchPlanReportsEveryImageAndOneBadImageNeverStopsIt() throws {
        let f = try Fixtures.get()
        let before = try fileBytes(f.batchDir + "/win-b.vhdx")
        let reportPath = f.dir + "/batch-plan.json"
        let r = try remedy(["batch", f.batchDir, "--report", reportPath, "--format", "json", "--jobs", "2"])
        #expect(r.status == 1, "\(r.stderr)")
        let printed = try RemedyJSON.decoder().decode(BatchReport.self, from: Data(r.stdout.utf8))
        let saved = try readReport(reportPath)
        #expect(printed == saved)
        #expect(saved.schema == "remedy.batch/1" && saved.mode == "plan")
        #expect(reportStatuses(saved) == Self.expectedPlan, "\(reportStatuses(saved))")
        #expect(saved.skipped.map { ($0.path as NSString).lastPathComponent } == ["README.txt"])
        let a = try #require(saved.entries.first { $0.path.hasSuffix("win-a.qcow2") })
        #expect(a.os?.product == "Windows Server 2012 R2 Datacenter" && a.format == "qcow2")
        #expect(Set(a.actions.map(\.rule)) == ["nic-dhcp", "pv-cleanup", "input-devices", "crash-settings"])
        #expect(a.properties["hw_disk_bus"] == "ide")
        #expect(saved.entries.first { $0.path.hasSuffix("linux.img") }?.error?.message.contains("Debian") == true)
        // Plain progress lines when stderr is not a terminal, one per image.
        #expect(r.stderr.components(separatedBy: "\n").filter { $0.hasPrefix("[") }.count == 6, "\(r.stderr)")
        #expect(try fileBytes(f.batchDir + "/win-b.vhdx") == before, "a plan-mode batch wrote to an image")
    }

    @Test func shardsInSeparateProcessesCoverEveryImageExactlyOnce() throws {
        let f = try Fixtures.get()
        let reports = (0..<2).map { f.dir + "/shard-\($0).json" }
        // Two processes at once: one names its shard, the other takes K from JOB_COMPLETION_INDEX as an Indexed Job does.
        nonisolated(unsafe) var results: [CommandResult?] = [nil, nil]
        let group = DispatchGroup()
        for k in 0..<2 {
            group.enter()
            DispatchQueue.global().async {
                let args = [
                    "batch", f.batchDir, "--report", reports[k], "--jobs", "1", "--shard", k == 0 ? "0/2" : "2",
                ]
                results[k] = try? remedy(args, environment: k == 1 ? ["JOB_COMPLETION_INDEX": "1"] : [:])
                group.leave()
            }
        }
        group.wait()
        for k in 0..<2 {
            #expect(
                results[k]?.status == 1 || results[k]?.status == 2, "shard \(k): \(results[k]?.stderr ?? "did not run")"
            )
        }
        let shards = try reports.map { try readReport($0) }
        #expect(shards.map(\.shard) == ["0/2", "1/2"])
        let paths = shards.map { Set($0.entries.map(\.path)) }
        #expect(paths[0].isDisjoint(with: paths[1]))
        #expect(!paths[0].isEmpty && !paths[1].isEmpty, "a shard got nothing: \(paths)")

        let merged = try remedy(["report", "merge", reports[0], reports[1]])
        #expect(merged.status == 1, "\(merged.stderr)")
        let m = try RemedyJSON.decoder().decode(BatchReport.self, from: Data(merged.stdout.utf8))
        #expect(reportStatuses(m) == Self.expectedPlan, "\(reportStatuses(m))")
        #expect(m.skipped.count == 1)
    }

    @Test func batchApplyIsolatesALockedImageAndResumeRedoesOnlyWhatIsLeft() throws {
        let f = try Fixtures.get()
        let reportPath = f.dir + "/batch-apply.json"
        let locked = f.applyDir + "/apply-2.qcow2"
        let fd = open(locked, O_RDONLY)
        #expect(flock(fd, LOCK_EX | LOCK_NB) == 0)
        let first = try remedy(["batch", f.applyDir, "--apply", "--report", reportPath])
        close(fd)
        #expect(first.status == 1, "\(first.stderr)")
        #expect(first.stdout.contains("fixed         2") && first.stdout.contains("failed        1"), "\(first.stdout)")
        let r1 = try readReport(reportPath)
        #expect(
            reportStatuses(r1) == [
                "apply-1.qcow2": "fixed", "apply-2.qcow2": "failed:image-locked", "apply-3.qcow2": "fixed",
            ])
        let runIDs = r1.entries.compactMap(\.runID)
        #expect(runIDs.count == 2)

        let second = try remedy(["batch", f.applyDir, "--apply", "--report", reportPath, "--resume"])
        #expect(second.status == 0, "\(second.stderr)")
        #expect(
            second.stderr.contains("applying 1 image") && second.stderr.contains("2 already done"), "\(second.stderr)")
        let r2 = try readReport(reportPath)
        #expect(reportStatuses(r2) == ["apply-1.qcow2": "fixed", "apply-2.qcow2": "fixed", "apply-3.qcow2": "fixed"])
        #expect(Set(r2.entries.compactMap(\.runID)).isSuperset(of: runIDs), "finished images were redone")

        // Every image is now compliant.
        let check = try remedy(["batch", f.applyDir, "--jobs", "1"])
        #expect(check.status == 0, "\(check.stderr)")
        #expect(check.stdout.contains("compliant     3"), "\(check.stdout)")
    }
}
