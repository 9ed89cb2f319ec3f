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
    /// The id a policy names this rule by, declared here once.
    public static let id = "nic-dhcp"
    public var id: String { Self.id }
    /// Keep static DNS servers (`NameServer`) while switching the address to DHCP.
    public var keepStaticDNS: Bool

    public init(keepStaticDNS: Bool = false) { self.keepStaticDNS = keepStaticDNS }

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: Self.id,
            summary: "Set every statically addressed network interface to DHCP, in every control set.",
            checks:
                "SYSTEM\\ControlSet00N\\Services\\Tcpip\\Parameters\\Interfaces\\{GUID} for every control set in the hive "
                + "(Current, Default, LastKnownGood, Failed and any other): an interface is static when EnableDHCP is 0, "
                + "or absent while IPAddress holds an address other than 0.0.0.0. Interfaces already on DHCP are left alone.",
            changes:
                "EnableDHCP=1; IPAddress and SubnetMask=0.0.0.0 (type kept); DefaultGateway and DefaultGatewayMetric "
                + "emptied; NameServer emptied (obtain DNS automatically) unless keep-static-dns is true. Dhcp* lease values are not touched. "
                + "What the static configuration left elsewhere goes too: Tcpip\\Parameters\\PersistentRoutes values "
                + "\"0.0.0.0,0.0.0.0,GATEWAY,METRIC\" for the interface's static gateways, and in the IPv4 NSI store "
                + "(Control\\Nsi\\{eb004a00-9b1a-11d4-9123-0050047759bc}) the interface's persisted addresses (\\10) and its default "
                + "routes via those gateways (\\16), the interface found by its LUID (NetLuidIndex and *IfType of the adapter "
                + "whose NetCfgInstanceId is the interface GUID). Other persistent routes (another destination or gateway: the "
                + "user's own) are kept.",
            why:
                "The new cloud network assigns addresses with DHCP; a static address from the old network leaves the instance "
                + "unreachable. These are the values Windows documents for a DHCP-configured interface (Microsoft TCP/IP registry "
                + "reference: IPAddress/SubnetMask 0.0.0.0 defer to DhcpIPAddress/DhcpSubnetMask; a static DefaultGateway or "
                + "NameServer overrides the DHCP-supplied one). All control sets are changed because LastKnownGood may boot another one. "
                + "A static default route kept as a persistent route, or an address persisted in the NSI store, is put back at "
                + "every boot: the old gateway would compete with the DHCP one and the old address would stay on the interface.",
            parameters: [("keep-static-dns", "true keeps NameServer (static DNS servers); default false")]
        ),
        make: { params, _ in
            try params.only(["keep-static-dns"], rule: Self.id)
            return NicDhcpRule(keepStaticDNS: try params.bool("keep-static-dns", default: false))
        }
    )

    static func interfacesPath(_ controlSet: String) -> RegistryPath {
        RegistryPath("\(controlSet)\\Services\\Tcpip\\Parameters\\Interfaces")
    }

    static func persistentRoutesPath(_ controlSet: String) -> RegistryPath {
        RegistryPath("\(controlSet)\\Services\\Tcpip\\Parameters\\PersistentRoutes")
    }

    /// The IPv4 network module's persisted NSI store (NPI_MS_IPV4_MODULEID): object 10 holds persisted unicast
    /// addresses, object 16 persisted routes; each value name starts with (10) or contains (16) the interface LUID.
    static let ipv4Nsi = "{eb004a00-9b1a-11d4-9123-0050047759bc}"
    static func nsiPath(_ controlSet: String, _ object: Int) -> RegistryPath {
        RegistryPath("\(controlSet)\\Control\\Nsi\\\(ipv4Nsi)\\\(object)")
    }

    /// Network adapters' class key: NetCfgInstanceId (the interface GUID), NetLuidIndex and *IfType make the LUID.
    static func netClassPath(_ controlSet: String) -> RegistryPath {
        RegistryPath("\(controlSet)\\Control\\Class\\{4D36E972-E325-11CE-BFC1-08002BE10318}")
    }

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        os.controlSets.flatMap { cs in
            [
                RegistryRequirement(.system, Self.interfacesPath(cs.name), depth: 1),
                RegistryRequirement(.system, Self.persistentRoutesPath(cs.name), depth: 0),
                RegistryRequirement(.system, Self.nsiPath(cs.name, 10), depth: 0),
                RegistryRequirement(.system, Self.nsiPath(cs.name, 16), depth: 0),
                RegistryRequirement(.system, Self.netClassPath(cs.name), depth: 1),
            ]
        }
    }

    /// The interface's LUID as the NSI store spells it in value names: the 64-bit NET_LUID
    /// (NetLuidIndex << 24 | IfType << 48) as 8 little-endian bytes in lowercase hex. nil when the
    /// adapter's class key is not found.
    static func luid(_ facts: ImageFacts, _ controlSet: String, _ guid: String) -> String? {
        guard let adapters = facts.registry.key(.system, netClassPath(controlSet)) else { return nil }
        for a in adapters.subkeys {
            guard case .string(let id)? = a.value("NetCfgInstanceId"), id.lowercased() == guid.lowercased(),
                let index = a.value("NetLuidIndex")?.number, let type = a.value("*IfType")?.number
            else { continue }
            let v = (index & 0xFF_FFFF) << 24 | (type & 0xFFFF) << 48
            return (0..<8).map { String(format: "%02x", (v >> (8 * UInt64($0))) & 0xFF) }.joined()
        }
        return nil
    }

    /// An IPv4 address as the NSI store spells it (network order, lowercase hex), nil when not an address.
    static func nsiHex(_ address: String) -> String? {
        let parts = address.split(separator: ".").compactMap { UInt8($0) }
        guard parts.count == 4, address.split(separator: ".").count == 4 else { return nil }
        return parts.map { String(format: "%02x", $0) }.joined()
    }

    /// What the static configuration left beside the interface key, removed as Windows removes it when the adapter is
    /// switched to "obtain automatically": the default routes via its static gateways kept as persistent routes
    /// (`PersistentRoutes` "0.0.0.0,0.0.0.0,GATEWAY,METRIC"), and its persisted addresses and default routes in the
    /// IPv4 NSI store. Other persistent routes (a destination other than 0.0.0.0/0, or another gateway) are the
    /// user's own and stay.
    func staleStaticState(
        _ facts: ImageFacts, _ iface: RegistryKey, controlSet cs: String, taken: inout Set<String>
    ) -> [Change] {
        var changes: [Change] = []
        let gateways = Self.addresses(iface.value("DefaultGateway")).filter { $0 != "0.0.0.0" }
        let routes = Self.persistentRoutesPath(cs)
        for v in facts.registry.key(.system, routes)?.values ?? [] {
            let f = v.name.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard f.count == 4, f[0] == "0.0.0.0", f[1] == "0.0.0.0", gateways.contains(f[2]),
                taken.insert("\(routes)|\(v.name)".lowercased()).inserted
            else { continue }
            changes.append(Change(op: .deleteValue, hive: .system, key: routes, name: v.name, before: v.value))
        }
        guard let luid = Self.luid(facts, cs, iface.name) else { return changes }
        let hops = Set(gateways.compactMap(Self.nsiHex))
        for object in [10, 16] {
            let path = Self.nsiPath(cs, object)
            for v in facts.registry.key(.system, path)?.values ?? [] {
                let n = Array(v.name.lowercased())
                let stale: Bool
                if object == 10 {
                    // LUID (16 hex) + IPv4 address (8 hex) + padding: a persisted unicast address of this interface.
                    stale = n.count >= 24 && String(n[0..<16]) == luid
                } else {
                    // Destination prefix (24 zero bytes: 0.0.0.0/0), LUID, LUID, next hop, padding: a default route
                    // of this interface via one of its static gateways.
                    stale =
                        n.count == 96 && n[0..<48].allSatisfy { $0 == "0" } && String(n[48..<64]) == luid
                        && hops.contains(String(n[80..<88]))
                }
                if stale, taken.insert("\(path)|\(v.name)".lowercased()).inserted {
                    changes.append(Change(op: .deleteValue, hive: .system, key: path, name: v.name, before: v.value))
                }
            }
        }
        return changes
    }

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var actions: [Action] = []
        for cs in facts.os.orderedControlSets {
            let base = Self.interfacesPath(cs.name)
            guard let interfaces = facts.registry.key(.system, base) else { continue }
            var taken: Set<String> = []
            for iface in interfaces.subkeys.sorted(by: { $0.name.lowercased() < $1.name.lowercased() }) {
                if var action = action(for: iface, at: base.appending(iface.name), controlSet: cs) {
                    let stale = staleStaticState(facts, iface, controlSet: cs.name, taken: &taken)
                    if !stale.isEmpty {
                        action.changes += stale
                        action.description += "; its static default routes and persisted addresses removed"
                    }
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
        let roles =
            controlSet.roles.isEmpty ? "" : " (" + controlSet.roles.map(\.rawValue).joined(separator: ", ") + ")"
        let dns = keepStaticDNS ? " (static DNS kept)" : ""
        return Action(
            rule: id, description: "interface \(iface.name) in \(controlSet.name)\(roles): \(from) -> DHCP\(dns)",
            target: iface.name, changes: changes)
    }
}
