import ArgumentParser
import Foundation
import RegistryFormat
import RemedyCore

extension Remedy {
    struct HiveCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "hive",
            abstract: "Check a registry hive file, or recover a dirty one from its transaction logs.",
            subcommands: [Check.self, Recover.self])

        /// `FILE.LOG`, `FILE.LOG1`, `FILE.LOG2` beside the hive (any case).
        static func logs(beside file: String) -> [(name: String, bytes: [UInt8])] {
            let url = URL(fileURLWithPath: file)
            let dir = url.deletingLastPathComponent().path
            let base = url.lastPathComponent.lowercased()
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
                .filter { ["\(base).log", "\(base).log1", "\(base).log2"].contains($0.lowercased()) }.sorted()
            return names.compactMap { n in
                (try? HostFile.read(dir + "/" + n, followLinks: true, limit: RegistryLimits.maxLogFile)).map { (n, $0) }
            }
        }

        static func read(_ file: String) throws -> [UInt8] {
            // Bounded: no real hive is larger (a FIFO or device is refused, not waited on).
            do { return try HostFile.read(file, followLinks: true, limit: RegistryLimits.maxHiveFile) } catch {
                throw RemedyError(.imageNotFound, "\(error)")
            }
        }

        struct Check: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Base block, checksum, dirty state, transaction logs found, structural problems.",
                discussion:
                    "Exit codes: 0 clean and sound, 2 dirty but recoverable from its logs, 1 damaged or unrecoverable.")

            @Argument(help: "A hive file (its .LOG/.LOG1/.LOG2 are looked for beside it).") var file: String
            @Option(help: "text or json.") var format: OutputFormat = .text

            struct Report: Encodable {
                var schema = "remedy.hive-check/1"
                var file: String
                var primarySequence: UInt32, secondarySequence: UInt32
                var checksum: String, expectedChecksum: String
                var dirty: Bool
                var hiveBinsSize: UInt32
                var bins: Int
                var problems: [String]
                var logs: [Log]
                var recoverable: Bool?
                var recovery: [String]
                struct Log: Encodable {
                    var name: String, format: String?, valid: Bool, sequence: UInt32?, entries: Int, note: String?
                }
            }

            func run() throws {
                let report: Report
                do {
                    let bytes = try HiveCommand.read(file)
                    let check = try HiveCheck(bytes)
                    let logs = HiveCommand.logs(beside: file)
                    var out = Report(
                        file: file, primarySequence: check.base.primarySequence,
                        secondarySequence: check.base.secondarySequence,
                        checksum: hex(check.base.storedChecksum), expectedChecksum: hex(check.base.expectedChecksum),
                        dirty: check.isDirty, hiveBinsSize: check.base.hiveBinsSize, bins: check.bins,
                        problems: check.problems, logs: [], recoverable: nil, recovery: [])
                    for (name, data) in logs {
                        if let log = try? TransactionLog(name: name, bytes: data) {
                            out.logs.append(
                                .init(
                                    name: name, format: log.format.rawValue, valid: log.isValid,
                                    sequence: log.base.primarySequence,
                                    entries: log.format == .new ? log.entries.count : log.dirtyPages.count,
                                    note: log.stoppedBecause))
                        } else {
                            out.logs.append(
                                .init(
                                    name: name, format: nil, valid: false, sequence: nil, entries: 0,
                                    note: data.isEmpty ? "empty" : "not a transaction log"))
                        }
                    }
                    if check.isDirty {
                        do {
                            let r = try HiveRecovery.recover(primary: bytes, logs: logs)
                            out.recoverable = true
                            out.recovery = r.applied
                        } catch let e as RegfError {
                            out.recoverable = false
                            out.recovery = [e.message]
                        }
                    }
                    report = out
                } catch let e as RegfError {
                    throw fail(RemedyError(.hiveUnreadable, "\(file): \(e.message)"), image: nil, format: format)
                } catch {
                    throw fail(error, image: nil, format: format)
                }
                switch format {
                case .json: try printJSON(report)
                case .text:
                    print("Hive:      \(TerminalText.escape(file))")
                    print(
                        "Sequence:  \(report.primarySequence) / \(report.secondarySequence)\(report.primarySequence == report.secondarySequence ? "" : " (a write did not finish)")"
                    )
                    print(
                        "Checksum:  \(report.checksum)\(report.checksum == report.expectedChecksum ? " (valid)" : " (invalid: content calls for \(report.expectedChecksum))")"
                    )
                    print("Bins:      \(report.bins) bins, \(report.hiveBinsSize) bytes")
                    print(
                        "State:     \(report.dirty ? "DIRTY: Windows would replay the logs at the next load" : "clean")"
                    )
                    for l in report.logs {
                        print(
                            "Log:       \(TerminalText.escape(l.name)): \(l.format.map { "\($0) format, " } ?? "")\(l.valid ? "valid" : "unusable"), \(l.entries) \(l.format == "old" ? "dirty pages" : "entries")\(l.sequence.map { ", sequence \($0)" } ?? "")\(l.note.map { " (\($0))" } ?? "")"
                        )
                    }
                    if report.logs.isEmpty { print("Logs:      none beside the hive") }
                    for p in report.problems { print("Problem:   \(p)") }
                    if let ok = report.recoverable {
                        print(
                            ok
                                ? "Recovery:  possible: \(report.recovery.joined(separator: "; "))"
                                : "Recovery:  impossible: \(report.recovery.joined(separator: "; "))")
                    }
                }
                // A dirty hive's checksum and sizes are expected to be off until its logs are replayed.
                if report.recoverable == false || (!report.dirty && !report.problems.isEmpty) { throw ExitCode.failure }
                if report.dirty { throw ExitCode(2) }
            }

            func hex(_ v: UInt32) -> String { String(format: "0x%08X", v) }
        }

        struct Recover: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Replay a dirty hive's transaction logs (old DIRT or new HvLE format) into a clean copy.",
                discussion:
                    "The input files are never changed. Exit codes: 0 written (or already clean: copied as is), 1 unrecoverable."
            )

            @Argument(help: "A hive file (its .LOG/.LOG1/.LOG2 are read from beside it).") var file: String
            @Option(name: .shortAndLong, help: "Where to write the recovered hive (default: FILE.recovered).")
            var output: String?

            func run() throws {
                let out = output ?? file + ".recovered"
                do {
                    let r = try HiveRecovery.recover(
                        primary: try HiveCommand.read(file), logs: HiveCommand.logs(beside: file))
                    guard FileManager.default.createFile(atPath: out, contents: Data(r.bytes)) else {
                        throw RemedyError(.writeFailed, "cannot write \(out)")
                    }
                    print(
                        r.applied.isEmpty
                            ? "\(file) is clean; copied to \(out)"
                            : "recovered \(file) into \(out) (sequence \(r.sequence)): \(r.applied.joined(separator: "; "))"
                    )
                } catch let e as RegfError {
                    throw fail(RemedyError(.hiveUnrecoverable, "\(file): \(e.message)"), image: nil, format: .text)
                } catch {
                    throw fail(error, image: nil, format: .text)
                }
            }
        }
    }
}
