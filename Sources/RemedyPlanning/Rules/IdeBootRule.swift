/// `ide-boot`: the emulated IDE controller of a KVM guest (Intel PIIX3 /
/// PIIX4) can carry the system disk at first boot, before paravirtual
/// drivers are in place.
public struct IdeBootRule: Rule {
    /// The id a policy names this rule by, declared here once.
    public static let id = "ide-boot"
    public var id: String { Self.id }

    /// Storage services of the standard IDE/ATA path (inbox drivers).
    static let services = ["atapi", "intelide", "pciide"]

    static let hdcClass = "{4D36E96A-E325-11CE-BFC1-08002BE10318}"
    static let diskClass = "{4D36E967-E325-11CE-BFC1-08002BE10318}"

    /// CriticalDeviceDatabase entries for the emulated controllers and what
    /// hangs off them (Microsoft KB 314082's list, reduced to the devices a
    /// KVM guest presents: PIIX3 IDE 8086:7010 and PIIX4 IDE 8086:7111).
    static let criticalDevices: [(device: String, service: String, classGUID: String)] = [
        ("pci#ven_8086&dev_7010", "intelide", hdcClass),
        ("pci#ven_8086&dev_7111", "intelide", hdcClass),
        ("pci#cc_0101", "pciide", hdcClass),
        ("primary_ide_channel", "atapi", hdcClass),
        ("secondary_ide_channel", "atapi", hdcClass),
        ("*pnp0600", "atapi", hdcClass),
        ("gendisk", "disk", diskClass),
    ]

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: Self.id,
            summary:
                "Make the emulated IDE disk bootable at first boot: IDE/ATA drivers boot-start, and (before Windows 8) "
                + "CriticalDeviceDatabase entries for the PIIX3/PIIX4 IDE controllers.",
            checks:
                "Services atapi, intelide and pciide (Start and StartOverride) in every control set; for Windows Vista/7/2008/2008 R2 (NT 6.0-6.1) also "
                + "Control\\CriticalDeviceDatabase\\pci#ven_8086&dev_7010 (PIIX3), pci#ven_8086&dev_7111 (PIIX4), pci#cc_0101, "
                + "primary_ide_channel, secondary_ide_channel, *pnp0600 and gendisk.",
            changes:
                "Start=0 (boot) for atapi, intelide and pciide, and their StartOverride key deleted where Windows 8 or later "
                + "demoted them with it (Start=0 with StartOverride\\0=3 does not load); before Windows 8, each missing or wrong CriticalDeviceDatabase "
                + "entry gets Service and ClassGUID (IDE controllers {4D36E96A-...}, gendisk {4D36E967-...}). Windows 8 / 2012 and "
                + "later ignore the CriticalDeviceDatabase, so nothing is added there for them.",
            why:
                "A system disk moved to a controller Windows has never seen stops with 0x7B INACCESSIBLE_BOOT_DEVICE unless the "
                + "controller's driver loads at boot and (before Windows 8) the controller's hardware ID maps to it in the "
                + "CriticalDeviceDatabase: Microsoft's guidance for moving a system disk to new hardware (KB 314082). An image that "
                + "came from VMware SCSI/PVSCSI, Hyper-V or Xen PV storage never used the IDE path, so it is disabled.",
            parameters: []),
        make: { p, _ in
            try p.only([], rule: Self.id)
            return IdeBootRule()
        })

    static func cdd(_ cs: String) -> RegistryPath { RegistryPath("\(cs)\\Control\\CriticalDeviceDatabase") }

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        WindowsKeys.servicesRequirements(os)
            + WindowsKeys.startOverrideRequirements(os, services: Self.services)
            + (os.isWindows8OrLater
                ? [] : os.orderedControlSets.map { RegistryRequirement(.system, Self.cdd($0.name), depth: 1) })
    }

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var result = RuleResult()
        for cs in facts.os.orderedControlSets {
            for name in Self.services {
                let path = WindowsKeys.service(cs.name, name)
                guard let svc = facts.registry.key(.system, path) else {
                    result.findings.append(
                        Finding(
                            id: "ide-driver-missing", rule: id, severity: .blocker,
                            message:
                                "the inbox IDE driver service \(name) is not in \(cs.label): the image cannot boot from an emulated IDE disk",
                            measured: "Services\\\(name) absent", requirement: "Services\\\(name) installed"))
                    continue
                }
                var edit = KeyEdit(.system, path, svc)
                edit.set("Start", .dword(ServiceStart.boot))
                // Windows 8+ demotes a boot driver whose device was absent with StartOverride while Start stays 0.
                let overridden = WindowsKeys.liftStartOverride(facts, cs.name, name)
                if !edit.changes.isEmpty || overridden != nil {
                    let was = WindowsKeys.effectiveStart(facts, cs.name, name)
                    let how = overridden == nil ? "" : ", demoted by StartOverride: the override is removed"
                    result.actions.append(
                        Action(
                            rule: id,
                            description: "load \(name) at boot in \(cs.label) (was \(ServiceStart.name(was))\(how))",
                            target: name, changes: edit.changes + (overridden.map { [$0] } ?? [])))
                }
            }
            guard !facts.os.isWindows8OrLater else { continue }
            for entry in Self.criticalDevices {
                let path = Self.cdd(cs.name).appending(entry.device)
                var edit = KeyEdit(.system, path, facts.registry.key(.system, path))
                edit.set("Service", .string(entry.service))
                edit.set("ClassGUID", .string(entry.classGUID))
                if !edit.changes.isEmpty {
                    result.actions.append(
                        Action(
                            rule: id,
                            description:
                                "map \(entry.device) to \(entry.service) in the CriticalDeviceDatabase of \(cs.label)",
                            target: entry.device, changes: edit.changes))
                }
            }
        }
        return result
    }
}
