/// `remote-access`: Remote Desktop is enabled and reachable, so the
/// instance can be managed once it boots on the cloud.
public struct RemoteAccessRule: Rule {
    /// The id a policy names this rule by, declared here once.
    public static let id = "remote-access"
    public var id: String { Self.id }

    public enum NLA: String, Sendable { case required, disabled, keep }
    public var nla: NLA
    public var firewall: Bool

    /// The inbox Remote Desktop inbound rules (names as Windows stores them under FirewallRules).
    static let firewallRules = [
        "RemoteDesktop-UserMode-In-TCP", "RemoteDesktop-UserMode-In-UDP", "RemoteDesktop-In-TCP",
    ]

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: Self.id,
            summary:
                "Enable Remote Desktop: connections allowed, TermService not disabled, the inbox firewall rules active, NLA as the policy says.",
            checks:
                "ControlSet00N\\Control\\Terminal Server fDenyTSConnections; ...\\WinStations\\RDP-Tcp UserAuthentication; "
                + "Services\\TermService Start; Services\\SharedAccess\\Parameters\\FirewallPolicy\\FirewallRules values "
                + "RemoteDesktop-UserMode-In-TCP/-UDP (RemoteDesktop-In-TCP before Windows 8); and the Group Policy override "
                + "SOFTWARE\\Policies\\Microsoft\\Windows NT\\Terminal Services fDenyTSConnections.",
            changes:
                "fDenyTSConnections=0 (and the policy value, when it denies); TermService Start=3 when disabled; Active=FALSE "
                + "turned to Active=TRUE inside the existing firewall rule strings (the rest of each string, whose version "
                + "prefix differs between builds, is kept); UserAuthentication=1 (nla: required) or 0 (nla: disabled).",
            why:
                "An instance on a new cloud is reached over RDP first; with RDP off or blocked by the firewall it can only be "
                + "repaired from the console. These are the values Azure's VHD preparation guide sets (fDenyTSConnections=0, "
                + "the Remote Desktop firewall rules enabled, UserAuthentication=1).",
            parameters: [
                ("nla", "required, disabled or keep (default keep): Network Level Authentication"),
                ("firewall", "true (default) enables the inbox Remote Desktop firewall rules"),
            ]),
        make: { p, _ in
            try p.only(["nla", "firewall"], rule: Self.id)
            let nla = NLA(rawValue: try p.string("nla", default: "keep", oneOf: ["required", "disabled", "keep"]))!
            return RemoteAccessRule(nla: nla, firewall: try p.bool("firewall", default: true))
        })

    static func terminalServer(_ cs: String) -> RegistryPath { RegistryPath("\(cs)\\Control\\Terminal Server") }
    static func rdpTcp(_ cs: String) -> RegistryPath {
        RegistryPath("\(cs)\\Control\\Terminal Server\\WinStations\\RDP-Tcp")
    }
    static func rules(_ cs: String) -> RegistryPath {
        RegistryPath("\(cs)\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\FirewallRules")
    }
    static let policy = RegistryPath("Policies\\Microsoft\\Windows NT\\Terminal Services")

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        os.orderedControlSets.flatMap { cs in
            [
                Self.terminalServer(cs.name), Self.rdpTcp(cs.name), Self.rules(cs.name),
                WindowsKeys.service(cs.name, "TermService"),
            ]
            .map { RegistryRequirement(.system, $0, depth: 0) }
        } + [RegistryRequirement(.software, Self.policy, depth: 0)]
    }

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var result = RuleResult()
        func add(_ edit: KeyEdit, _ what: String, _ target: String?) {
            if !edit.changes.isEmpty {
                result.actions.append(Action(rule: id, description: what, target: target, changes: edit.changes))
            }
        }
        for cs in facts.os.orderedControlSets {
            let ts = Self.terminalServer(cs.name)
            var allow = KeyEdit(.system, ts, facts.registry.key(.system, ts))
            allow.set("fDenyTSConnections", .dword(0))
            add(allow, "allow Remote Desktop connections in \(cs.label)", cs.name)

            if let svc = facts.registry.key(.system, WindowsKeys.service(cs.name, "TermService")),
                svc.value("Start")?.number == UInt64(ServiceStart.disabled)
            {
                var edit = KeyEdit(.system, WindowsKeys.service(cs.name, "TermService"), svc)
                edit.set("Start", .dword(ServiceStart.manual))
                add(edit, "re-enable the Remote Desktop service (TermService) in \(cs.label)", "TermService")
            }

            let rdp = Self.rdpTcp(cs.name)
            if let key = facts.registry.key(.system, rdp) {
                if nla != .keep {
                    var edit = KeyEdit(.system, rdp, key)
                    edit.set("UserAuthentication", .dword(nla == .required ? 1 : 0))
                    add(
                        edit,
                        "\(nla == .required ? "require" : "do not require") Network Level Authentication in \(cs.label)",
                        cs.name)
                }
            } else {
                result.findings.append(
                    Finding(
                        id: "rdp-listener-missing", rule: id, severity: .warning,
                        message:
                            "\(cs.label) has no RDP-Tcp listener key (Terminal Server\\WinStations\\RDP-Tcp): Remote Desktop is not installed as Windows installs it",
                        measured: "absent", requirement: "Terminal Server\\WinStations\\RDP-Tcp"))
            }

            guard firewall else { continue }
            let rulesPath = Self.rules(cs.name)
            let stored = facts.registry.key(.system, rulesPath)
            let present = (stored?.values ?? []).filter { v in
                Self.firewallRules.contains { $0.lowercased() == v.name.lowercased() }
            }
            if present.isEmpty {
                result.findings.append(
                    Finding(
                        id: "rdp-firewall-rule-missing", rule: id, severity: .warning,
                        message:
                            "\(cs.label) has none of Windows' Remote Desktop firewall rules (\(Self.firewallRules.joined(separator: ", "))); "
                            + "remedy does not invent one: allow TCP 3389 in the cloud's security group and check the firewall once the instance runs",
                        measured: "absent", requirement: "an active Remote Desktop inbound rule"))
            }
            var edit = KeyEdit(.system, rulesPath, stored)
            for v in present {
                guard case .string(let text) = v.value, text.contains("|Active=FALSE|") else { continue }
                edit.set(v.name, .string(text.replacingOccurrences(of: "|Active=FALSE|", with: "|Active=TRUE|")))
            }
            add(edit, "activate the Remote Desktop firewall rules in \(cs.label)", cs.name)
        }
        if let key = facts.registry.key(.software, Self.policy), key.value("fDenyTSConnections")?.number == 1 {
            var edit = KeyEdit(.software, Self.policy, key)
            edit.set("fDenyTSConnections", .dword(0))
            add(edit, "lift the Group Policy that denies Remote Desktop connections", nil)
        }
        return result
    }
}
