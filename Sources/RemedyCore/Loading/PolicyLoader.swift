import Foundation
import SystemPackage
import Yams

/// Loads policies from YAML. Errors name the file, line and column.
///
/// A policy file:
///
///     name: openstack-kvm
///     description: ...
///     extends: huawei-ims            # optional: a built-in name or a path relative to this file
///     applies-to: {versions: ["6.1", "10.0"], arch: [x86_64]}
///     parameters: {keep-static-dns: false}
///     rules:
///       - id: nic-dhcp                # a built-in remediation
///         with: {keep-static-dns: $keep-static-dns}
///       - id: ide-boot
///         enabled: false              # switch off an inherited rule
///       - id: san-policy              # a generic registry rule
///         description: Bring every disk online
///         registry:
///           hive: SYSTEM
///           key: CurrentControlSet\Services\partmgr\Parameters
///           values: [{name: SanPolicy, type: REG_DWORD, data: 1}]
///
/// A rule entry with the id of an inherited one overrides it: `with`
/// parameters are merged over the inherited ones, `enabled`, `description`
/// and `registry` replace them.
public enum PolicyLoader {
    public static let defaultPolicyName = "huawei-ims"

    struct Document: Decodable {
        var name: String
        var description: String
        var extends: String?
        var appliesTo: AppliesTo?
        var parameters: [String: ParamValue]?
        var rules: [Entry]?

        enum CodingKeys: String, CodingKey {
            case name, description, extends
            case appliesTo = "applies-to"
            case parameters, rules
        }

        struct AppliesTo: Decodable {
            var versions: [String]?
            var arch: [String]?
        }

        struct Entry: Decodable {
            var id: String
            var with: [String: ParamValue]?
            var enabled: Bool?
            var description: String?
            var registry: RegistryRuleSpec?
        }
    }

    /// One rule entry after inheritance, with where it was written.
    struct ResolvedEntry {
        var id: String
        var with: [String: ParamValue]
        var enabled: Bool
        var description: String?
        var registry: RegistryRuleSpec?
        var at: String
    }

    struct Resolved {
        var name: String
        var description: String
        var source: String
        var chain: [String]
        var versions: [String]
        var architectures: [String]
        var parameters: [String: ParamValue]
        var entries: [ResolvedEntry]
    }

    /// Loads a policy by built-in name (`huawei-ims`) or by file path.
    public static func load(_ nameOrPath: String) throws -> Policy {
        try build(resolve(locate(nameOrPath), seen: []))
    }

    /// Parses policy YAML; `source` names the file in errors. `extends`
    /// names a built-in policy or a path relative to `source`'s directory.
    public static func parse(_ text: String, source: String) throws -> Policy {
        try build(resolve(text: text, source: source, seen: []))
    }

    static func read(_ path: String) throws -> String {
        // Bounded, and a FIFO or device is refused rather than waited on.
        let bytes: [UInt8]
        do {
            bytes = try HostFile.read(path, followLinks: true, limit: maxPolicyBytes)
        } catch let e as HostFile.Refused where e.tooLarge {
            throw RemedyError(.policyInvalid, "\(path): the policy is over \(maxPolicyBytes / 1024) KiB", cause: e)
        } catch {
            throw RemedyError(.policyNotFound, "cannot read the policy: \(error)", cause: error)
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw RemedyError(.policyInvalid, "\(path): the policy is not UTF-8 text")
        }
        return text
    }

    static func resolve(_ path: String, seen: [String]) throws -> Resolved {
        try resolve(text: read(path), source: path, seen: seen)
    }

    static func resolve(text: String, source: String, seen: [String]) throws -> Resolved {
        let canonical = FilePath(source).lexicallyNormalized().string
        if seen.contains(canonical) {
            throw RemedyError(
                .policyInvalid, "\(source): extends itself (\((seen + [canonical]).joined(separator: " -> ")))")
        }
        let (doc, node) = try decode(text, source: source)
        var base: Resolved
        if let parent = doc.extends {
            let parentPath: String
            do {
                parentPath = try locate(parent, relativeTo: FilePath(source).removingLastComponent().string)
            } catch let e as RemedyError {
                throw RemedyError(.policyInvalid, "\(source)\(mark(node["extends"])): \(e.message)", cause: e)
            }
            base = try resolve(parentPath, seen: seen + [canonical])
            base.chain.insert(base.name, at: 0)
        } else {
            base = Resolved(
                name: doc.name, description: doc.description, source: source, chain: [], versions: [],
                architectures: [],
                parameters: [:], entries: [])
        }
        base.name = doc.name
        base.description = doc.description
        base.source = source
        if let a = doc.appliesTo {
            if let v = a.versions { base.versions = v }
            if let arch = a.arch { base.architectures = arch }
        }
        base.parameters.merge(doc.parameters ?? [:]) { _, mine in mine }
        for (i, entry) in (doc.rules ?? []).enumerated() {
            let at = source + mark(node["rules"]?[i])
            if let j = base.entries.firstIndex(where: { $0.id == entry.id }) {
                base.entries[j].with.merge(entry.with ?? [:]) { _, mine in mine }
                if let e = entry.enabled { base.entries[j].enabled = e }
                if let d = entry.description { base.entries[j].description = d }
                if let r = entry.registry { base.entries[j].registry = r }
                base.entries[j].at = at
            } else {
                base.entries.append(
                    ResolvedEntry(
                        id: entry.id, with: entry.with ?? [:], enabled: entry.enabled ?? true,
                        description: entry.description, registry: entry.registry, at: at))
            }
        }
        return base
    }

    /// Limits that keep a hostile policy from exhausting the parser (whose composer recurses per nesting level).
    static let maxPolicyBytes = 1_048_576
    static let maxNesting = 64

    static func checkShape(_ text: String, source: String) throws {
        guard text.utf8.count <= maxPolicyBytes else {
            throw RemedyError(.policyInvalid, "\(source): the policy is over \(maxPolicyBytes / 1024) KiB")
        }
        var depth = 0, deepest = 0, line = 1
        var quote: UInt8?
        for b in text.utf8 {
            if b == UInt8(ascii: "\n") {
                line += 1
                quote = nil
                continue
            }
            if let q = quote {
                if b == q { quote = nil }
                continue
            }
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "'"): quote = b
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                deepest = max(deepest, depth)
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth = max(0, depth - 1)
            default: break
            }
            if deepest > maxNesting {
                throw RemedyError(.policyInvalid, "\(source):\(line): nested more than \(maxNesting) levels deep")
            }
        }
    }

    /// Refuses a document whose nodes, once its aliases are expanded, are more than ``Limits/yamlNodes``: a few
    /// hundred bytes of nested aliases (`b: [*a, *a, ...]`, `c: [*b, *b, ...]`) expand to millions of nodes, and
    /// decoding walks every one. The count stops at the limit, so the check itself is bounded.
    static func checkExpansion(_ root: Node, source: String) throws {
        var pending = [root]
        var count = 0
        while let node = pending.popLast() {
            count += 1
            if count > Limits.yamlNodes {
                throw RemedyError(
                    .policyInvalid,
                    "\(source): the document expands to more than \(Limits.yamlNodes) nodes "
                        + "(nested aliases?): refused")
            }
            switch node {
            case .mapping(let m):
                for (k, v) in m {
                    pending.append(k)
                    pending.append(v)
                }
            case .sequence(let q):
                pending.append(contentsOf: q)
            default:
                break
            }
        }
    }

    static func decode(_ text: String, source: String) throws -> (Document, Node) {
        try checkShape(text, source: source)
        let node: Node
        do {
            guard let n = try Yams.compose(yaml: text) else {
                throw RemedyError(.policyInvalid, "\(source): the policy is empty")
            }
            node = n
            try checkExpansion(node, source: source)
        } catch let e as RemedyError {
            throw e
        } catch let e as YamlError {
            throw RemedyError(.policyInvalid, "\(source): \(yamlErrorText(e))", cause: e)
        }
        do {
            return (try YAMLDecoder().decode(Document.self, from: node), node)
        } catch let e as DecodingError {
            throw RemedyError(
                .policyInvalid, "\(source)\(location(of: e, in: node)): \(decodingErrorText(e))", cause: e)
        }
    }

    static func build(_ r: Resolved) throws -> Policy {
        var rules: [any Rule] = []
        for entry in r.entries where entry.enabled {
            do {
                let with = try entry.with.mapValues { try Policy.substitute($0, r.parameters) }
                if let spec = entry.registry {
                    if BuiltinRule.named(entry.id) != nil {
                        throw PolicyParameterError(
                            message: "\(entry.id) is a built-in rule; a registry rule needs an id of its own")
                    }
                    guard with.isEmpty else {
                        throw PolicyParameterError(message: "registry rule \(entry.id) takes no `with` parameters")
                    }
                    rules.append(
                        try RegistryRule(
                            id: entry.id, description: entry.description, spec: spec, parameters: r.parameters))
                } else if let builtin = BuiltinRule.named(entry.id) {
                    rules.append(try builtin.make(PolicyParameters(with), ruleInputs(builtin)))
                } else if let manifest = PayloadManifest.named(entry.id) {
                    rules.append(try PayloadRule(manifest: manifest, parameters: PolicyParameters(with)))
                } else {
                    let known = BuiltinRule.all.map(\.documentation.id).joined(separator: ", ")
                    throw PolicyParameterError(
                        message:
                            "unknown rule \(entry.id) (built-in rules: \(known); or give `registry:` for a registry rule)"
                    )
                }
            } catch let e as PolicyParameterError {
                throw RemedyError(.policyInvalid, "\(entry.at): \(e.message)", cause: e)
            }
        }
        return Policy(
            name: r.name, description: r.description, source: r.source, extends: r.chain, versions: r.versions,
            architectures: r.architectures, parameters: r.parameters, rules: rules)
    }

    /// Loads what a built-in rule is built from (its payload manifests), so that building it reads no file.
    static func ruleInputs(_ builtin: BuiltinRule) -> RuleInputs {
        var manifests: [String: PayloadManifest] = [:]
        for name in builtin.manifests { manifests[name] = PayloadManifest.named(name) }
        return RuleInputs(manifests: manifests)
    }

    static func mark(_ node: Node?) -> String {
        guard let m = node?.mark else { return "" }
        return ":\(m.line):\(m.column)"
    }

    /// Finds a policy file: a path that exists (relative paths are tried
    /// against `directory` first), or `NAME.yaml` in the built-in policy directories.
    public static func locate(_ nameOrPath: String, relativeTo directory: String? = nil) throws -> String {
        let fm = FileManager.default
        if nameOrPath.contains("/") || nameOrPath.hasSuffix(".yaml") || nameOrPath.hasSuffix(".yml") {
            if let directory, !nameOrPath.hasPrefix("/") {
                let joined = directory.isEmpty ? nameOrPath : directory + "/" + nameOrPath
                if fm.fileExists(atPath: joined) { return joined }
            }
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
        throw RemedyError(
            .policyNotFound,
            "no policy named \(nameOrPath) (built-in: \(known.isEmpty ? "none found in " + dirs.joined(separator: ", ") : known))"
        )
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
        func path(_ p: [CodingKey]) -> String {
            p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
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
            if let i = key.intValue, let next = node[i] {
                node = next
            } else if let next = node[key.stringValue] {
                node = next
            } else {
                break
            }
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
                for candidate in [
                    dir.appendingPathComponent(name).path, dir.appendingPathComponent("share/remedy/\(name)").path,
                ]
                where fm.fileExists(atPath: candidate, isDirectory: &isDir) && isDir.boolValue
                    && !dirs.contains(candidate)
                {
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
