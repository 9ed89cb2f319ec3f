/// `input-devices`: device-class filter drivers left by the old platform
/// are dropped so the new platform's keyboard, mouse and disk stacks start.
public struct InputDevicesRule: Rule {
    /// The id a policy names this rule by, declared here once.
    public static let id = "input-devices"
    public var id: String { Self.id }

    /// Device setup classes whose class-wide filters are checked (Microsoft's system-defined device setup classes).
    public static let classes: [(name: String, guid: String, required: String?)] = [
        ("Keyboard", "{4D36E96B-E325-11CE-BFC1-08002BE10318}", "kbdclass"),
        ("Mouse", "{4D36E96F-E325-11CE-BFC1-08002BE10318}", "mouclass"),
        ("DiskDrive", "{4D36E967-E325-11CE-BFC1-08002BE10318}", nil),
        ("SCSIAdapter", "{4D36E97B-E325-11CE-BFC1-08002BE10318}", nil),
        ("CDROM", "{4D36E965-E325-11CE-BFC1-08002BE10318}", nil),
        ("HDC", "{4D36E96A-E325-11CE-BFC1-08002BE10318}", nil),
        ("System", "{4D36E97D-E325-11CE-BFC1-08002BE10318}", nil),
    ]

    /// Windows' own class filters: never dropped; their absence is reported.
    static let standard: Set<String> = ["kbdclass", "mouclass", "partmgr"]

    public var keep: Set<String>

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: Self.id,
            summary:
                "Drop stale class filter drivers (keyboard, mouse, disk, SCSI, CD-ROM, IDE, system) left by the old platform.",
            checks:
                "UpperFilters and LowerFilters of the Keyboard {4D36E96B-...}, Mouse {4D36E96F-...}, DiskDrive {4D36E967-...}, "
                + "SCSIAdapter {4D36E97B-...}, CDROM {4D36E965-...}, HDC {4D36E96A-...} and System {4D36E97D-...} classes under "
                + "ControlSet00N\\Control\\Class, in every control set, against the installed services.",
            changes:
                "Removes a filter whose service is not installed or is disabled, or that belongs to an old hypervisor's tools "
                + "(VMware vmkbd/vmmouse/vmusbmouse, Parallels prl_*, Xen xenfilt, VirtualBox VBoxMouse); an emptied value "
                + "is deleted. Windows' own filters (kbdclass, mouclass, partmgr) are kept, and restored to the keyboard and mouse "
                + "UpperFilters when missing.",
            why:
                "A class filter applies to every device of the class: when its driver is missing or disabled, no device of the class "
                + "starts. On the keyboard and mouse classes that is \"no keyboard or mouse\" on the new platform; on the disk, SCSI "
                + "and IDE classes it is a STOP 0x7B INACCESSIBLE_BOOT_DEVICE. Old guest tools (VMware's vmkbd/vmmouse, Xen's "
                + "xenfilt, Parallels' prl_strg) register exactly such filters.",
            parameters: [("keep", "filter names never to drop (default none)")]),
        make: { p, _ in
            try p.only(["keep"], rule: Self.id)
            return InputDevicesRule(keep: Set(try p.strings("keep", default: []).map { $0.lowercased() }))
        })

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        WindowsKeys.servicesRequirements(os)
            + os.orderedControlSets.flatMap { cs in
                Self.classes.map { RegistryRequirement(.system, WindowsKeys.classKey(cs.name, $0.guid), depth: 0) }
            }
    }

    static let oldPlatformFilters = PvCleanupRule(platforms: PvCleanupRule.platforms)

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var result = RuleResult()
        for cs in facts.os.orderedControlSets {
            let services = WindowsKeys.serviceNames(facts, cs.name)
            for cls in Self.classes {
                let path = WindowsKeys.classKey(cs.name, cls.guid)
                guard let key = facts.registry.key(.system, path) else { continue }
                var edit = KeyEdit(.system, path, key)
                var dropped: [String] = []
                for valueName in ["UpperFilters", "LowerFilters"] {
                    guard let stored = key.value(valueName) else {
                        if valueName == "UpperFilters", let req = cls.required {
                            edit.set(valueName, .multiString([req]))
                            dropped.append("+\(req)")
                        }
                        continue
                    }
                    let entries = stored.strings.filter { !$0.isEmpty }
                    var kept: [String] = []
                    for f in entries {
                        let lower = f.lowercased()
                        if Self.standard.contains(lower) || keep.contains(lower) {
                            kept.append(f)
                            if services[lower] == nil {
                                result.findings.append(
                                    Finding(
                                        id: "standard-filter-missing", rule: id, severity: .blocker,
                                        message:
                                            "\(cls.name) class filter \(f) in \(cs.label) has no service: Windows' own driver is missing from this image",
                                        measured: "Services\\\(f) absent", requirement: "Services\\\(f) installed"))
                            }
                            continue
                        }
                        let svc = services[lower]
                        let disabled = svc?.value("Start")?.number == UInt64(ServiceStart.disabled)
                        if svc == nil || disabled || Self.oldPlatformFilters.platform(ofService: f) != nil {
                            dropped.append(f)
                        } else {
                            kept.append(f)
                        }
                    }
                    if valueName == "UpperFilters", let req = cls.required,
                        !kept.contains(where: { $0.lowercased() == req })
                    {
                        kept.append(req)
                        dropped.append("+\(req)")
                    }
                    guard kept != entries else { continue }
                    if kept.isEmpty { edit.delete(valueName) } else { edit.set(valueName, .multiString(kept)) }
                }
                guard !edit.changes.isEmpty else { continue }
                let removed = dropped.filter { !$0.hasPrefix("+") }
                let added = dropped.filter { $0.hasPrefix("+") }.map { String($0.dropFirst()) }
                var what: [String] = []
                if !removed.isEmpty {
                    what.append("drop stale filter\(removed.count == 1 ? "" : "s") \(removed.joined(separator: ", "))")
                }
                if !added.isEmpty { what.append("restore \(added.joined(separator: ", "))") }
                result.actions.append(
                    Action(
                        rule: id, description: "\(cls.name) class in \(cs.label): \(what.joined(separator: "; "))",
                        target: cls.guid, changes: edit.changes))
            }
        }
        return result
    }
}
