import ArgumentParser
import Foundation
import Logging
import RemedyCore
import Synchronization
import SystemPackage

extension Remedy {
    struct Batch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Plan (or apply) every image under a directory, in parallel, with a report.",
            discussion: """
                Images are found recursively by extension (raw img qcow2 qcow vmdk vhd vhdx vdi qed zvhd zvhd2) and by content; \
                other files are skipped with a note. A bad image is reported and the batch goes on. With --report the JSON \
                report is rewritten after every image, so an interrupted batch resumes with --resume. Ctrl-C stops starting \
                new appliances and lets running ones finish.

                Exit codes: 0 all compliant or fixed, 2 changes pending (plan) or an image needs manual work, 1 an image failed (or the batch was interrupted).
                """
        )

        @Argument(help: "Directory of images.") var directory: String
        @Flag(help: "Apply the changes (default: plan only).") var apply = false
        @Option(help: "Policy name or YAML file.") var policy: String = PolicyLoader.defaultPolicyName
        @Option(help: ArgumentHelp("Appliances at a time (default: from cores and free memory).", valueName: "n"))
        var jobs: Int?
        @Option(
            help: ArgumentHelp("Images per appliance (default: shared out over --jobs, at most 16).", valueName: "n"))
        var perAppliance: Int?
        @Option(help: ArgumentHelp("Write the JSON report here (rewritten after every image).", valueName: "file"))
        var report: String?
        @Flag(
            help:
                "Continue the batch recorded in --report: images already done are not redone (failed ones are retried)."
        ) var resume = false
        @Option(
            help: ArgumentHelp(
                "Process shard K of N (stable by path); N alone takes K from JOB_COMPLETION_INDEX.", valueName: "K/N"))
        var shard: String?
        @Option(help: "text (summary table) or json (the report on stdout).") var format: OutputFormat = .text
        @Option(
            help: ArgumentHelp(
                "With --apply: write each remediated image under this directory (same relative path); the sources are only read.",
                valueName: "dir"))
        var outputDir: String?
        @Option(
            help: ArgumentHelp(
                "Format of the images in --output-dir (default: each source's own).",
                valueName: "raw|qcow2|vmdk|vhd|vhdx|vdi|qed"))
        var outputFormat: DiskFormat?
        @OptionGroup var payloads: PayloadFlags
        @OptionGroup var appliance: ApplianceFlags

        func validate() throws {
            if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1") }
            if let perAppliance, !(1...200).contains(perAppliance) {
                throw ValidationError("--per-appliance must be 1 to 200")
            }
            if resume && report == nil {
                throw ValidationError("--resume needs --report FILE (the report to continue)")
            }
            if outputDir != nil && !apply { throw ValidationError("--output-dir needs --apply") }
        }

        func run() throws {
            let started = Date()
            var batchReport: BatchReport
            let runner: BatchRunner
            var todo: [String]
            do {
                let policy = try PolicyLoader.load(self.policy)
                let shard = try self.shard.map { try Shard.parse($0) }
                var (images, skipped) = try ImageDiscovery.scan(directory)
                if let shard {
                    images = images.filter { shard.contains(ImageDiscovery.relative($0, to: directory)) }
                    skipped = skipped.filter { shard.contains(ImageDiscovery.relative($0.path, to: directory)) }
                }
                batchReport = BatchReport(
                    mode: apply ? "apply" : "plan", directory: directory, policy: policy.reference,
                    shard: shard?.description, startedAt: started, finishedAt: nil, entries: [], skipped: skipped)
                if resume, let report {
                    let previous = try Self.load(report)
                    guard previous.mode == batchReport.mode else {
                        throw RemedyError(
                            .invalidArgument,
                            "\(report) is a \(previous.mode) report; resume it with\(previous.mode == "apply" ? "" : "out") --apply"
                        )
                    }
                    batchReport.startedAt = previous.startedAt
                    batchReport.entries = previous.entries.filter { $0.status != .failed && images.contains($0.path) }
                }
                let done = Set(batchReport.entries.map(\.path))
                todo = images.filter { !done.contains($0) }
                var options = try appliance.options()
                let jobs = self.jobs ?? BatchRunner.defaultJobs(applianceMiB: options.memoryMiB ?? 1280)
                let per = perAppliance ?? min(16, max(1, (todo.count + jobs - 1) / max(jobs, 1)))
                options.logger = .notices { message in Progress.shared.note(message) }
                var runnerOptions = BatchRunner.Options(
                    mode: apply ? .apply : .plan, jobs: jobs, perAppliance: per, appliance: options,
                    inputs: try payloads.inputs())
                if let outputDir {
                    runnerOptions.output = BatchRunner.outputs(under: outputDir, from: directory, format: outputFormat)
                }
                runner = BatchRunner(policy: policy, options: runnerOptions)
                Progress.shared.start(
                    total: todo.count, alreadyDone: batchReport.entries.count,
                    header:
                        "remedy: \(apply ? "applying" : "planning") \(todo.count) image\(todo.count == 1 ? "" : "s") under \(directory)"
                        + (shard.map { " (shard \($0))" } ?? "")
                        + " with policy \(policy.name): \(jobs) appliance\(jobs == 1 ? "" : "s") at a time, up to \(per) image\(per == 1 ? "" : "s") each"
                        + (batchReport.entries.isEmpty ? "" : "; \(batchReport.entries.count) already done"))
                if let report { try Self.write(batchReport, to: report) }
            } catch {
                throw fail(error, image: nil, format: format)
            }

            let shared = ReportBox(batchReport)
            let reportPath = report
            let interrupt = Self.onInterrupt { runner.cancel() }
            _ = runner.run(todo, onStart: { path in Progress.shared.started(path) }) { entry in
                Progress.shared.finished(entry)
                let snapshot = shared.append(entry)
                if let reportPath { try? Self.write(snapshot, to: reportPath) }
            }
            interrupt.forEach { $0.cancel() }
            batchReport = shared.finish()
            Progress.shared.end()
            printTimings()
            if let report {
                do { try Self.write(batchReport, to: report) } catch { throw fail(error, image: nil, format: format) }
            }
            switch format {
            case .text: print(Self.summary(batchReport, interrupted: runner.isCancelled), terminator: "")
            case .json: try printJSON(batchReport)
            }
            if runner.isCancelled {
                FileHandle.standardError.write(
                    Data(
                        "remedy: interrupted; \(report.map { "resume with --report \($0) --resume" } ?? "run again to finish")\n"
                            .utf8))
                throw ExitCode.failure
            }
            if batchReport.exitCode != 0 { throw ExitCode(batchReport.exitCode) }
        }

        static func load(_ path: String) throws -> BatchReport {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw RemedyError(.invalidArgument, "cannot read the report \(path)")
            }
            do {
                return try RemedyJSON.decoder().decode(BatchReport.self, from: data)
            } catch {
                throw RemedyError(.invalidArgument, "\(path) is not a remedy batch report: \(error)")
            }
        }

        /// Written to a temporary file and renamed, so a crash never leaves half a report.
        static func write(_ report: BatchReport, to path: String) throws {
            let tmp = path + ".tmp-\(getpid())"
            try RemedyJSON.encoder().encode(report).write(to: URL(fileURLWithPath: tmp))
            guard rename(tmp, path) == 0 else {
                throw RemedyError(.writeFailed, "cannot write the report \(path): \(Errno.last)")
            }
        }

        /// SIGINT/SIGTERM once: stop starting appliances. Twice: exit now.
        static func onInterrupt(_ handler: @escaping @Sendable () -> Void) -> [DispatchSourceSignal] {
            [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
                signal(sig, SIG_IGN)
                let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                nonisolated(unsafe) var count = 0
                s.setEventHandler {
                    count += 1
                    if count > 1 { Glibc.exit(130) }
                    Progress.shared.note(
                        "interrupted: no new appliances are started; the running ones finish (Ctrl-C again to stop now)"
                    )
                    handler()
                }
                s.resume()
                return s
            }
        }

        static func t(_ s: String) -> String { TerminalText.escape(s) }

        static func summary(_ r: BatchReport, interrupted: Bool) -> String {
            let seconds = (r.finishedAt ?? Date()).timeIntervalSince(r.startedAt)
            var out =
                "\nBatch \(r.mode) of \(t(r.directory))\(r.shard.map { " (shard \($0))" } ?? ""), policy \(t(r.policy.name)): "
                + "\(r.entries.count) image\(r.entries.count == 1 ? "" : "s") in \(Progress.duration(seconds))\(interrupted ? " (interrupted)" : "")\n\n"
            out += "  status        images\n"
            for s in BatchEntry.Status.allCases where r.count(s) > 0 || s == .failed {
                out += "  \(s.rawValue.padding(toLength: 13, withPad: " ", startingAt: 0)) \(r.count(s))\n"
            }
            let failed = r.entries.filter { $0.status == .failed }
            if !failed.isEmpty {
                out += "\nFailed:\n"
                for e in failed {
                    out += "  " + t("\(e.path): \(e.error?.code ?? "error"): \(e.error?.message ?? "")") + "\n"
                }
            }
            let manual = r.entries.filter { $0.status == .needsManual }
            if !manual.isEmpty {
                out += "\nNeeds manual work:\n"
                for e in manual {
                    out +=
                        "  "
                        + t(
                            "\(e.path): "
                                + e.findings.filter { $0.severity == .blocker }.map { "\($0.id): \($0.message)" }
                                .joined(separator: "; ")) + "\n"
                }
            }
            if !r.skipped.isEmpty {
                out += "\nSkipped:\n"
                for s in r.skipped { out += "  " + t("\(s.path): \(s.reason)") + "\n" }
            }
            return out
        }
    }

    struct Report: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Work with batch reports.", subcommands: [Merge.self])

        struct Merge: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract:
                    "Join the reports of a sharded batch into one (entries by path; a finished entry wins over a failed one).",
                discussion:
                    "Exit codes as for batch: 0 all compliant or fixed, 2 changes pending or manual work needed, 1 an image failed."
            )

            @Argument(help: "Shard reports.") var reports: [String]
            @Option(name: .shortAndLong, help: "Write the merged report here (default: stdout).") var output: String?

            func run() throws {
                let merged: BatchReport
                do {
                    merged = try BatchReport.merge(try reports.map { try Batch.load($0) })
                    if let output { try Batch.write(merged, to: output) } else { try printJSON(merged) }
                } catch let e as ExitCode {
                    throw e
                } catch {
                    throw fail(error, image: nil, format: .text)
                }
                if output != nil { print(Batch.summary(merged, interrupted: false), terminator: "") }
                if merged.exitCode != 0 { throw ExitCode(merged.exitCode) }
            }
        }
    }
}

/// The report being built while images finish on several threads.
final class ReportBox: Sendable {
    private let report: Mutex<BatchReport>
    init(_ report: BatchReport) { self.report = Mutex(report) }

    func append(_ entry: BatchEntry) -> BatchReport {
        report.withLock { report in
            report.entries.append(entry)
            return report
        }
    }

    func finish() -> BatchReport {
        report.withLock { report in
            report.entries.sort { $0.path < $1.path }
            report.finishedAt = Date()
            return report
        }
    }
}

/// Progress on stderr: a live line on a terminal (done/total, current image,
/// ETA), plain log lines otherwise.
final class Progress: Sendable {
    static let shared = Progress()
    private let tty = isatty(STDERR_FILENO) == 1

    private struct State {
        var total = 0, done = 0, offset = 0
        var start = Date()
        var current: [String] = []
        var counts: [BatchEntry.Status: Int] = [:]
    }

    private let state = Mutex(State())

    func start(total: Int, alreadyDone: Int, header: String) {
        state.withLock { s in
            s.total = total
            s.offset = alreadyDone
            s.start = Date()
            emit(header, s)
        }
    }

    func started(_ path: String) {
        state.withLock { s in
            s.current.append(path)
            redraw(s)
        }
    }

    func finished(_ e: BatchEntry) {
        state.withLock { s in
            s.done += 1
            s.counts[e.status, default: 0] += 1
            s.current.removeAll { $0 == e.path }
            var line = "[\(s.done)/\(s.total)] \(e.path): \(e.status.rawValue)"
            switch e.status {
            case .failed: line += " (\(e.error?.code ?? "error"): \(e.error?.message ?? ""))"
            case .pending, .fixed, .needsManual:
                line +=
                    " (\(e.changeCount) change\(e.changeCount == 1 ? "" : "s"), \(e.findings.count) finding\(e.findings.count == 1 ? "" : "s"))"
            case .compliant: break
            }
            emit(line + String(format: " in %.1f s", e.durationSeconds), s)
        }
    }

    func note(_ message: String) { state.withLock { emit("remedy: " + message, $0) } }

    func end() { state.withLock { _ in if tty { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) } } }

    /// Called with the lock held (the state is the locked one), so lines of two appliances never interleave.
    private func emit(_ line: String, _ s: State) {
        if tty { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        // paths and messages come from images
        FileHandle.standardError.write(Data((TerminalText.escape(line) + "\n").utf8))
        redraw(s)
    }

    private func redraw(_ s: State) {
        guard tty, s.total > 0 else { return }
        let elapsed = Date().timeIntervalSince(s.start)
        let eta = s.done > 0 ? Self.duration(elapsed / Double(s.done) * Double(s.total - s.done)) : "?"
        let now = s.current.first.map { FilePath($0).lastComponent?.string ?? "" } ?? ""
        let line =
            "[\(s.done)/\(s.total)] \(s.total > 0 ? s.done * 100 / s.total : 100)%  ETA \(eta)  \(now)\(s.current.count > 1 ? " +\(s.current.count - 1)" : "")"
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + TerminalText.escape(line)).utf8))
    }

    static func duration(_ s: TimeInterval) -> String {
        let t = Int(s.rounded())
        return t >= 3600
            ? "\(t / 3600)h\(String(format: "%02d", t % 3600 / 60))m"
            : t >= 60 ? "\(t / 60)m\(String(format: "%02d", t % 60))s" : "\(t)s"
    }
}

extension Converter.Target: ExpressibleByArgument {}

extension Remedy {
    struct Convert: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Convert an image to RAW or QCOW2 (qemu-img; input format from content).",
            discussion: """
                Over 128 GB the cloud imports an image only by fast import: as RAW with a bitmap file (.mf) made by the cloud's \
                own tool (its format is not published, so remedy does not make it), or as ZVHD2 (not written by remedy). \
                QCOW2 output is compressed. Exit codes: 0 converted, 1 error (no output left behind).
                """)

        @Argument(help: "The disk image.") var image: String
        @Option(help: "raw or qcow2.") var to: Converter.Target
        @Option(name: .shortAndLong, help: "Output file.") var output: String
        @Flag(help: "Replace the output if it exists.") var force = false

        func validate() throws {
            if URL(fileURLWithPath: image).standardizedFileURL == URL(fileURLWithPath: output).standardizedFileURL {
                throw ValidationError("the output must not be the input")
            }
        }

        func run() throws {
            do {
                try Converter.convert(
                    image, to: to, output: output, overwrite: force, progress: isatty(STDERR_FILENO) == 1)
            } catch {
                throw fail(error, image: image, format: .text)
            }
            print(output)
        }
    }
}
