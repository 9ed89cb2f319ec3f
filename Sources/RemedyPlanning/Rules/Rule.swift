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

    public init(
        id: String, summary: String, checks: String, changes: String, why: String,
        parameters: [(name: String, meaning: String)] = []
    ) {
        self.id = id
        self.summary = summary
        self.checks = checks
        self.changes = changes
        self.why = why
        self.parameters = parameters
    }
}

/// A built-in rule kind: its documentation and how to build it from policy parameters.
/// A rule never reads a file while it is built: what it needs besides its parameters (the payload manifests it
/// names in `manifests`) the engine loads beforehand and hands to `make` as ``RuleInputs``.
public struct BuiltinRule: Sendable {
    public var documentation: RuleDocumentation
    /// The payload manifests (by name) the rule is built from.
    public var manifests: [String]
    public var make: @Sendable (PolicyParameters, RuleInputs) throws -> any Rule

    public init(
        documentation: RuleDocumentation, manifests: [String] = [],
        make: @escaping @Sendable (PolicyParameters, RuleInputs) throws -> any Rule
    ) {
        self.documentation = documentation
        self.manifests = manifests
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

/// What building a rule needs from outside the policy, loaded by the engine before the rule is built: the payload
/// manifests its ``BuiltinRule/manifests`` names (a manifest that is missing or unreadable is absent).
public struct RuleInputs: Sendable {
    public var manifests: [String: PayloadManifest]

    public init(manifests: [String: PayloadManifest] = [:]) { self.manifests = manifests }
}
