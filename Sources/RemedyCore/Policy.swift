import Foundation
import Yams

/// A parameter value in a policy file.
public enum ParamValue: Sendable, Equatable, Decodable, CustomStringConvertible {
    case bool(Bool), int(Int), string(String), list([ParamValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let l = try? c.decode([ParamValue].self) { self = .list(l) }
        else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "expected a boolean, number, string or list") }
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
        guard case .bool(let b) = v else { throw PolicyParameterError(message: "parameter \(name) must be true or false, not \(v)") }
        return b
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
}

/// A policy: metadata, the OS versions and architectures it accepts, and its rules.
public struct Policy: Sendable {
    public var name: String
    public var description: String
    /// Where it was loaded from.
    public var source: String
    /// Accepted `major.minor` Windows versions; empty accepts any.
    public var versions: [String]
    /// Accepted architectures (`x86_64`, `i386`); empty accepts any.
    public var architectures: [String]
    public var rules: [any Rule]

    public init(name: String, description: String, source: String, versions: [String] = [], architectures: [String] = [], rules: [any Rule]) {
        self.name = name
        self.description = description
        self.source = source
        self.versions = versions
        self.architectures = architectures
        self.rules = rules
    }

    public var reference: PolicyReference { PolicyReference(name: name, source: source) }
}

/// Loads policies from YAML. Errors name the file, line and column.
public enum PolicyLoader {
    public static let defaultPolicyName = "huawei-ims"

    struct Document: Decodable {
        var name: String
        var description: String
        var appliesTo: AppliesTo?
        var rules: [Entry]

        enum CodingKeys: String, CodingKey { case name, description, appliesTo = "applies-to", rules }

        struct AppliesTo: Decodable {
            var versions: [String]?
            var arch: [String]?
        }

        struct Entry: Decodable {
            var id: String
            var with: [String: ParamValue]?
            var enabled: Bool?
        }
    }

    /// Loads a policy by built-in name (`huawei-ims`) or by file path.
    public static func load(_ nameOrPath: String) throws -> Policy {
        let path = try locate(nameOrPath)
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw RemedyError(.policyNotFound, "cannot read policy \(path): \(error.localizedDescription)", cause: error)
        }
        return try parse(text, source: path)
    }

    /// Parses policy YAML; `source` names the file in errors.
    public static func parse(_ text: String, source: String) throws -> Policy {
        let node: Node
        do {
            guard let n = try Yams.compose(yaml: text) else {
                throw RemedyError(.policyInvalid, "\(source): the policy is empty")
            }
            node = n
        } catch let e as RemedyError {
            throw e
        } catch let e as YamlError {
            throw RemedyError(.policyInvalid, "\(source): \(yamlErrorText(e))", cause: e)
        }
        let doc: Document
        do {
            doc = try YAMLDecoder().decode(Document.self, from: node)
        } catch let e as DecodingError {
            throw RemedyError(.policyInvalid, "\(source)\(location(of: e, in: node)): \(decodingErrorText(e))", cause: e)
        }
        var rules: [any Rule] = []
        for (i, entry) in doc.rules.enumerated() where entry.enabled ?? true {
            let entryNode = node["rules"]?[i]
            let at = entryNode.map { ":\($0.mark?.line ?? 0):\($0.mark?.column ?? 0)" } ?? ""
            guard let builtin = BuiltinRule.named(entry.id) else {
                let known = BuiltinRule.all.map(\.documentation.id).joined(separator: ", ")
                throw RemedyError(.policyInvalid, "\(source)\(at): unknown rule \(entry.id) (known: \(known))")
            }
            do {
                rules.append(try builtin.make(PolicyParameters(entry.with ?? [:])))
            } catch let e as PolicyParameterError {
                throw RemedyError(.policyInvalid, "\(source)\(at): \(e.message)", cause: e)
            }
        }
        return Policy(name: doc.name, description: doc.description, source: source,
                      versions: doc.appliesTo?.versions ?? [], architectures: doc.appliesTo?.arch ?? [], rules: rules)
    }

    /// Finds a policy file: a path that exists, or `NAME.yaml` in the built-in policy directories.
    public static func locate(_ nameOrPath: String) throws -> String {
        let fm = FileManager.default
        if nameOrPath.contains("/") || nameOrPath.hasSuffix(".yaml") || nameOrPath.hasSuffix(".yml") {
            guard fm.fileExists(atPath: nameOrPath) else {
                throw RemedyError(.policyNotFound, "policy file \(nameOrPath) does not exist")
            }
            return nameOrPath
        }
        let dirs = policyDirectories()
        for dir in dirs {
            let candidate = dir + "/" + nameOrPath + ".yaml"
            if fm.fileExists(atPath: candidate) { return candidate }
        }
        let known = builtinNames().joined(separator: ", ")
        throw RemedyError(.policyNotFound, "no policy named \(nameOrPath) (built-in: \(known.isEmpty ? "none found in " + dirs.joined(separator: ", ") : known))")
    }

    /// Names of the policies found in the built-in directories.
    public static func builtinNames() -> [String] {
        var names = Set<String>()
        for dir in policyDirectories() {
            for f in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where f.hasSuffix(".yaml") {
                names.insert(String(f.dropLast(5)))
            }
        }
        return names.sorted()
    }

    /// `$REMEDY_POLICIES`, then a `Policies` directory beside or above the
    /// executable (a source checkout), then `share/remedy/Policies` of an install prefix.
    public static func policyDirectories() -> [String] {
        ResourceLocator.directories(named: "Policies", environment: "REMEDY_POLICIES")
    }

    static func yamlErrorText(_ e: YamlError) -> String {
        "\(e)".replacingOccurrences(of: "\n", with: " ")
    }

    static func decodingErrorText(_ e: DecodingError) -> String {
        func path(_ p: [CodingKey]) -> String { p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".") }
        switch e {
        case .keyNotFound(let key, let ctx):
            let at = path(ctx.codingPath)
            return "missing key \(key.stringValue)" + (at.isEmpty ? "" : " in \(at)")
        case .typeMismatch(_, let ctx), .valueNotFound(_, let ctx), .dataCorrupted(let ctx):
            return "\(path(ctx.codingPath)): \(ctx.debugDescription)"
        @unknown default:
            return "\(e)"
        }
    }

    /// `:line:column` of the node a decoding error points at (1-based, as Yams reports).
    static func location(of e: DecodingError, in root: Node) -> String {
        let ctx: DecodingError.Context
        switch e {
        case .keyNotFound(_, let c), .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c): ctx = c
        @unknown default: return ""
        }
        var node = root
        for key in ctx.codingPath {
            if let i = key.intValue, let next = node[i] { node = next }
            else if let next = node[key.stringValue] { node = next }
            else { break }
        }
        guard let mark = node.mark else { return "" }
        return ":\(mark.line):\(mark.column)"
    }
}

/// Finds the project's data directories (`Policies`, `Payloads`) at run time.
public enum ResourceLocator {
    public static func directories(named name: String, environment variable: String) -> [String] {
        var dirs: [String] = []
        if let env = ProcessInfo.processInfo.environment[variable], !env.isEmpty {
            dirs.append(contentsOf: env.split(separator: ":").map(String.init))
        }
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if let exe = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
            for _ in 0..<6 {
                for candidate in [dir.appendingPathComponent(name).path, dir.appendingPathComponent("share/remedy/\(name)").path]
                where fm.fileExists(atPath: candidate, isDirectory: &isDir) && isDir.boolValue && !dirs.contains(candidate) {
                    dirs.append(candidate)
                }
                dir = dir.deletingLastPathComponent()
            }
        }
        for fixed in ["/usr/local/share/remedy/\(name)", "/usr/share/remedy/\(name)"]
        where fm.fileExists(atPath: fixed, isDirectory: &isDir) && isDir.boolValue {
            dirs.append(fixed)
        }
        return dirs
    }
}
