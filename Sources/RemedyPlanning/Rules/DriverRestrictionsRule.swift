/// `driver-restrictions`: Group Policy device-installation restrictions
/// that would stop Windows from installing the new platform's drivers.
public struct DriverRestrictionsRule: Rule {
    /// The id a policy names this rule by, declared here once.
    public static let id = "driver-restrictions"
    public var id: String { Self.id }
    public var remove: Bool

    static let path = RegistryPath("Policies\\Microsoft\\Windows\\DeviceInstall\\Restrictions")
    static let history = RegistryPath("Microsoft\\Windows\\CurrentVersion\\Group Policy\\History")

    /// The switches of Microsoft's Device Installation Restrictions policies
    /// (DeviceInstallation.admx), with what each blocks and its list subkey.
    static let switches: [(value: String, blocks: String, list: String?, severity: Finding.Severity)] = [
        ("DenyUnspecified", "every device not allowed by another policy setting", nil, .blocker),
        ("DenyDeviceIDs", "devices with these hardware IDs", "DenyDeviceIDs", .warning),
        ("DenyDeviceClasses", "devices of these setup classes", "DenyDeviceClasses", .warning),
        ("DenyInstanceIDs", "devices with these instance IDs", "DenyInstanceIDs", .warning),
        ("DenyRemovableDevices", "removable devices", nil, .info),
    ]

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: Self.id,
            summary:
                "Report Group Policy device-installation restrictions that block new drivers; switch them off when the policy allows.",
            checks:
                "SOFTWARE\\Policies\\Microsoft\\Windows\\DeviceInstall\\Restrictions: DenyUnspecified, DenyDeviceIDs (+ list), "
                + "DenyDeviceClasses (+ list), DenyInstanceIDs (+ list), DenyRemovableDevices; and whether domain Group Policy "
                + "has been applied (SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Group Policy\\History); the same switches in the "
                + "local Group Policy file System32\\GroupPolicy\\Machine\\Registry.pol.",
            changes:
                "With remove: true, each enabled switch (and its ...Retroactive companion) is set to 0; the lists are kept. "
                + "The same switches in the local Group Policy object's C:\\Windows\\System32\\GroupPolicy\\Machine\\Registry.pol "
                + "(registry policy file format: PReg) get the DWORD data 0 in place, every other byte of the file kept. "
                + "Otherwise nothing: each enabled switch, in the registry or in Registry.pol, is a finding.",
            why:
                "These policies stop Plug and Play from installing a driver for a new device: the VirtIO network card, balloon or "
                + "SCSI controller of the new platform stay without a driver, and a boot disk on a blocked controller stops with "
                + "0x7B (Microsoft KB 2773300). A domain policy re-applies them at the next Group Policy refresh, so the finding "
                + "says when one was applied.",
            parameters: [("remove", "true switches the restrictions off; false (default) only reports them")]),
        make: { p, _ in
            try p.only(["remove"], rule: Self.id)
            return DriverRestrictionsRule(remove: try p.bool("remove", default: false))
        })

    /// The local Group Policy object's machine registry policy: Windows applies it again at every Group Policy refresh.
    static func registryPol(_ os: OSFacts) -> String { os.systemRoot + "/System32/GroupPolicy/Machine/Registry.pol" }
    static let polKey = "Software\\Policies\\Microsoft\\Windows\\DeviceInstall\\Restrictions"

    public func fileRequirements(for facts: ImageFacts) -> [FileRequirement] {
        [FileRequirement(Self.registryPol(facts.os), text: true)]
    }

    /// The restrictions the local Group Policy object sets (Registry.pol): switched off in place when `remove`
    /// (the DWORD data set to 0, every other byte kept), else reported.
    func localPolicy(_ facts: ImageFacts, into result: inout RuleResult) {
        let path = Self.registryPol(facts.os)
        guard let file = facts.files.file(path) else { return }
        guard let bytes = RegistryPol.bytes(of: file), var pol = RegistryPol(bytes) else {
            result.findings.append(
                Finding(
                    id: "local-policy-unreadable", rule: id, severity: .warning,
                    message:
                        "the local Group Policy file \(GuestPath.windows(file.path)) is not a registry policy (PReg) file remedy can read: "
                        + "device-installation restrictions it may set are not checked",
                    measured: "\(file.size) bytes", requirement: "PReg version 1"))
            return
        }
        var switched: [String] = []
        for e in pol.entries where e.key.lowercased() == Self.polKey.lowercased() {
            guard
                let s = Self.switches.first(where: {
                    $0.value.lowercased() == e.value.lowercased()
                        || $0.value.lowercased() + "retroactive" == e.value.lowercased()
                }),
                let n = pol.number(e), n != 0
            else { continue }
            let isSwitch = s.value.lowercased() == e.value.lowercased()
            if remove {
                pol.setNumber(e, 0)
                switched.append(e.value)
            } else if isSwitch {
                result.findings.append(
                    Finding(
                        id: "device-install-restricted", rule: id, severity: s.severity,
                        message:
                            "local Group Policy (Registry.pol) sets \(e.value), which blocks installing drivers for \(s.blocks); Windows applies it "
                            + "again at every Group Policy refresh; set remove: true in the policy to switch it off",
                        measured: "Registry.pol \(e.value)=\(n)", requirement: "\(e.value) not enabled"))
            }
        }
        if remove, !switched.isEmpty,
            let change = FileChange.text(file.path, String(latin1: pol.bytes), encoding: .latin1, in: facts.files)
        {
            result.actions.append(
                Action(
                    rule: id,
                    description:
                        "switch off device-installation restrictions \(switched.joined(separator: ", ")) in the local Group Policy (Registry.pol)",
                    target: "Registry.pol", changes: [], files: [change]))
        }
    }

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        [RegistryRequirement(.software, Self.path, depth: 1), RegistryRequirement(.software, Self.history, depth: 0)]
    }

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var result = RuleResult()
        localPolicy(facts, into: &result)
        guard let key = facts.registry.key(.software, Self.path) else { return result }
        let domainPolicy = facts.registry.key(.software, Self.history) != nil
        var edit = KeyEdit(.software, Self.path, key)
        var switched: [String] = []
        for s in Self.switches where key.value(s.value)?.number == 1 {
            let list =
                s.list.flatMap { key.subkey($0) }?.values.compactMap { v -> String? in
                    if case .string(let text) = v.value { return text }
                    return nil
                } ?? []
            let shown = list.isEmpty ? "" : " (" + list.joined(separator: ", ") + ")"
            if remove {
                edit.set(s.value, .dword(0))
                if key.value(s.value + "Retroactive") != nil { edit.set(s.value + "Retroactive", .dword(0)) }
                switched.append(s.value)
            } else {
                result.findings.append(
                    Finding(
                        id: "device-install-restricted", rule: id, severity: s.severity,
                        message:
                            "Group Policy \(s.value) blocks installing drivers for \(s.blocks)\(shown); new platform devices may get no driver"
                            + (domainPolicy ? " (domain Group Policy has been applied here and may set it again)" : "")
                            + "; set remove: true in the policy to switch it off",
                        measured: "\(s.value)=1", requirement: "\(s.value) not enabled"))
            }
        }
        if !edit.changes.isEmpty {
            result.actions.append(
                Action(
                    rule: id,
                    description: "switch off device-installation restrictions \(switched.joined(separator: ", "))",
                    target: nil, changes: edit.changes))
            if domainPolicy {
                result.findings.append(
                    Finding(
                        id: "domain-policy-applied", rule: id, severity: .info,
                        message:
                            "domain Group Policy has been applied to this Windows: it may set the device-installation restrictions again at its next refresh",
                        measured: "SOFTWARE\\\(Self.history) present", requirement: nil))
            }
        }
        return result
    }
}
