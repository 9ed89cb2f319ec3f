import ArgumentParser
import Foundation
import Logging
import RemedyCore

/// The entry points of the command line: `remedy` runs it; `remedy-dev demo` runs plan and apply as a user would.
package enum RemedyCommandLine {
    package static func main() { Remedy.main() }
    package static func plan(_ arguments: [String]) throws { try Remedy.Plan.parse(arguments).run() }
    package static func apply(_ arguments: [String]) throws { try Remedy.Apply.parse(arguments).run() }
}

struct Remedy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remedy",
        abstract: "Offline remediation of Windows disk images for KVM clouds.",
        discussion: """
            remedy inspects a Windows disk image (VMDK, VHD, VHDX, QCOW2, RAW, QED, VDI, QCOW) without booting it, \
            compares it with a policy, and makes the changes in place. All disk access happens inside the libguestfs appliance.

            Exit codes: 0 success / nothing to change, 2 changes pending (plan), 1 error.
            """,
        version: RemedyVersion.current,
        subcommands: [
            Plan.self, Apply.self, Rollback.self, Batch.self, Report.self, Convert.self, HiveCommand.self,
            Policies.self, Explain.self,
        ]
    )
}

package enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

/// Options every command that launches the appliance takes.
package struct ApplianceFlags: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Appliance acceleration: auto probes KVM and falls back to TCG (remembered); also $REMEDY_ACCEL.",
            valueName: "auto|kvm|tcg"))
    package var accel: Acceleration?

    @Option(
        help: ArgumentHelp(
            "Seconds a KVM launch may take before KVM is judged not to work here (default 30; $REMEDY_KVM_TIMEOUT).",
            valueName: "seconds"))
    package var kvmTimeout: Double?

    @Option(
        help: ArgumentHelp(
            "Seconds any appliance launch may take before it is stopped (default 600; $REMEDY_LAUNCH_TIMEOUT).",
            valueName: "seconds"))
    package var launchTimeout: Double?

    @Option(help: ArgumentHelp("Appliance memory in MiB ($REMEDY_MEMSIZE).", valueName: "MiB"))
    package var memsize: Int?

    package init() {}

    package func options() throws -> ApplianceOptions {
        var o = try ApplianceOptions.fromEnvironment()
        if let accel { o.acceleration = accel }
        if let kvmTimeout { o.kvmTimeout = kvmTimeout }
        if let launchTimeout { o.launchTimeout = launchTimeout }
        if let memsize { o.memoryMiB = memsize }
        o.logger = .notices { message in
            FileHandle.standardError.write(Data("remedy: \(TerminalText.escape(message))\n".utf8))
        }
        return o
    }
}

extension Acceleration: ExpressibleByArgument {}
extension DiskFormat: ExpressibleByArgument {}

extension OutputTarget {
    /// `--output FILE [--output-format F]`: the format from the option or the extension; never the source itself, never over an existing file.
    static func resolve(_ path: String, format: DiskFormat?, source: String) throws -> OutputTarget {
        guard let f = format ?? OutputTarget.format(forExtension: path) else {
            throw RemedyError(
                .invalidArgument, image: source,
                "cannot tell the format of \(path) from its extension: add --output-format raw|qcow2|vmdk|vhd|vhdx|vdi|qed"
            )
        }
        guard f != .qcow else {
            throw RemedyError(.invalidArgument, image: source, "--output cannot write qcow (version 1); use qcow2")
        }
        let a = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
        let b = URL(fileURLWithPath: source).standardizedFileURL.resolvingSymlinksInPath().path
        guard a != b else {
            throw RemedyError(
                .invalidArgument, image: source, "--output names the source image; omit --output to change it in place")
        }
        guard !FileManager.default.fileExists(atPath: path) else {
            throw RemedyError(.invalidArgument, image: source, "\(path) exists; remove it or choose another --output")
        }
        return OutputTarget(path: path, format: f, progress: isatty(2) != 0)
    }
}

/// What to inject: virtio-win and payload files.
struct PayloadFlags: ParsableArguments {
    @Option(
        name: .customLong("virtio-win"),
        help: ArgumentHelp(
            "virtio-win ISO, unpacked ISO tree, or packaged tree (/usr/share/virtio-win); also $REMEDY_VIRTIO_WIN.",
            valueName: "path"))
    var virtioWin: String?

    @Option(
        name: .customLong("payload"),
        help: ArgumentHelp(
            "A payload file by manifest name (Payloads/<name>), e.g. cloudbase-init=CloudbaseInitSetup_x64.msi; repeatable; also $REMEDY_PAYLOADS.",
            valueName: "name=path"))
    var payload: [String] = []

    func validate() throws {
        for p in payload where !p.contains("=") { throw ValidationError("--payload takes NAME=PATH, not \(p)") }
    }

    func inputs() throws -> PayloadInputs {
        var inputs = PayloadInputs.environment()
        if let virtioWin { inputs.virtioWin = virtioWin }
        for p in payload {
            let parts = p.split(separator: "=", maxSplits: 1).map(String.init)
            inputs.files[parts[0]] = parts[1]
        }
        try inputs.validate()
        return inputs
    }
}

/// Prints an error for the user (one line on stderr; a JSON document on stdout with --format json) and exits 1.
package func fail(_ error: Error, image: String?, format: OutputFormat) -> ExitCode {
    let remedyError: RemedyError
    if let e = error as? RemedyError {
        remedyError = image.map { e.image == nil ? RemedyError(e.code, image: $0, e.message, cause: e.cause) : e } ?? e
    } else {
        remedyError = RemedyError(.internal, image: image, "\(error)", cause: error)
    }
    FileHandle.standardError.write(Data("remedy: error: \(TerminalText.escape(remedyError.description))\n".utf8))
    if format == .json {
        struct ErrorDocument: Encodable {
            var schema = "remedy.error/1"
            var image: String?
            var code: String
            var message: String
        }
        let doc = ErrorDocument(image: remedyError.image, code: remedyError.code.rawValue, message: remedyError.message)
        if let data = try? RemedyJSON.encoder().encode(doc) { print(String(decoding: data, as: UTF8.self)) }
    }
    return ExitCode.failure
}

/// With `REMEDY_TIMINGS=1`, the seconds of each phase and appliance call on stderr (for the benchmark).
func printTimings() {
    if PhaseTimes.requested { FileHandle.standardError.write(Data("remedy: timings: \(PhaseTimes.summary)\n".utf8)) }
}

func printJSON<T: Encodable>(_ value: T) throws {
    print(String(decoding: try RemedyJSON.encoder().encode(value), as: UTF8.self))
}

extension Remedy {
    struct Plan: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show every change remedy would make to an image, and every rule it cannot fix. Writes nothing.",
            discussion:
                "Exit codes: 0 nothing to change, 2 changes pending, 1 error (like terraform plan -detailed-exitcode)."
        )

        @Argument(
            help:
                "The disk image, or an OVA / OVF (its system disk; the descriptor's facts go into the plan's source section)."
        ) var image: String
        @Option(help: "Policy name (see `remedy policies`) or YAML file.") var policy: String = PolicyLoader
            .defaultPolicyName
        @Option(help: "text or json.") var format: OutputFormat = .text
        @Option(
            help: ArgumentHelp("Also write the JSON plan to this file (for `remedy apply --plan`).", valueName: "file"))
        var out: String?
        @OptionGroup var payloads: PayloadFlags
        @OptionGroup var appliance: ApplianceFlags

        func run() throws {
            let plan: RemedyCore.Plan
            do {
                let policy = try PolicyLoader.load(self.policy)
                let session = try ImageSession.open(
                    image: image, writable: false, options: try appliance.options(), inputs: try payloads.inputs())
                defer { session.close() }
                plan = try session.plan(policy: policy)
                if let out { try RemedyJSON.encoder().encode(plan).write(to: URL(fileURLWithPath: out)) }
            } catch {
                throw fail(error, image: image, format: format)
            }
            switch format {
            case .text: print(TextRenderer.plan(plan), terminator: "")
            case .json: try printJSON(plan)
            }
            printTimings()
            if plan.hasChanges { throw ExitCode(2) }
        }
    }

    struct Apply: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make the planned changes in place, in one appliance launch.",
            discussion: """
                The plan is recomputed in the same appliance session that writes, so what is applied is exactly \
                what `remedy plan` shows. With --plan, apply refuses unless the image still yields that saved plan.
                """
        )

        @Argument(help: "The disk image (modified in place).") var image: String
        @Option(help: "Policy name or YAML file.") var policy: String = PolicyLoader.defaultPolicyName
        @Option(help: "text or json.") var format: OutputFormat = .text
        @Option(
            help: ArgumentHelp(
                "A plan saved by `remedy plan --out`; apply only if the image still yields exactly it.",
                valueName: "file"))
        var plan: String?
        @Option(
            help: ArgumentHelp(
                "Write the remediated image to this new file; the source is only read.", valueName: "file"))
        var output: String?
        @Option(
            help: ArgumentHelp(
                "Format of --output (default: from its extension).", valueName: "raw|qcow2|vmdk|vhd|vhdx|vdi|qed"))
        var outputFormat: DiskFormat?
        @OptionGroup var payloads: PayloadFlags
        @OptionGroup var appliance: ApplianceFlags

        func run() throws {
            let report: ApplyReport
            var blocked = false
            do {
                let policy = try PolicyLoader.load(self.policy)
                var expected: RemedyCore.Plan?
                if let planFile = plan {
                    guard let data = FileManager.default.contents(atPath: planFile) else {
                        throw RemedyError(.invalidArgument, "cannot read the plan file \(planFile)")
                    }
                    do {
                        expected = try RemedyJSON.decoder().decode(RemedyCore.Plan.self, from: data)
                    } catch {
                        throw RemedyError(.invalidArgument, "\(planFile) is not a remedy plan: \(error)")
                    }
                }
                let target = try output.map { try OutputTarget.resolve($0, format: outputFormat, source: image) }
                let session = try ImageSession.open(
                    image: image, writable: true, options: try appliance.options(), inputs: try payloads.inputs(),
                    output: target)
                defer { session.close() }
                let current = try session.plan(policy: policy)
                if let expected, !expected.sameChanges(as: current) {
                    throw RemedyError(
                        .planMismatch, image: image,
                        "the image no longer yields the saved plan (\(expected.changes.count) changes saved, \(current.changes.count) now); nothing was written, run remedy plan again"
                    )
                }
                report = try Applier.apply(current, in: session)
                try session.complete()
                blocked = !current.blockers.isEmpty
            } catch {
                throw fail(error, image: image, format: format)
            }
            switch format {
            case .text: print(TextRenderer.report(report), terminator: "")
            case .json: try printJSON(report)
            }
            printTimings()
            // Blocking findings remain (e.g. hibernated with nothing else to change): the image is not ready, as in batch.
            if blocked { throw ExitCode(2) }
        }
    }

    struct Policies: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the built-in policies.")

        func run() throws {
            let names = PolicyLoader.builtinNames()
            if names.isEmpty {
                print(
                    "No built-in policies found (searched: \(PolicyLoader.policyDirectories().joined(separator: ", ")))."
                )
            }
            for name in names {
                do {
                    let p = try PolicyLoader.load(name)
                    print("\(name.padding(toLength: 16, withPad: " ", startingAt: 0)) \(p.description)")
                    print(
                        "\(String(repeating: " ", count: 17))rules: \(p.rules.map(\.id).joined(separator: ", "))  (\(p.source))"
                    )
                } catch {
                    print("\(name.padding(toLength: 16, withPad: " ", startingAt: 0)) (invalid: \(error))")
                }
            }
        }
    }

    struct Rollback: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Undo every remedy apply recorded in an image: original hives back, injected files and C:\\Windows\\remedy removed.",
            discussion:
                "Exit codes: 0 rolled back (or nothing to roll back), 1 error. --dry-run shows what would be restored and writes nothing."
        )

        @Argument(help: "The disk image (modified in place).") var image: String
        @Flag(help: "Show what would be restored; write nothing.") var dryRun = false
        @Option(help: "text or json.") var format: OutputFormat = .text
        @OptionGroup var appliance: ApplianceFlags

        func run() throws {
            let report: RollbackReport
            do {
                let session = try ImageSession.open(image: image, writable: !dryRun, options: try appliance.options())
                defer { session.close() }
                report = try RemedyCore.Rollback.run(in: session, dryRun: dryRun)
            } catch {
                throw fail(error, image: image, format: format)
            }
            switch format {
            case .text: print(TextRenderer.rollback(report), terminator: "")
            case .json: try printJSON(report)
            }
        }
    }

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Explain what a rule checks, what it changes and why.",
            discussion:
                "Built-in rules are always known; with --policy, that policy's registry rules too. Without a rule, lists them."
        )

        @Argument(help: "A rule id, e.g. nic-dhcp.") var rule: String?
        @Option(help: "Also explain the registry rules of this policy (name or YAML file).") var policy: String?

        func documentation() throws -> [RuleDocumentation] {
            var docs = BuiltinRule.all.map(\.documentation)
            // Payload rules, one per manifest under Payloads/ (except virtio-win, which virtio-drivers uses).
            docs += PayloadManifest.all().filter { $0.input != nil }.map(PayloadRule.documentation)
            if let policy {
                do {
                    for case let r as RegistryRule in try PolicyLoader.load(policy).rules {
                        docs.append(r.documentation)
                    }
                } catch {
                    throw fail(error, image: nil, format: .text)
                }
            }
            return docs
        }

        func run() throws {
            let docs = try documentation()
            guard let rule else {
                let width = docs.map(\.id.count).max() ?? 0
                for d in docs { print("\(d.id.padding(toLength: width, withPad: " ", startingAt: 0))  \(d.summary)") }
                return
            }
            guard let d = docs.first(where: { $0.id == rule }) else {
                throw ValidationError(
                    "unknown rule \(rule); known rules: \(docs.map(\.id).joined(separator: ", "))"
                        + (policy == nil ? " (registry rules of a policy: add --policy NAME)" : ""))
            }
            print("\(d.id): \(d.summary)\n")
            print("Checks:  \(d.checks)\n")
            print("Changes: \(d.changes)\n")
            print("Why:     \(d.why)")
            if !d.parameters.isEmpty {
                print("\nParameters:")
                for p in d.parameters { print("  \(p.name): \(p.meaning)") }
            }
        }
    }
}
