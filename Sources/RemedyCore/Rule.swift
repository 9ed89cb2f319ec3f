/// A remediation: reads facts, proposes actions and findings. Rules are pure:
/// `evaluate` sees only plain values and must not do I/O.
public protocol Rule: Sendable {
    /// The id a policy uses, e.g. `nic-dhcp`.
    var id: String { get }
    /// The registry subtrees this rule needs, given the OS found.
    func requirements(for os: OSFacts) -> [RegistryRequirement]
    /// What the image needs.
    func evaluate(_ facts: ImageFacts) -> RuleResult
    /// A rule that describes the image as the plan leaves it (image
    /// properties) rather than changing it: the planner evaluates it once,
    /// on the final state, wherever it stands in the policy.
    var describesResult: Bool { get }
    /// The registry subtrees this rule needs once the payloads are known
    /// (drivers from virtio-win, payload files); defaults to `requirements(for:)`.
    func requirements(for os: OSFacts, payloads: PayloadFacts) -> [RegistryRequirement]
    /// Files in the image this rule needs to know about (present or not, checksum, text), given
    /// the facts read so far (OS, payloads, registry; `files` is still empty).
    func fileRequirements(for facts: ImageFacts) -> [FileRequirement]
}

extension Rule {
    public var describesResult: Bool { false }
    public func requirements(for os: OSFacts, payloads: PayloadFacts) -> [RegistryRequirement] { requirements(for: os) }
    public func fileRequirements(for facts: ImageFacts) -> [FileRequirement] { [] }
}

public struct RuleResult: Sendable, Equatable {
    public var actions: [Action]
    public var findings: [Finding]
    /// Cloud image properties the image supports (e.g. `hw_disk_bus`).
    public var properties: [String: String]

    public init(actions: [Action] = [], findings: [Finding] = [], properties: [String: String] = [:]) {
        self.actions = actions
        self.findings = findings
        self.properties = properties
    }
}

/// Documentation of a rule, for `remedy explain`.
public struct RuleDocumentation: Sendable {
    public var id: String
    public var summary: String
    public var checks: String
    public var changes: String
    public var why: String
    public var parameters: [(name: String, meaning: String)]

    public init(id: String, summary: String, checks: String, changes: String, why: String, parameters: [(name: String, meaning: String)] = []) {
        self.id = id
        self.summary = summary
        self.checks = checks
        self.changes = changes
        self.why = why
        self.parameters = parameters
    }
}

/// A built-in rule kind: its documentation and how to build it from policy parameters.
public struct BuiltinRule: Sendable {
    public var documentation: RuleDocumentation
    public var make: @Sendable (PolicyParameters) throws -> any Rule

    public init(documentation: RuleDocumentation, make: @escaping @Sendable (PolicyParameters) throws -> any Rule) {
        self.documentation = documentation
        self.make = make
    }

    /// Every built-in rule remedy knows.
    public static let all: [BuiltinRule] = [
        NicDhcpRule.builtin, IdeBootRule.builtin, InputDevicesRule.builtin, PvCleanupRule.builtin,
        CrashSettingsRule.builtin, RemoteAccessRule.builtin, DriverRestrictionsRule.builtin, ImageMetadataRule.builtin,
        ImageAcceptanceRule.builtin, VirtioDriversRule.builtin, MultiQueueRule.builtin, UefiFallbackRule.builtin,
        GuestAgentRule.builtin,
    ]

    public static func named(_ id: String) -> BuiltinRule? {
        all.first { $0.documentation.id == id }
    }
}

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
    static func classKey(_ cs: String, _ guid: String) -> RegistryPath { RegistryPath("\(cs)\\Control\\Class\\\(guid)") }

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
