import Foundation

/// The `registry:` part of a generic rule in a policy file.
public struct RegistryRuleSpec: Decodable, Sendable {
    public var hive: String
    /// `CurrentControlSet\...` (every control set) or a path from the hive's root.
    public var key: String
    /// Leave the rule alone when the key does not exist (a service not installed, say).
    public var onlyIfKeyExists: Bool?
    /// Report a mismatch as a finding instead of fixing it.
    public var reportOnly: Bool?
    public var values: [Value]

    public struct Value: Decodable, Sendable {
        public var name: String
        /// `REG_SZ`, `REG_EXPAND_SZ`, `REG_MULTI_SZ`, `REG_DWORD`, `REG_QWORD`, `REG_BINARY` (inferred from data when omitted).
        public var type: String?
        public var data: ParamValue?
        /// The value must not exist.
        public var absent: Bool?
    }

    enum CodingKeys: String, CodingKey {
        case hive, key, values
        case onlyIfKeyExists = "only-if-key-exists"
        case reportOnly = "report-only"
    }
}

/// A generic registry rule from a policy file: these values, in this key,
/// must hold this data (or be absent). A key under `CurrentControlSet\` is
/// checked in every control set of the SYSTEM hive.
public struct RegistryRule: Rule {
    public let id: String
    public let summary: String
    public let hive: HiveName
    /// The path, without the `CurrentControlSet\` prefix when `perControlSet`.
    public let path: RegistryPath
    public let perControlSet: Bool
    public let onlyIfKeyExists: Bool
    public let reportOnly: Bool
    /// name -> wanted data (nil: absent), in policy order.
    public let values: [(name: String, data: RegistryValue?)]

    public init(id: String, description: String?, spec: RegistryRuleSpec, parameters: [String: ParamValue]) throws {
        self.id = id
        guard let hive = HiveName.allCases.first(where: { $0.rawValue == spec.hive.uppercased() }),
            [.system, .software].contains(hive)
        else {
            throw PolicyParameterError(
                message: "registry rule \(id): hive must be SYSTEM or SOFTWARE, not \(spec.hive)")
        }
        self.hive = hive
        var p = RegistryPath(spec.key)
        if let first = p.components.first, first.lowercased() == "hklm" {
            p = RegistryPath(components: Array(p.components.dropFirst()))
        }
        if let first = p.components.first, first.uppercased() == hive.rawValue {
            p = RegistryPath(components: Array(p.components.dropFirst()))
        }
        perControlSet = p.components.first?.lowercased() == "currentcontrolset"
        if perControlSet {
            guard hive == .system else {
                throw PolicyParameterError(message: "registry rule \(id): CurrentControlSet is in the SYSTEM hive")
            }
            p = RegistryPath(components: Array(p.components.dropFirst()))
        }
        guard !p.components.isEmpty else { throw PolicyParameterError(message: "registry rule \(id): key is empty") }
        path = p
        onlyIfKeyExists = spec.onlyIfKeyExists ?? false
        reportOnly = spec.reportOnly ?? false
        guard !spec.values.isEmpty else { throw PolicyParameterError(message: "registry rule \(id): values is empty") }
        values = try spec.values.map { v in
            if v.absent == true {
                guard v.data == nil else {
                    throw PolicyParameterError(message: "registry rule \(id): value \(v.name) is absent and has data")
                }
                return (v.name, nil)
            }
            guard let data = v.data else {
                throw PolicyParameterError(message: "registry rule \(id): value \(v.name) needs data (or absent: true)")
            }
            return (
                v.name, try Self.value(try Policy.substitute(data, parameters), type: v.type, rule: id, name: v.name)
            )
        }
        let shown = values.map { "\($0.name)=\($0.data.map { "\($0)" } ?? "(absent)")" }.joined(separator: ", ")
        summary = description ?? "\(hive.rawValue)\\\(spec.key): \(shown)"
    }

    /// Policy data as a registry value of the given (or inferred) type.
    static func value(_ data: ParamValue, type: String?, rule: String, name: String) throws -> RegistryValue {
        func bad(_ why: String) -> PolicyParameterError {
            PolicyParameterError(message: "registry rule \(rule): value \(name): \(why)")
        }
        let t =
            type?.uppercased()
            ?? {
                switch data {
                case .int: "REG_DWORD"
                case .list: "REG_MULTI_SZ"
                default: "REG_SZ"
                }
            }()
        switch (t, data) {
        case ("REG_SZ", .string(let s)): return .string(s)
        case ("REG_EXPAND_SZ", .string(let s)): return .expandString(s)
        case ("REG_MULTI_SZ", .list(let l)):
            return .multiString(
                try l.map {
                    guard case .string(let s) = $0 else { throw bad("REG_MULTI_SZ data must be a list of strings") }
                    return s
                })
        case ("REG_DWORD", .int(let i)):
            guard (0...Int(UInt32.max)).contains(i) else {
                throw bad("REG_DWORD data \(i) is out of range 0...4294967295")
            }
            return .dword(UInt32(i))
        case ("REG_QWORD", .int(let i)):
            guard i >= 0 else { throw bad("REG_QWORD data must not be negative") }
            return .qword(UInt64(i))
        case ("REG_BINARY", .string(let hex)):
            let digits = hex.filter { !$0.isWhitespace && $0 != ":" && $0 != "," }
            // ASCII hex only: `isHexDigit` also accepts fullwidth digits, which no radix-16 parse takes.
            let invalid = bad("REG_BINARY data must be hex bytes, e.g. \"01 ff 00\"")
            guard digits.count % 2 == 0, digits.allSatisfy({ $0.isASCII && $0.isHexDigit }) else { throw invalid }
            var bytes: [UInt8] = []
            var i = digits.startIndex
            while i < digits.endIndex {
                let j = digits.index(i, offsetBy: 2)
                guard let byte = UInt8(digits[i..<j], radix: 16) else { throw invalid }
                bytes.append(byte)
                i = j
            }
            return .binary(bytes)
        case ("REG_SZ", _), ("REG_EXPAND_SZ", _): throw bad("\(t) data must be a string (quote numbers)")
        case ("REG_MULTI_SZ", _): throw bad("REG_MULTI_SZ data must be a list of strings")
        case ("REG_DWORD", _), ("REG_QWORD", _): throw bad("\(t) data must be a whole number")
        case ("REG_BINARY", _): throw bad("REG_BINARY data must be a string of hex bytes")
        default:
            throw bad("unsupported type \(t) (REG_SZ, REG_EXPAND_SZ, REG_MULTI_SZ, REG_DWORD, REG_QWORD, REG_BINARY)")
        }
    }

    /// The keys this rule looks at, with the control set each belongs to.
    func targets(_ os: OSFacts) -> [(path: RegistryPath, controlSet: ControlSet?)] {
        perControlSet
            ? os.orderedControlSets.map { (RegistryPath(components: [$0.name] + path.components), $0) }
            : [(path, nil)]
    }

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        targets(os).map { RegistryRequirement(hive, $0.path, depth: 0) }
    }

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var result = RuleResult()
        for (path, cs) in targets(facts.os) {
            let key = facts.registry.key(hive, path)
            if key == nil && onlyIfKeyExists { continue }
            var edit = KeyEdit(hive, path, key)
            for (name, data) in values {
                if let data { edit.set(name, data) } else { edit.delete(name) }
            }
            guard !edit.changes.isEmpty else { continue }
            let whereText = cs.map { " in \($0.label)" } ?? ""
            if reportOnly {
                let found = edit.changes.map { "\($0.name ?? "")=\($0.before.map { "\($0)" } ?? "(absent)")" }.joined(
                    separator: ", ")
                let wanted = edit.changes.map { "\($0.name ?? "")=\($0.after.map { "\($0)" } ?? "(absent)")" }.joined(
                    separator: ", ")
                result.findings.append(
                    Finding(
                        id: FindingID(id), rule: id, severity: .warning,
                        message: "\(summary)\(whereText): \(hive.rawValue)\\\(path) differs",
                        measured: found, requirement: wanted))
            } else {
                result.actions.append(
                    Action(rule: id, description: summary + whereText, target: cs?.name, changes: edit.changes))
            }
        }
        return result
    }

    public var documentation: RuleDocumentation {
        let key = (perControlSet ? "CurrentControlSet\\" : "") + path.description
        let wanted = values.map { "\($0.name) = \($0.data.map { "\($0)" } ?? "(absent)")" }.joined(separator: "; ")
        return RuleDocumentation(
            id: id, summary: summary,
            checks: "\(hive.rawValue)\\\(key)" + (perControlSet ? " in every control set" : "")
                + (onlyIfKeyExists ? " (only where the key exists)" : ""),
            changes: reportOnly ? "nothing (report-only): a mismatch is a warning finding" : wanted,
            why: "a registry rule of the policy (generic, no Swift code): \(summary)")
    }
}
