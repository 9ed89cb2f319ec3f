import Foundation

/// A payload rule, made from a manifest under `Payloads/<name>/`: the
/// policy names it like a built-in rule (`- id: cloudbase-init`). The user's
/// file (`--payload NAME=PATH`) is checked against the manifest's known
/// checksums, staged in `C:\Windows\remedy\payloads\<name>\`, and installed
/// by a first-boot step; the manifest's templates are rendered with the
/// policy's values and written where they belong (staged and copied after
/// the install when the software is not installed yet); stale registry
/// state the manifest names is removed.
public struct PayloadRule: Rule {
    public let id: String
    public let manifest: PayloadManifest
    public var variant: String?
    public var required: Bool
    public var variables: [String: String]

    public init(manifest: PayloadManifest, parameters p: PolicyParameters) throws {
        id = manifest.name
        self.manifest = manifest
        let declared = (manifest.variables ?? [:]).keys.sorted()
        try p.only(["variant", "required"] + declared, rule: manifest.name)
        if let variants = manifest.variants {
            variant = try p.string("variant", default: variants.first ?? "", oneOf: variants)
        }
        required = try p.bool("required", default: false)
        var vars = manifest.variables ?? [:]
        for name in declared {
            if let v = p.values[name] { vars[name] = v.description }
        }
        variables = vars
        // Every template renders with these values (an unknown variable is a policy error now, not at apply).
        for (_, text) in manifest.templates { _ = try PayloadManifest.render(text, variables) }
    }

    public static func documentation(_ m: PayloadManifest) -> RuleDocumentation {
        RuleDocumentation(
            id: m.name, summary: m.description,
            checks: "Whether it is installed" + (m.detect?.service.map { " (service \($0))" } ?? "")
                + "; the file given with --payload \(m.name)=PATH against the manifest's known SHA-256 list; the files its templates produce"
                + (m.removeKeys.map { "; registry state " + $0.joined(separator: ", ") } ?? "") + ".",
            changes:
                "Not installed: the file staged in C:\\Windows\\remedy\\payloads\\\(m.name)\\ and a first-boot step that installs it"
                + " and copies the rendered templates into place. Installed: the rendered templates written in place."
                + (m.removeKeys.map { " Stale state removed: " + $0.joined(separator: ", ") + "." } ?? ""),
            why: (m.documentation ?? []).isEmpty
                ? "See Payloads/\(m.name)/manifest.yaml."
                : "Per " + (m.documentation ?? []).joined(separator: ", ") + ".",
            parameters: [
                ("variant", "which template set (\((m.variants ?? []).joined(separator: ", ")))"),
                ("required", "true: a missing payload file blocks (default: a warning)"),
            ]
                + (m.variables ?? [:]).sorted { $0.key < $1.key }.map {
                    ($0.key, "template value (default \($0.value))")
                })
    }

    func stageDirectory(_ os: OSFacts) -> String { os.systemRoot + "/remedy/payloads/" + manifest.name }
    /// The staged payload's name: remedy's own (`cloudbase-init.msi`), never the user's file name, which would go
    /// into the first-boot script (`"` `&` `%` in a name would run commands as SYSTEM or change the path).
    var stagedName: String {
        let kind = (manifest.input?.kind ?? "").lowercased()
        return manifest.name + "." + (["msi", "exe", "msu", "zip"].contains(kind) ? kind : "bin")
    }
    var stepName: String { String(format: "%02d-%@.cmd", manifest.install?.order ?? 50, manifest.name) }

    /// `%ProgramFiles%\Cloudbase Solutions\...` as a guest path.
    static func guestPath(_ windowsPath: String, _ os: OSFacts) -> String {
        var p = windowsPath.replacingOccurrences(of: "\\", with: "/")
        for (variable, value) in [
            ("%ProgramFiles%", "/Program Files"), ("%SystemRoot%", os.systemRoot), ("%windir%", os.systemRoot),
            ("%SystemDrive%", ""), ("C:", ""),
        ] where p.lowercased().hasPrefix(variable.lowercased()) {
            p = value + p.dropFirst(variable.count)
            break
        }
        return p
    }

    /// The rendered templates: (target as written in the manifest, file name, text, encoding).
    func rendered() -> [(target: String, name: String, text: String, encoding: TextEncoding)] {
        (manifest.files ?? []).compactMap { t in
            let rel = t.template.replacingOccurrences(of: "{variant}", with: variant ?? "")
            guard let text = manifest.templates[rel], let out = try? PayloadManifest.render(text, variables) else {
                return nil
            }
            let name = t.target.split(whereSeparator: { $0 == "\\" || $0 == "/" }).last.map(String.init) ?? rel
            return (t.target, name, FirstBoot.crlf(out), t.encoding ?? .utf8)
        }
    }

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        WindowsKeys.servicesRequirements(os)
            + (manifest.removeKeys ?? []).map { RegistryRequirement(.software, Self.softwarePath($0), depth: 0) }
    }

    static func softwarePath(_ key: String) -> RegistryPath {
        var k = key
        for prefix in ["HKLM\\SOFTWARE\\", "HKEY_LOCAL_MACHINE\\SOFTWARE\\", "SOFTWARE\\"]
        where k.uppercased().hasPrefix(prefix.uppercased()) {
            k = String(k.dropFirst(prefix.count))
            break
        }
        return RegistryPath(k)
    }

    public func fileRequirements(for facts: ImageFacts) -> [FileRequirement] {
        let os = facts.os, payloads = facts.payloads
        var out = rendered().flatMap { r in
            [FileRequirement(Self.guestPath(r.target, os)), FileRequirement(stageDirectory(os) + "/files/" + r.name)]
        }
        if payloads.files[manifest.name] != nil { out.append(FileRequirement(stageDirectory(os) + "/" + stagedName)) }
        return out + [FileRequirement(FirstBoot.script(os, stepName))] + FirstBoot.requirements(os)
    }

    func installed(_ facts: ImageFacts) -> Bool {
        guard let svc = manifest.detect?.service else { return false }
        return WindowsKeys.start(facts, facts.os.currentControlSet, svc) != nil
    }

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var result = RuleResult()
        let os = facts.os
        var files = facts.files
        let isInstalled = installed(facts)
        let input = facts.payloads.files[manifest.name]
        var action = Action(rule: id, description: "", target: manifest.name, changes: [])

        if isInstalled {
            action.description = "configure \(manifest.name) (installed)" + (variant.map { " for \($0)" } ?? "")
            for r in rendered() {
                if let c = FileChange.text(Self.guestPath(r.target, os), r.text, encoding: r.encoding, in: files) {
                    action.files.append(c)
                }
            }
            if input != nil {
                result.findings.append(
                    Finding(
                        id: .payloadNotUsed, rule: id, severity: .info,
                        message:
                            "\(manifest.name) is already installed in the image: the given file is not installed again, "
                            + "only its configuration is written", measured: "installed", requirement: nil))
            }
        } else if let input, let install = manifest.install {
            action.description =
                "stage \(input.name) and install \(manifest.name) at first boot" + (variant.map { " for \($0)" } ?? "")
            let known = manifest.input?.known ?? []
            if let k = known.first(where: { $0.sha256.lowercased() == input.sha256 }) {
                if let arch = k.arch, arch != os.arch.rawValue {
                    result.findings.append(
                        Finding(
                            id: .payloadWrongArch, rule: id, severity: .blocker,
                            message:
                                "\(input.name) is \(manifest.name) \(k.version) for \(arch); this Windows is \(os.arch)",
                            measured: arch, requirement: os.arch.rawValue))
                }
            } else {
                result.findings.append(
                    Finding(
                        id: .payloadUnknown, rule: id, severity: .warning,
                        message:
                            "\(input.name) (SHA-256 \(input.sha256)) is not a \(manifest.name) release the manifest knows"
                            + (known.isEmpty ? "" : " (\(known.map(\.version).joined(separator: ", ")))")
                            + ": it is used as given; check where it came from",
                        measured: input.sha256, requirement: "a known release"))
            }
            let staged = stageDirectory(os) + "/" + stagedName
            if let c = FileChange.copy(staged, from: input, in: files) { action.files.append(c) }
            var copies: [String] = []
            for r in rendered() {
                let stagedFile = stageDirectory(os) + "/files/" + r.name
                if let c = FileChange.text(stagedFile, r.text, encoding: r.encoding, in: files) {
                    action.files.append(c)
                }
                let target = r.target
                let folder = target.split(separator: "\\").dropLast().joined(separator: "\\")
                copies.append("if not exist \"\(folder)\" mkdir \"\(folder)\"")
                copies.append("copy /y \"\(GuestPath.windows(stagedFile))\" \"\(target)\"")
            }
            for c in action.files { files.apply(c) }
            let log = GuestPath.windows(stageDirectory(os) + "/install.log")
            let command = install.command.replacingOccurrences(of: "%PAYLOAD%", with: GuestPath.windows(staged))
                .replacingOccurrences(of: "%LOG%", with: log)
            // Every path here is remedy's own or the manifest's (trusted, like the policy): the user's file name is not.
            let body =
                [
                    "@echo off", "setlocal EnableExtensions DisableDelayedExpansion",
                    "rem remedy: install \(manifest.name) from the file with SHA-256 \(input.sha256)", command,
                    "set \"RC=%ERRORLEVEL%\"",
                    "if not \"%RC%\"==\"0\" if not \"%RC%\"==\"3010\" if not \"%RC%\"==\"1641\" exit /b %RC%",
                ]
                + copies + (install.after ?? []) + ["exit /b %RC%", ""]
            action.files += FirstBoot.step(os, name: stepName, body: body.joined(separator: "\n"), files: files)
        } else if manifest.input != nil {
            result.findings.append(
                Finding(
                    id: .payloadMissing, rule: id, severity: required ? .blocker : .warning,
                    message:
                        "\(manifest.name) is not installed and no file was given (--payload \(manifest.name)=PATH): \(manifest.description) "
                        + "will not run on the new platform",
                    measured: "not installed", requirement: "\(manifest.name) installed"))
        }
        for key in manifest.removeKeys ?? [] {
            let path = Self.softwarePath(key)
            if facts.registry.key(.software, path) != nil {
                action.changes.append(Change(op: .deleteKey, hive: .software, key: path))
                if action.description.isEmpty { action.description = "clear \(manifest.name) state" }
                action.description += "; remove stale state SOFTWARE\\\(path) so it runs again on this image"
            }
        }
        if !action.isEmpty { result.actions.append(action) }
        return result
    }
}
