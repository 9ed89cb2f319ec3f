/// `pv-cleanup`: the old hypervisor's paravirtual and guest-tools drivers are
/// disabled (Start=4), not deleted, so their own uninstallers still work;
/// the uninstallers found are reported.
public struct PvCleanupRule: Rule {
    /// The id a policy names this rule by, declared here once.
    public static let id = "pv-cleanup"
    public var id: String { Self.id }

    /// A hypervisor whose guest drivers remedy knows.
    public struct Platform: Sendable {
        public var name: String
        /// Service names (case-insensitive).
        public var services: [String]
        /// Service name prefixes (`prl_`).
        public var prefixes: [String]
        /// Substrings of the DisplayName of its tools under the Uninstall keys (lowercase).
        public var products: [String]
    }

    /// Service names from the drivers each vendor's guest tools install (their INF files and documentation).
    public static let platforms: [Platform] = [
        Platform(
            name: "xen",
            services: [
                // Citrix / XenServer / XCP-ng PV drivers (xenbus family), and their older names.
                "xenbus", "xenfilt", "xeniface", "xennet", "xenvbd", "xenvif", "xendisk", "xencons", "xenbus_monitor",
                "xenevtchn", "xennet6", "xensvc", "xenagent",
                // GPLPV drivers.
                "xenpci", "xenhide", "xenscsi", "xenusb", "xenstub", "xenvbd_filter",
                // Red Hat's PV drivers for Xen guests.
                "rhelscsi",
            ],
            prefixes: [],
            products: [
                "xenserver", "citrix xen", "xen pv", "gplpv", "xcp-ng", "red hat paravirtualized xen", "xen windows",
            ]),
        Platform(
            name: "parallels", services: [], prefixes: ["prl_"], products: ["parallels tools", "virtuozzo tools"]),
        Platform(
            name: "virtualbox",
            services: ["vboxguest", "vboxmouse", "vboxsf", "vboxvideo", "vboxwddm", "vboxservice"],
            prefixes: [], products: ["virtualbox guest additions"]),
        Platform(
            name: "vmware",
            services: [
                "pvscsi", "vmscsi", "vmxnet", "vmxnet3ndis5", "vmxnet3ndis6", "vmmouse", "vmusbmouse", "vmkbd",
                "vmhgfs", "vmmemctl", "vmci", "vsock", "vmrawdsk",
            ],
            prefixes: [], products: ["vmware tools"]),
    ]

    public var platforms: [Platform]
    /// Queue each tools package's unattended uninstall as a first-boot step.
    public var uninstall: Bool = false

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: Self.id,
            summary:
                "Disable the old hypervisor's paravirtual drivers (Start=4, kept for their uninstallers); report its tools.",
            checks:
                "SYSTEM\\ControlSet00N\\Services in every control set for the drivers of Xen PV (xenbus, xenfilt, xennet, xenvbd, "
                + "xenvif, xeniface, GPLPV xenpci/xenhide, Red Hat rhelscsi ...), Parallels (prl_*), VirtualBox (VBoxGuest, "
                + "VBoxMouse, VBoxSF, VBoxVideo ...) and VMware (pvscsi, vmxnet, vmxnet3ndis6, vmmouse, vmhgfs ...); "
                + "SOFTWARE\\[Wow6432Node\\]Microsoft\\Windows\\CurrentVersion\\Uninstall for those vendors' tools.",
            changes:
                "Start=4 (disabled) for every such service that is not already disabled. Nothing is deleted. Each installed "
                + "tools package is reported as a warning with its uninstall command; with uninstall: true, packages that can be "
                + "removed unattended (Windows Installer: MsiExec /X{code} /qn /norestart, or a QuietUninstallString) are "
                + "uninstalled by a first-boot step instead.",
            why:
                "On KVM these drivers find no hardware, and some (the Xen bus filters, a boot-start PV storage driver) stop Windows "
                + "from booting or hold the disk stack. Disabling rather than deleting keeps the vendor's uninstaller working, "
                + "which removes the rest (files, services, filters) once the instance runs.",
            parameters: [
                ("platforms", "which to clean: a list of xen, parallels, virtualbox, vmware (default: all)"),
                (
                    "uninstall",
                    "true: uninstall each tools package at first boot, unattended (MSI packages and those with a "
                        + "QuietUninstallString; others stay a warning); default false: report only"
                ),
            ]),
        make: { p, _ in
            try p.only(["platforms", "uninstall"], rule: Self.id)
            let names = try p.strings("platforms", default: platforms.map(\.name))
            let chosen = try names.map { n in
                guard let pl = platforms.first(where: { $0.name == n }) else {
                    throw PolicyParameterError(
                        message:
                            "pv-cleanup: unknown platform \(n) (known: \(platforms.map(\.name).joined(separator: ", ")))"
                    )
                }
                return pl
            }
            var rule = PvCleanupRule(platforms: chosen)
            rule.uninstall = try p.bool("uninstall", default: false)
            return rule
        })

    static let uninstallKeys = [
        RegistryPath("Microsoft\\Windows\\CurrentVersion\\Uninstall"),
        RegistryPath("Wow6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall"),
    ]

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        WindowsKeys.servicesRequirements(os) + Self.uninstallKeys.map { RegistryRequirement(.software, $0, depth: 1) }
    }

    /// The platform a service belongs to, if any.
    func platform(ofService name: String) -> Platform? {
        let lower = name.lowercased()
        return platforms.first { p in p.services.contains(lower) || p.prefixes.contains { lower.hasPrefix($0) } }
    }

    /// The installed tools packages of the chosen platforms: (entry, platform, display name, unattended command or nil).
    func tools(
        _ facts: ImageFacts
    ) -> [(key: String, platform: Platform, display: String, command: String?, quiet: String?)] {
        var out: [(key: String, platform: Platform, display: String, command: String?, quiet: String?)] = []
        for base in Self.uninstallKeys {
            for entry in (facts.registry.key(.software, base)?.subkeys ?? []).sorted(by: { $0.name < $1.name }) {
                guard case .string(let display)? = entry.value("DisplayName") else { continue }
                let lower = display.lowercased()
                guard let pl = platforms.first(where: { $0.products.contains { lower.contains($0) } }) else { continue }
                func str(_ name: String) -> String? {
                    switch entry.value(name) {
                    case .string(let s)?, .expandString(let s)?: s
                    default: nil
                    }
                }
                let command = str("QuietUninstallString") ?? str("UninstallString")
                out.append(
                    (
                        "SOFTWARE\\\(base)\\\(entry.name)", pl, display, command,
                        Self.unattended(str("QuietUninstallString"), str("UninstallString"))
                    ))
            }
        }
        return out
    }

    /// An uninstall command that runs without a user: the package's QuietUninstallString, or for a Windows
    /// Installer package `MsiExec.exe /X{ProductCode} /qn /norestart`.
    static func unattended(_ quiet: String?, _ plain: String?) -> String? {
        if let quiet { return quiet }
        guard let plain, plain.lowercased().contains("msiexec"),
            let open = plain.firstIndex(of: "{"), let close = plain[open...].firstIndex(of: "}")
        else { return nil }
        return "MsiExec.exe /X\(plain[open...close]) /qn /norestart"
    }

    static func stepName(_ index: Int, _ platform: String) -> String {
        String(format: "30-uninstall-%@-%d.cmd", platform, index + 1)
    }

    public func fileRequirements(for facts: ImageFacts) -> [FileRequirement] {
        guard uninstall else { return [] }
        return tools(facts).enumerated().map {
            FileRequirement(FirstBoot.script(facts.os, Self.stepName($0.offset, $0.element.platform.name)))
        }
            + FirstBoot.requirements(facts.os)
    }

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var result = RuleResult()
        for cs in facts.os.orderedControlSets {
            let services = facts.registry.key(.system, WindowsKeys.services(cs.name))?.subkeys ?? []
            for svc in services.sorted(by: { $0.name.lowercased() < $1.name.lowercased() }) {
                guard let pl = platform(ofService: svc.name) else { continue }
                var edit = KeyEdit(.system, WindowsKeys.service(cs.name, svc.name), svc)
                edit.set("Start", .dword(ServiceStart.disabled))
                guard !edit.changes.isEmpty else { continue }
                result.actions.append(
                    Action(
                        rule: id,
                        description:
                            "disable \(pl.name) driver \(svc.name) in \(cs.label) (was \(ServiceStart.name(svc.value("Start")?.number)))",
                        target: svc.name, changes: edit.changes))
            }
        }
        var files = facts.files
        for (i, tool) in tools(facts).enumerated() {
            if uninstall, let quiet = tool.quiet {
                // 1605: the product is not installed (any more); 3010: it is gone after a restart.
                // The display name is the guest's: only as a comment's safe characters (a line break in it would start a command).
                let body = [
                    "@echo off", "rem remedy: uninstall \(Cmd.comment(tool.display)) (\(tool.platform.name))", quiet,
                    "if %ERRORLEVEL%==1605 exit /b 0", "exit /b %ERRORLEVEL%", "",
                ].joined(separator: "\n")
                let step = FirstBoot.step(
                    facts.os, name: Self.stepName(i, tool.platform.name), body: body, files: files)
                for c in step { files.apply(c) }
                if !step.isEmpty {
                    result.actions.append(
                        Action(
                            rule: id,
                            description: "first boot: uninstall \(tool.display) (\(tool.platform.name)): \(quiet)",
                            target: tool.display, changes: [], files: step))
                }
                continue
            }
            result.findings.append(
                Finding(
                    id: "old-tools-installed", rule: id, severity: .warning,
                    message:
                        "\(tool.display) (\(tool.platform.name)) is installed: remedy disables its drivers, but the package itself "
                        + "must be uninstalled once the instance runs" + (tool.command.map { ": \($0)" } ?? "")
                        + (uninstall ? " (it has no unattended uninstall command, so remedy does not queue it)" : ""),
                    measured: tool.key, requirement: "no \(tool.platform.name) guest tools"))
        }
        return result
    }
}
