/// A remediation: reads facts, proposes actions and findings. Rules are pure:
/// `evaluate` sees only plain values and must not do I/O.
public protocol Rule: Sendable {
    /// The id a policy uses, e.g. `nic-dhcp`.
    var id: String { get }
    /// The registry subtrees this rule needs, given the OS found.
    func requirements(for os: OSFacts) -> [RegistryRequirement]
    /// What the image needs.
    func evaluate(_ facts: ImageFacts) -> RuleResult
}

public struct RuleResult: Sendable, Equatable {
    public var actions: [Action]
    public var findings: [Finding]
    public init(actions: [Action] = [], findings: [Finding] = []) {
        self.actions = actions
        self.findings = findings
    }
}

/// Documentation of a built-in rule, for `remedy explain`.
public struct RuleDocumentation: Sendable {
    public var id: String
    public var summary: String
    public var checks: String
    public var changes: String
    public var why: String
    public var parameters: [(name: String, meaning: String)]
}

/// A built-in rule kind: its documentation and how to build it from policy parameters.
public struct BuiltinRule: Sendable {
    public var documentation: RuleDocumentation
    public var make: @Sendable (PolicyParameters) throws -> any Rule

    /// Every built-in rule remedy knows.
    public static let all: [BuiltinRule] = [NicDhcpRule.builtin]

    public static func named(_ id: String) -> BuiltinRule? {
        all.first { $0.documentation.id == id }
    }
}

extension OSFacts {
    /// Control sets in a stable order (ControlSet001, ControlSet002, ...).
    var orderedControlSets: [ControlSet] { controlSets.sorted { $0.name.lowercased() < $1.name.lowercased() } }
}
