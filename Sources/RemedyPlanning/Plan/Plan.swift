/// One edit remedy will make. Registry edits name the hive, the key's full
/// path inside the hive, the value, and its data before and after (`nil`
/// means absent). apply checks `before` against the image before writing.
public struct Change: Sendable, Equatable, Codable {
    public enum Op: String, Sendable, Codable {
        case setValue = "set-value"
        case deleteValue = "delete-value"
        case createKey = "create-key"
        case deleteKey = "delete-key"
    }

    public var op: Op
    public var hive: HiveName
    public var key: RegistryPath
    public var name: String?
    public var before: RegistryValue?
    public var after: RegistryValue?

    public init(
        op: Op, hive: HiveName, key: RegistryPath, name: String? = nil, before: RegistryValue? = nil,
        after: RegistryValue? = nil
    ) {
        self.op = op
        self.hive = hive
        self.key = key
        self.name = name
        self.before = before
        self.after = after
    }

    public static func set(
        _ hive: HiveName, _ key: RegistryPath, _ name: String, from before: RegistryValue?, to after: RegistryValue
    ) -> Change {
        Change(op: .setValue, hive: hive, key: key, name: name, before: before, after: after)
    }

    private enum CodingKeys: String, CodingKey { case op, hive, key, name, before, after }

    /// `before`/`after` are always present in JSON (`null` = absent), so the document shape is stable.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(op, forKey: .op)
        try c.encode(hive, forKey: .hive)
        try c.encode(key, forKey: .key)
        try c.encode(name, forKey: .name)
        try c.encode(before, forKey: .before)
        try c.encode(after, forKey: .after)
    }
}

/// What one rule will do to one thing (an interface, a service, ...).
public struct Action: Sendable, Equatable, Codable {
    public var rule: String
    /// What is changed and why, in one line.
    public var description: String
    /// The thing acted upon (an interface GUID, a service name), when there is one.
    public var target: String?
    public var changes: [Change]
    /// Files written into (or removed from) the image.
    public var files: [FileChange]

    public init(rule: String, description: String, target: String? = nil, changes: [Change], files: [FileChange] = []) {
        self.rule = rule
        self.description = description
        self.target = target
        self.changes = changes
        self.files = files
    }

    /// Whether the action changes anything.
    public var isEmpty: Bool { changes.isEmpty && files.isEmpty }

    private enum CodingKeys: String, CodingKey { case rule, description, target, changes, files }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rule = try c.decode(String.self, forKey: .rule)
        description = try c.decode(String.self, forKey: .description)
        target = try c.decodeIfPresent(String.self, forKey: .target)
        changes = try c.decode([Change].self, forKey: .changes)
        files = try c.decodeIfPresent([FileChange].self, forKey: .files) ?? []
    }
}

/// A rule the image fails that remedy cannot (or may not) fix.
/// A finding's stable id (`os-version-unsupported`, `hibernated`, ...): a string in JSON and in policies, a type in
/// code. The ids the engine acts on are declared here once.
public struct FindingID: RawRepresentable, Hashable, Comparable, Sendable, Codable, ExpressibleByStringLiteral,
    CustomStringConvertible
{
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { rawValue = value }
    public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(String.self) }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
    public var description: String { rawValue }
    public static func < (a: FindingID, b: FindingID) -> Bool { a.rawValue < b.rawValue }

    /// Windows was hibernated or fast-started: apply refuses to write (Windows would resume and overwrite the edits).
    public static let hibernated: FindingID = "hibernated"
    /// The payload inputs (`--payload`) do not fit the policy or the image.
    public static let payloadMissing: FindingID = "payload-missing"
    public static let payloadUnknown: FindingID = "payload-unknown"
    public static let payloadWrongArch: FindingID = "payload-wrong-arch"
    public static let payloadNotUsed: FindingID = "payload-not-used"
    /// `--virtio-win` is missing or has a known defect for this Windows.
    public static let virtioWinMissing: FindingID = "virtio-win-missing"
    public static let virtioWinKnownIssue: FindingID = "virtio-win-known-issue"

    /// A blocker of these means the user's inputs are wrong (apply stops with `invalid-argument`), not the image.
    public static let aboutInputs: Set<FindingID> = [
        .payloadMissing, .payloadUnknown, .payloadWrongArch, .payloadNotUsed, .virtioWinMissing, .virtioWinKnownIssue,
    ]
}

public struct Finding: Sendable, Equatable, Codable {
    public enum Severity: String, Sendable, Codable, Comparable {
        case blocker, warning, info
        private var rank: Int { self == .blocker ? 0 : self == .warning ? 1 : 2 }
        public static func < (a: Severity, b: Severity) -> Bool { a.rank < b.rank }
    }

    /// Stable identifier, e.g. `os-unsupported`.
    public var id: FindingID
    public var rule: String
    public var severity: Severity
    public var message: String
    /// What was measured in the image, when it is a value.
    public var measured: String?
    /// What the policy requires.
    public var requirement: String?

    public init(
        id: FindingID, rule: String, severity: Severity, message: String, measured: String? = nil,
        requirement: String? = nil
    ) {
        self.id = id
        self.rule = rule
        self.severity = severity
        self.message = message
        self.measured = measured
        self.requirement = requirement
    }
}

public struct PolicyReference: Sendable, Equatable, Codable {
    public var name: String
    public var source: String
    public init(name: String, source: String) {
        self.name = name
        self.source = source
    }
}

/// The plan: every change apply will make and every finding, for one image.
/// Its JSON form is a stable, documented document (schema `remedy.plan/1`).
public struct Plan: Sendable, Equatable, Codable {
    public static let schemaID = "remedy.plan/1"

    public var schema: String = Plan.schemaID
    public var image: ImageInfo
    public var policy: PolicyReference
    public var os: OSFacts
    public var actions: [Action]
    public var findings: [Finding]
    /// Cloud image properties the image supports once the plan is applied
    /// (from the `image-metadata` rule), to pass to the image registration call.
    public var properties: [String: String]
    /// What the OVA/OVF descriptor says, when the image was given as one (absent for a plain image file).
    public var source: SourceFacts?

    public init(
        image: ImageInfo, policy: PolicyReference, os: OSFacts, actions: [Action], findings: [Finding],
        properties: [String: String] = [:]
    ) {
        self.image = image
        self.policy = policy
        self.os = os
        self.actions = actions
        self.findings = findings
        self.properties = properties
    }

    private enum CodingKeys: String, CodingKey { case schema, image, policy, os, actions, findings, properties, source }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schema = try c.decode(String.self, forKey: .schema)
        image = try c.decode(ImageInfo.self, forKey: .image)
        policy = try c.decode(PolicyReference.self, forKey: .policy)
        os = try c.decode(OSFacts.self, forKey: .os)
        actions = try c.decode([Action].self, forKey: .actions)
        findings = try c.decode([Finding].self, forKey: .findings)
        properties = try c.decodeIfPresent([String: String].self, forKey: .properties) ?? [:]
        source = try c.decodeIfPresent(SourceFacts.self, forKey: .source)
    }

    public var changes: [Change] { actions.flatMap(\.changes) }
    public var fileChanges: [FileChange] { actions.flatMap(\.files) }
    public var hasChanges: Bool { actions.contains { !$0.isEmpty } }
    public var blockers: [Finding] { findings.filter { $0.severity == .blocker } }

    /// The same plan for the purposes of "apply does exactly what was planned":
    /// equal actions and findings, whatever the image path or policy file path.
    public func sameChanges(as other: Plan) -> Bool {
        actions == other.actions && findings == other.findings && properties == other.properties
    }
}
