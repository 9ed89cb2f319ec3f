/// `nic-dhcp`: every interface with static IPv4 addressing, in every control
/// set, is switched to "Obtain an IP address automatically" and "Obtain DNS
/// server address automatically".
///
/// The values written are those Microsoft's TCP/IP registry reference gives
/// for a DHCP-configured interface: `EnableDHCP` = 1; `IPAddress` and
/// `SubnetMask` = `0.0.0.0` (a valid address there "takes precedence over
/// DhcpIPAddress", so 0.0.0.0 is what hands the address to DHCP); no static
/// `DefaultGateway` / `DefaultGatewayMetric` (a static gateway overrides
/// `DhcpDefaultGateway`); `NameServer` empty (a non-empty NameServer overrides
/// `DhcpNameServer`). The `Dhcp*` values are the DHCP client's own state and
/// are left alone.
public struct NicDhcpRule: Rule {
    public let id = "nic-dhcp"
    /// Keep static DNS servers (`NameServer`) while switching the address to DHCP.
    public var keepStaticDNS: Bool

    public init(keepStaticDNS: Bool = false) { self.keepStaticDNS = keepStaticDNS }

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: "nic-dhcp",
            summary: "Set every statically addressed network interface to DHCP, in every control set.",
            checks: "SYSTEM\\ControlSet00N\\Services\\Tcpip\\Parameters\\Interfaces\\{GUID} for every control set in the hive "
                + "(Current, Default, LastKnownGood, Failed and any other): an interface is static when EnableDHCP is 0, "
                + "or absent while IPAddress holds an address other than 0.0.0.0. Interfaces already on DHCP are left alone.",
            changes: "EnableDHCP=1; IPAddress and SubnetMask=0.0.0.0 (type kept); DefaultGateway and DefaultGatewayMetric "
                + "emptied; NameServer emptied (obtain DNS automatically) unless keep-static-dns is true. Dhcp* lease values are not touched.",
            why: "The new cloud network assigns addresses with DHCP; a static address from the old network leaves the instance "
                + "unreachable. These are the values Windows documents for a DHCP-configured interface (Microsoft TCP/IP registry "
                + "reference: IPAddress/SubnetMask 0.0.0.0 defer to DhcpIPAddress/DhcpSubnetMask; a static DefaultGateway or "
                + "NameServer overrides the DHCP-supplied one). All control sets are changed because LastKnownGood may boot another one.",
            parameters: [("keep-static-dns", "true keeps NameServer (static DNS servers); default false")]
        ),
        make: { params in
            try params.only(["keep-static-dns"], rule: "nic-dhcp")
            return NicDhcpRule(keepStaticDNS: try params.bool("keep-static-dns", default: false))
        }
    )

    static func interfacesPath(_ controlSet: String) -> RegistryPath {
        RegistryPath("\(controlSet)\\Services\\Tcpip\\Parameters\\Interfaces")
    }

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        os.controlSets.map { RegistryRequirement(.system, Self.interfacesPath($0.name), depth: 1) }
    }

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var actions: [Action] = []
        for cs in facts.os.orderedControlSets {
            let base = Self.interfacesPath(cs.name)
            guard let interfaces = facts.registry.key(.system, base) else { continue }
            for iface in interfaces.subkeys.sorted(by: { $0.name.lowercased() < $1.name.lowercased() }) {
                if let action = action(for: iface, at: base.appending(iface.name), controlSet: cs) {
                    actions.append(action)
                }
            }
        }
        return RuleResult(actions: actions)
    }

    static func addresses(_ v: RegistryValue?) -> [String] {
        switch v {
        case .multiString(let l): l.filter { !$0.isEmpty }
        case .string(let s), .expandString(let s): s.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
        default: []
        }
    }

    static func isStatic(_ iface: RegistryKey) -> Bool {
        let real = addresses(iface.value("IPAddress")).filter { $0 != "0.0.0.0" }
        switch iface.value("EnableDHCP") {
        case .dword(let v): return v == 0 && !real.isEmpty
        case nil: return !real.isEmpty
        default: return false
        }
    }

    /// The same kind of value as the one stored (REG_SZ stays REG_SZ), holding `list`.
    static func like(_ existing: RegistryValue?, _ list: [String]) -> RegistryValue {
        switch existing {
        case .string: .string(list.joined(separator: " "))
        default: .multiString(list)
        }
    }

    func action(for iface: RegistryKey, at path: RegistryPath, controlSet: ControlSet) -> Action? {
        guard Self.isStatic(iface) else { return nil }
        var changes: [Change] = []
        func set(_ name: String, _ after: RegistryValue) {
            let before = iface.value(name)
            if before != after { changes.append(.set(.system, path, name, from: before, to: after)) }
        }
        set("EnableDHCP", .dword(1))
        set("IPAddress", Self.like(iface.value("IPAddress"), ["0.0.0.0"]))
        set("SubnetMask", Self.like(iface.value("SubnetMask"), ["0.0.0.0"]))
        for name in ["DefaultGateway", "DefaultGatewayMetric"] {
            let v = iface.value(name)
            if !Self.addresses(v).isEmpty { set(name, Self.like(v, [])) }
        }
        if !keepStaticDNS, case .string(let dns)? = iface.value("NameServer"), !dns.isEmpty {
            set("NameServer", .string(""))
        }
        let ips = Self.addresses(iface.value("IPAddress"))
        let masks = Self.addresses(iface.value("SubnetMask"))
        let shown = ips.enumerated().map { i, ip in "\(ip)/\(i < masks.count ? masks[i] : "?")" }
        var from = shown.isEmpty ? "static" : "static " + shown.joined(separator: ", ")
        if let gw = Self.addresses(iface.value("DefaultGateway")).first { from += " via \(gw)" }
        let roles = controlSet.roles.isEmpty ? "" : " (" + controlSet.roles.map(\.rawValue).joined(separator: ", ") + ")"
        let dns = keepStaticDNS ? " (static DNS kept)" : ""
        return Action(rule: id, description: "interface \(iface.name) in \(controlSet.name)\(roles): \(from) -> DHCP\(dns)",
                      target: iface.name, changes: changes)
    }
}
