import Foundation
import RemedyCore
import RemedyFixtures
import Testing

/// Issue 12 through the `remedy` binary, on inputs of their own (three small images of the shared build that no
/// other suite touches):
/// - item 8: a host file name with terminal escapes reaches neither `remedy: error:` nor the batch progress and
///   summary raw (no appliance: the file is refused before any launch);
/// - item 12: a batch moves on when an image makes an appliance call hang: that image fails with
///   `appliance-timeout`, the others of its appliance are planned (three batch launches).
@Suite(.serialized) struct HostileBatchEndToEndTests {
    static let work = NSTemporaryDirectory() + "/remedy-hostile-batch-\(getpid())"
    static let escapes = "\u{1B}[2J\u{1B}]0;owned\u{07}"
    static let controls: [Unicode.Scalar] = ["\u{1B}", "\u{07}", "\u{9B}"]

    func raw(_ text: String) -> [Unicode.Scalar] { Self.controls.filter { text.unicodeScalars.contains($0) } }

    @Test func escapesInFileNamesNeverReachTheTerminal() throws {
        let dir = Self.work + "/escapes"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let name = "x\(Self.escapes)\nAll checks passed.qcow2"
        let path = dir + "/" + name
        #expect(
            FileManager.default.createFile(
                atPath: path, contents: Data(String(repeating: "not a disk image\n", count: 256).utf8)))

        let plan = try remedy(["plan", path])
        #expect(plan.status == 1, "\(plan.stderr)")
        #expect(plan.stderr.contains("remedy: error:") && plan.stderr.contains("\\u{1B}[2J"), "\(plan.stderr)")
        #expect(
            raw(plan.stdout + plan.stderr).isEmpty,
            "control characters reached the terminal: \(plan.stderr.debugDescription)")
        #expect(!plan.stderr.split(separator: "\n").contains { $0.hasPrefix("All checks passed") })

        // The batch: progress lines on stderr, the summary on stdout; JSON keeps the name, escaped the JSON way.
        for format in ["text", "json"] {
            let batch = try remedy(["batch", dir, "--format", format, "--jobs", "1"])
            #expect(batch.status == 1, "\(format): \(batch.stderr)")
            #expect(
                raw(batch.stdout + batch.stderr).isEmpty,
                "\(format): control characters reached the terminal: \(batch.stdout.debugDescription) \(batch.stderr.debugDescription)"
            )
            #expect(
                !(batch.stdout + "\n" + batch.stderr).split(separator: "\n").contains {
                    $0.hasPrefix("All checks passed")
                }, "\(format)")
            if format == "text" {
                #expect(batch.stdout.contains("\\u{1B}[2J"), "the summary should show the escape: \(batch.stdout)")
            } else {
                let report = try RemedyJSON.decoder().decode(BatchReport.self, from: Data(batch.stdout.utf8))
                #expect(report.entries.map(\.path) == [path])
            }
        }
    }

    @Test func aBatchMovesOnWhenAnImageMakesACallHang() throws {
        let dir = try Fixtures.get().hangDir  // a, b and c.qcow2, this test's alone
        // b.qcow2's plan makes the appliance sleep (REMEDY_FAULT, the developer hook), as a hostile image could make a
        // call hang; every call has 30 s. One appliance for the three: b's hang stops it, c gets an appliance of its
        // own, and b, alone again, hangs again and fails.
        let started = Date()
        let r = try remedy(
            ["batch", dir, "--format", "json", "--jobs", "1", "--per-appliance", "3"],
            environment: ["REMEDY_FAULT": "hang:plan:b.qcow2", "REMEDY_CALL_TIMEOUT": "30"])
        let seconds = Date().timeIntervalSince(started)
        #expect(r.status == 1, "\(r.stderr)")
        let report = try RemedyJSON.decoder().decode(BatchReport.self, from: Data(r.stdout.utf8))
        var byName: [String: BatchEntry] = [:]
        for e in report.entries { byName[(e.path as NSString).lastPathComponent] = e }
        #expect(Set(byName.keys) == ["a.qcow2", "b.qcow2", "c.qcow2"], "\(report.entries.map(\.path))")
        #expect(
            byName["b.qcow2"]?.status == .failed && byName["b.qcow2"]?.error?.code == "appliance-timeout",
            "\(String(describing: byName["b.qcow2"]))")
        for n in ["a.qcow2", "c.qcow2"] {
            #expect(
                byName[n]?.status != .failed && byName[n]?.error == nil && byName[n]?.os != nil,
                "\(n): \(String(describing: byName[n]))")
        }
        #expect(seconds < 600, "the batch took \(seconds) s")
        print("batch with a hanging image: \(Int(seconds)) s")
    }
}
