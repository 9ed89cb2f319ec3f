/// `pv-cleanup`: the old hypervisor's paravirtual and guest-tools drivers are
/// disabled (Start=4), not deleted, so their own uninstallers still work;
/// the uninstallers found are reported.
public struct PvCleanupRule: Rule {
    public let id = "pv-cleanup"

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
        Platform(name: "xen",
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
                 products: ["xenserver", "citrix xen", "xen pv", "gplpv", "xcp-ng", "red hat paravirtualized xen", "xen windows"]),
        Platform(name: "parallels", services: [], prefixes: ["prl_"], products: ["parallels tools", "virtuozzo tools"]),
        Platform(name: "virtualbox",
                 services: ["vboxguest", "vboxmouse", "vboxsf", "vboxvideo", "vboxwddm", "vboxservice"],
                 prefixes: [], products: ["virtualbox guest additions"]),
        Platform(name: "vmware",
                 services: ["pvscsi", "vmscsi", "vmxnet", "vmxnet3ndis5", "vmxnet3ndis6", "vmmouse", "vmusbmouse", "vmkbd",
                            "vmhgfs", "vmmemctl", "vmci", "vsock", "vmrawdsk"],
                 prefixes: [], products: ["vmware tools"]),
    ]

    public var platforms: [Platform]

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: "pv-cleanup",
            summary: "Disable the old hypervisor's paravirtual drivers (Start=4, kept for their uninstallers); report its tools.",
            checks: "SYSTEM\\ControlSet00N\\Services in every control set for the drivers of Xen PV (xenbus, xenfilt, xennet, xenvbd, "
                + "xenvif, xeniface, GPLPV xenpci/xenhide, Red Hat rhelscsi ...), Parallels (prl_*), VirtualBox (VBoxGuest, "
                + "VBoxMouse, VBoxSF, VBoxVideo ...) and VMware (pvscsi, vmxnet, vmxnet3ndis6, vmmouse, vmhgfs ...); "
                + "SOFTWARE\\[Wow6432Node\\]Microsoft\\Windows\\CurrentVersion\\Uninstall for those vendors' tools.",
            changes: "Start=4 (disabled) for every such service that is not already disabled. Nothing is deleted. Each installed "
                + "tools package is reported as a warning with its uninstall command (remedy does not run it).",
            why: "On KVM these drivers find no hardware, and some (the Xen bus filters, a boot-start PV storage driver) stop Windows "
                + "from booting or hold the disk stack. Disabling rather than deleting keeps the vendor's uninstaller working, "
                + "which removes the rest (files, services, filters) once the instance runs.",
            parameters: [("platforms", "which to clean: a list of xen, parallels, virtualbox, vmware (default: all)")]),
        make: { p in
            try p.only(["platforms"], rule: "pv-cleanup")
            let names = try p.strings("platforms", default: platforms.map(\.name))
            let chosen = try names.map { n in
                guard let pl = platforms.first(where: { $0.name == n }) else {
                    throw PolicyParameterError(message: "pv-cleanup: unknown platform \(n) (known: \(platforms.map(\.name).joined(separator: ", ")))")
                }
                return pl
            }
            return PvCleanupRule(platforms: chosen)
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

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var result = RuleResult()
        for cs in facts.os.orderedControlSets {
            let services = facts.registry.key(.system, WindowsKeys.services(cs.name))?.subkeys ?? []
            for svc in services.sorted(by: { $0.name.lowercased() < $1.name.lowercased() }) {
                guard let pl = platform(ofService: svc.name) else { continue }
                var edit = KeyEdit(.system, WindowsKeys.service(cs.name, svc.name), svc)
                edit.set("Start", .dword(ServiceStart.disabled))
                guard !edit.changes.isEmpty else { continue }
                result.actions.append(Action(
                    rule: id, description: "disable \(pl.name) driver \(svc.name) in \(cs.label) (was \(ServiceStart.name(svc.value("Start")?.number)))",
                    target: svc.name, changes: edit.changes))
            }
        }
        for base in Self.uninstallKeys {
            for entry in facts.registry.key(.software, base)?.subkeys ?? [] {
                guard case .string(let display)? = entry.value("DisplayName") else { continue }
                let lower = display.lowercased()
                guard let pl = platforms.first(where: { $0.products.contains { lower.contains($0) } }) else { continue }
                let command: String? = switch entry.value("QuietUninstallString") ?? entry.value("UninstallString") {
                case .string(let s)?, .expandString(let s)?: s
                default: nil
                }
                result.findings.append(Finding(
                    id: "old-tools-installed", rule: id, severity: .warning,
                    message: "\(display) (\(pl.name)) is installed: remedy disables its drivers, but the package itself "
                        + "must be uninstalled once the instance runs" + (command.map { ": \($0)" } ?? ""),
                    measured: "SOFTWARE\\\(base)\\\(entry.name)", requirement: "no \(pl.name) guest tools"))
            }
        }
        return result
    }
}
