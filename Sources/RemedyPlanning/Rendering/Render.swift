import Foundation

/// Text for people on a terminal: every control character (C0, DEL, C1) and every bidirectional override is shown
/// as a visible escape (`\u{1B}`), so a string from an image, a virtio-win medium or a file name cannot move the
/// cursor, clear the screen, retitle the terminal or start a fake line. Newlines too: one value is one line.
/// Used by every text renderer and message printer; JSON output is left as it is (its encoder escapes controls).
public enum TerminalText {
    public static func escape<S: StringProtocol>(_ text: S) -> String {
        guard text.unicodeScalars.contains(where: needsEscape) else { return String(text) }
        var out = ""
        for u in text.unicodeScalars {
            if needsEscape(u) {
                out += "\\u{" + String(u.value, radix: 16, uppercase: true) + "}"
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return out
    }

    /// Like ``escape(_:)`` but keeping the line breaks of a multi-line text remedy composed itself.
    public static func escapeLines(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { escape($0) }.joined(separator: "\n")
    }

    static func needsEscape(_ u: Unicode.Scalar) -> Bool {
        u.value < 0x20 || (0x7F...0x9F).contains(u.value) || (0x202A...0x202E).contains(u.value)
            || (0x2066...0x2069).contains(u.value)
    }
}

/// Human-readable renderings of plans and apply reports.
public enum TextRenderer {
    static func t(_ s: String) -> String { TerminalText.escape(s) }

    public static func plan(_ plan: Plan) -> String {
        var out = header(plan)
        if plan.actions.isEmpty {
            out += "\nNo changes: the image already complies with policy \(t(plan.policy.name)).\n"
        }
        out += actions(plan.actions, marker: "~")
        out += findings(plan.findings)
        out += properties(plan.properties)
        let n = plan.changes.count, nf = plan.fileChanges.count
        out +=
            "\nPlan: \(plan.actions.count) action\(plan.actions.count == 1 ? "" : "s"), \(n) change\(n == 1 ? "" : "s"), \(nf) file\(nf == 1 ? "" : "s"), "
            + "\(plan.findings.count) finding\(plan.findings.count == 1 ? "" : "s") (\(plan.blockers.count) blocking).\n"
        return out
    }

    public static func report(_ report: ApplyReport) -> String {
        let plan = report.plan
        var out = header(plan)
        if plan.actions.isEmpty {
            out +=
                "\nNothing to change: the image already complies with policy \(t(plan.policy.name)). The image was not written.\n"
        }
        out += actions(plan.actions, marker: "✓")
        out += findings(plan.findings)
        out += properties(plan.properties)
        if !report.backups.isEmpty {
            out += "\nOriginal hives kept in the image:\n"
            for (hive, path) in report.backups.sorted(by: { $0.key < $1.key }) {
                out += "  \(hive): \(t(GuestPath.windows(path)))\n"
            }
        }
        if let r = report.record { out += "Record: \(t(GuestPath.windows(r)))\n" }
        let n = plan.changes.count, nf = plan.fileChanges.count
        out +=
            "\nApplied: \(plan.actions.count) action\(plan.actions.count == 1 ? "" : "s"), \(n) change\(n == 1 ? "" : "s"), \(nf) file\(nf == 1 ? "" : "s") (run \(t(report.runID))).\n"
        return out
    }

    public static func rollback(_ r: RollbackReport) -> String {
        guard !r.runs.isEmpty || !r.restored.isEmpty else {
            return "Image:   \(t(r.image))\nNothing to roll back: no remedy record in the image.\n"
        }
        var out = "Image:   \(t(r.image))\n"
        out += "Runs undone: \(t(r.runs.joined(separator: ", ")))\n"
        for (hive, backup) in r.restored.sorted(by: { $0.key < $1.key }) {
            out += "  \(r.dryRun ? "would restore" : "restored") \(hive) from \(t(GuestPath.windows(backup)))\n"
        }
        for path in r.removed { out += "  \(r.dryRun ? "would remove" : "removed") \(t(GuestPath.windows(path)))\n" }
        out +=
            r.dryRun
            ? "\nDry run: nothing was written.\n" : "\nRolled back: the image holds its original hives again.\n"
        return out
    }

    static func properties(_ p: [String: String]) -> String {
        guard !p.isEmpty else { return "" }
        var out = "\nImage properties (for the image registration call):\n"
        for (k, v) in p.sorted(by: { $0.key < $1.key }) { out += "  \(t(k))=\(t(v))\n" }
        return out
    }

    static func header(_ plan: Plan) -> String {
        let os = plan.os
        var out = "Image:   \(t(plan.image.path)) (\(t(plan.image.format.rawValue))"
        if let v = plan.image.virtualSize { out += ", \(gib(v)) virtual" }
        out += ")\n"
        out +=
            t(
                "Windows: \(os.product) (NT \(os.version)\(os.build.map { " build \($0)" } ?? ""), \(os.arch), \(os.variant), \(os.firmware) boot)"
            ) + "\n"
        let sets = os.controlSets.map { cs in
            cs.roles.isEmpty ? cs.name : "\(cs.name) [\(cs.roles.map(\.rawValue).joined(separator: ", "))]"
        }
        out += t("Control sets: \(sets.joined(separator: "; ")) (current \(os.currentControlSet))") + "\n"
        out += t("Policy:  \(plan.policy.name) (\(plan.policy.source))") + "\n"
        return out
    }

    static func actions(_ actions: [Action], marker: String) -> String {
        var out = ""
        for a in actions {
            out += "\n\(marker) " + t("[\(a.rule)] \(a.description)") + "\n"
            var lastKey: String?
            let width = a.changes.compactMap { $0.name?.count }.max() ?? 0
            for c in a.changes {
                let key = "\(c.hive.rawValue)\\\(c.key)"
                if key != lastKey {
                    out += "    \(t(key))\n"
                    lastKey = key
                }
                let name = t(c.name ?? "").padding(toLength: max(width, 1), withPad: " ", startingAt: 0)
                switch c.op {
                case .setValue:
                    out +=
                        "      \(name)  "
                        + t("\(c.before.map { "\($0)" } ?? "(absent)") -> \(c.after.map { "\($0)" } ?? "(absent)")")
                        + "\n"
                case .deleteValue:
                    out += "      \(name)  " + t("\(c.before.map { "\($0)" } ?? "(absent)")") + " -> (deleted)\n"
                case .createKey:
                    out += "      (create key)\n"
                case .deleteKey:
                    out += "      (delete key and subkeys)\n"
                }
            }
            for f in a.files {
                let what: String
                switch f.op {
                case .delete: what = "(delete)"
                case .write:
                    let from =
                        f.source.map { "from \($0)" }
                        ?? "generated, \(f.content.map { $0.split(whereSeparator: \.isNewline).count } ?? 0) lines"
                    what = (f.before == nil ? "new file, " : "replace, ") + "\(f.size) bytes, \(from)"
                }
                let place =
                    f.volume.map { "\($0):" + f.path.replacingOccurrences(of: "/", with: "\\") }
                    ?? GuestPath.windows(f.path)
                out += "    " + t("\(place)  \(what)") + "\n"
            }
        }
        return out
    }

    static func findings(_ findings: [Finding]) -> String {
        guard !findings.isEmpty else { return "" }
        var out = "\nFindings (not fixed by remedy):\n"
        for f in findings {
            out += "  " + t("\(f.severity.rawValue.uppercased()) \(f.id): \(f.message)")
            if let m = f.measured, let r = f.requirement { out += t(" (found \(m); required \(r))") }
            out += "\n"
        }
        return out
    }

    static func gib(_ bytes: Int64) -> String {
        let g = Double(bytes) / 1_073_741_824
        return g >= 1 ? String(format: "%.1f GiB", g) : String(format: "%.0f MiB", Double(bytes) / 1_048_576)
    }
}
