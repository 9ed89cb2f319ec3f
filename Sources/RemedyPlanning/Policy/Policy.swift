/// A parameter value in a policy file.
public enum ParamValue: Sendable, Equatable, Decodable, CustomStringConvertible {
    case bool(Bool)
    case int(Int)
    case string(String)
    case list([ParamValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int.self) {
            self = .int(i)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let l = try? c.decode([ParamValue].self) {
            self = .list(l)
        } else {
            throw DecodingError.dataCorruptedError(
                in: c, debugDescription: "expected a boolean, number, string or list")
        }
    }

    public var description: String {
        switch self {
        case .bool(let b): "\(b)"
        case .int(let i): "\(i)"
        case .string(let s): s
        case .list(let l): "[" + l.map(\.description).joined(separator: ", ") + "]"
        }
    }
}

/// The `with:` parameters of one rule entry. Unknown names are an error, so a
/// typo in a policy never silently does nothing.
public struct PolicyParameters: Sendable {
    public var values: [String: ParamValue]
    public init(_ values: [String: ParamValue] = [:]) { self.values = values }

    public func bool(_ name: String, default def: Bool) throws -> Bool {
        guard let v = values[name] else { return def }
        guard case .bool(let b) = v else {
            throw PolicyParameterError(message: "parameter \(name) must be true or false, not \(v)")
        }
        return b
    }

    public func string(_ name: String, default def: String, oneOf allowed: [String]? = nil) throws -> String {
        guard let v = values[name] else { return def }
        guard case .string(let s) = v else {
            throw PolicyParameterError(message: "parameter \(name) must be a string, not \(v)")
        }
        if let allowed, !allowed.contains(s) {
            throw PolicyParameterError(
                message: "parameter \(name) must be one of \(allowed.joined(separator: ", ")), not \(s)")
        }
        return s
    }

    public func int(_ name: String, default def: Int, in range: ClosedRange<Int>) throws -> Int {
        guard let v = values[name] else { return def }
        guard case .int(let i) = v, range.contains(i) else {
            throw PolicyParameterError(
                message: "parameter \(name) must be a number in \(range.lowerBound)...\(range.upperBound), not \(v)")
        }
        return i
    }

    public func strings(_ name: String, default def: [String]) throws -> [String] {
        guard let v = values[name] else { return def }
        guard case .list(let l) = v else {
            throw PolicyParameterError(message: "parameter \(name) must be a list of strings, not \(v)")
        }
        return try l.map {
            guard case .string(let s) = $0 else {
                throw PolicyParameterError(
                    message: "parameter \(name) must be a list of strings; \($0) is not a string")
            }
            return s
        }
    }

    /// Throws when a parameter is not one of `known`.
    public func only(_ known: [String], rule: String) throws {
        if let bad = values.keys.sorted().first(where: { !known.contains($0) }) {
            let list = known.isEmpty ? "it takes none" : "it takes " + known.joined(separator: ", ")
            throw PolicyParameterError(message: "rule \(rule) has no parameter \(bad) (\(list))")
        }
    }
}

public struct PolicyParameterError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }

    package init(message: String) {
        self.message = message
    }
}

/// A policy: metadata, the OS versions and architectures it accepts, its
/// parameters, and its rules (built-in remediations and generic registry rules).
public struct Policy: Sendable {
    public var name: String
    public var description: String
    /// Where it was loaded from.
    public var source: String
    /// The policies it extends, nearest first (`openstack-kvm` <- `huawei-ims`).
    public var extends: [String]
    /// Accepted `major.minor` Windows versions; empty accepts any.
    public var versions: [String]
    /// Accepted architectures (`x86_64`, `i386`); empty accepts any.
    public var architectures: [String]
    /// Policy-level parameters, after inheritance; rule parameters refer to them as `$name`.
    public var parameters: [String: ParamValue]
    public var rules: [any Rule]

    public init(
        name: String, description: String, source: String, extends: [String] = [], versions: [String] = [],
        architectures: [String] = [], parameters: [String: ParamValue] = [:], rules: [any Rule]
    ) {
        self.name = name
        self.description = description
        self.source = source
        self.extends = extends
        self.versions = versions
        self.architectures = architectures
        self.parameters = parameters
        self.rules = rules
    }

    public var reference: PolicyReference { PolicyReference(name: name, source: source) }

    /// The rule with this id, if the policy has it enabled.
    public func rule(_ id: String) -> (any Rule)? { rules.first { $0.id == id } }

    /// The built-in rule of this type, if the policy has it enabled.
    public func rule<R: Rule>(_ type: R.Type) -> R? { rules.lazy.compactMap { $0 as? R }.first }
}

extension Policy {
    /// Replaces a `$name` string with the policy parameter of that name.
    package static func substitute(_ v: ParamValue, _ parameters: [String: ParamValue]) throws -> ParamValue {
        switch v {
        case .string(let s) where s.hasPrefix("$") && s.count > 1:
            let name = String(s.dropFirst())
            guard let value = parameters[name] else {
                let known = parameters.keys.sorted().joined(separator: ", ")
                throw PolicyParameterError(
                    message: "no policy parameter \(name) (parameters: \(known.isEmpty ? "none" : known))")
            }
            return value
        case .list(let l):
            return .list(try l.map { try substitute($0, parameters) })
        default:
            return v
        }
    }
}
