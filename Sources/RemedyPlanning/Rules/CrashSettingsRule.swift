/// `crash-settings`: a boot failure stays on screen (`AutoReboot` = 0) so a
/// user of the cloud console can read the stop code, instead of a reboot loop.
public struct CrashSettingsRule: Rule {
    /// The id a policy names this rule by, declared here once.
    public static let id = "crash-settings"
    public var id: String { Self.id }
    public var autoReboot: Bool

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: Self.id,
            summary: "Keep a blue screen on screen: CrashControl AutoReboot=0 in every control set.",
            checks: "SYSTEM\\ControlSet00N\\Control\\CrashControl, value AutoReboot (REG_DWORD), in every control set.",
            changes: "AutoReboot=0 (or 1 when auto-reboot is true). The dump settings are not touched.",
            why:
                "Windows reboots after a stop error by default (AutoReboot=1), so an image that fails its first boot on the new "
                + "platform (0x7B INACCESSIBLE_BOOT_DEVICE is the classic one) just loops and the stop code is never seen on the "
                + "cloud's VNC console. virt-v2v makes the same change for the same reason.",
            parameters: [("auto-reboot", "false (default) keeps the stop screen; true restores Windows' default")]),
        make: { p, _ in
            try p.only(["auto-reboot"], rule: Self.id)
            return CrashSettingsRule(autoReboot: try p.bool("auto-reboot", default: false))
        })

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        os.orderedControlSets.map { RegistryRequirement(.system, Self.path($0.name), depth: 0) }
    }

    static func path(_ cs: String) -> RegistryPath { RegistryPath("\(cs)\\Control\\CrashControl") }

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var result = RuleResult()
        for cs in facts.os.orderedControlSets {
            let path = Self.path(cs.name)
            var edit = KeyEdit(.system, path, facts.registry.key(.system, path))
            edit.set("AutoReboot", .dword(autoReboot ? 1 : 0))
            if !edit.changes.isEmpty {
                result.actions.append(
                    Action(
                        rule: id,
                        description:
                            "\(autoReboot ? "reboot" : "stay on the stop screen") after a crash in \(cs.label)",
                        target: cs.name, changes: edit.changes))
            }
        }
        return result
    }
}
