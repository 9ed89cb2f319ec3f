/// Collects the changes to one key, comparing with what the key holds now:
/// a value already as wanted produces no change.
struct KeyEdit {
    let hive: HiveName
    let path: RegistryPath
    let key: RegistryKey?
    private(set) var changes: [Change] = []

    init(_ hive: HiveName, _ path: RegistryPath, _ key: RegistryKey?) {
        self.hive = hive
        self.path = path
        self.key = key
    }

    /// Sets `name` to `value` unless it already holds exactly that. The
    /// stored spelling of the name is kept.
    mutating func set(_ name: String, _ value: RegistryValue) {
        let stored = key?.values.first { $0.name.lowercased() == name.lowercased() }
        if stored?.value != value {
            changes.append(.set(hive, path, stored?.name ?? name, from: stored?.value, to: value))
        }
    }

    /// Deletes `name` when present.
    mutating func delete(_ name: String) {
        if let stored = key?.values.first(where: { $0.name.lowercased() == name.lowercased() }) {
            changes.append(Change(op: .deleteValue, hive: hive, key: path, name: stored.name, before: stored.value))
        }
    }
}

extension ControlSet {
    /// `ControlSet001 (Current, Default)`.
    var label: String { roles.isEmpty ? name : "\(name) (\(roles.map(\.rawValue).joined(separator: ", ")))" }
}

extension RegistryValue {
    /// The value as a number, when it is a DWORD or QWORD.
    var number: UInt64? {
        switch self {
        case .dword(let v): UInt64(v)
        case .qword(let v): v
        default: nil
        }
    }

    /// The strings of a REG_MULTI_SZ (or a single REG_SZ).
    var strings: [String] {
        switch self {
        case .multiString(let l): l
        case .string(let s), .expandString(let s): [s]
        default: []
        }
    }
}

/// Paths and lookups several rules share.
enum WindowsKeys {
    static func services(_ cs: String) -> RegistryPath { RegistryPath("\(cs)\\Services") }
    static func service(_ cs: String, _ name: String) -> RegistryPath { RegistryPath("\(cs)\\Services\\\(name)") }
    static func classKey(_ cs: String, _ guid: String) -> RegistryPath {
        RegistryPath("\(cs)\\Control\\Class\\\(guid)")
    }

    /// Every control set's `Services` key, one level deep (each service's values).
    static func servicesRequirements(_ os: OSFacts) -> [RegistryRequirement] {
        os.orderedControlSets.map { RegistryRequirement(.system, services($0.name), depth: 1) }
    }

    /// The `Start` of a service in a control set, or nil when the service is not installed.
    static func start(_ facts: ImageFacts, _ cs: String, _ name: String) -> UInt64? {
        guard let svc = facts.registry.key(.system, service(cs, name)) else { return nil }
        return svc.value("Start")?.number ?? UInt64.max
    }

    /// The installed services of a control set, by lowercased name.
    static func serviceNames(_ facts: ImageFacts, _ cs: String) -> [String: RegistryKey] {
        var out: [String: RegistryKey] = [:]
        for s in facts.registry.key(.system, services(cs))?.subkeys ?? [] { out[s.name.lowercased()] = s }
        return out
    }
}

/// Service `Start` values (Microsoft's CurrentControlSet\Services reference).
enum ServiceStart {
    static let boot: UInt32 = 0, system: UInt32 = 1, automatic: UInt32 = 2, manual: UInt32 = 3, disabled: UInt32 = 4

    static func name(_ v: UInt64?) -> String {
        switch v {
        case nil: "not installed"
        case 0?: "boot (0)"
        case 1?: "system (1)"
        case 2?: "automatic (2)"
        case 3?: "manual (3)"
        case 4?: "disabled (4)"
        case UInt64.max?: "no Start value"
        case let n?: "\(n)"
        }
    }
}
