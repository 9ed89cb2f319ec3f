@_exported import struct RegistryFormat.HiveValue
@_exported import enum RegistryFormat.RegistryValue
@_exported import enum RegistryFormat.RegistryValueType

/// The registry hive files remedy knows, with their place under `System32\config`.
public enum HiveName: String, Codable, Sendable, CaseIterable, Comparable {
    case system = "SYSTEM"
    case software = "SOFTWARE"
    case sam = "SAM"
    case security = "SECURITY"
    case `default` = "DEFAULT"

    public static func < (a: HiveName, b: HiveName) -> Bool { a.rawValue < b.rawValue }
}

/// A backslash-separated registry path inside one hive, e.g.
/// `ControlSet001\Services\Tcpip`. Comparison is case-insensitive, like Windows.
public struct RegistryPath: Hashable, Sendable, CustomStringConvertible, Codable, Comparable {
    public let components: [String]

    public init(_ path: String) {
        components = path.split(separator: "\\").map(String.init)
    }

    public init(components: [String]) { self.components = components }

    public var description: String { components.joined(separator: "\\") }

    public func appending(_ more: String) -> RegistryPath {
        RegistryPath(components: components + RegistryPath(more).components)
    }

    public static func == (a: RegistryPath, b: RegistryPath) -> Bool {
        a.components.map { $0.lowercased() } == b.components.map { $0.lowercased() }
    }

    public func hash(into h: inout Hasher) {
        for c in components { h.combine(c.lowercased()) }
    }

    public static func < (a: RegistryPath, b: RegistryPath) -> Bool {
        a.description.lowercased() < b.description.lowercased()
    }

    public init(from decoder: Decoder) throws { self.init(try decoder.singleValueContainer().decode(String.self)) }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// A plain-value copy of a registry key and (part of) its subtree, read from
/// a hive during inspection. The planner sees only these, never a hive handle.
public struct RegistryKey: Sendable, Equatable, Codable {
    public var name: String
    public var values: [HiveValue]
    public var subkeys: [RegistryKey]

    public init(name: String, values: [HiveValue] = [], subkeys: [RegistryKey] = []) {
        self.name = name
        self.values = values
        self.subkeys = subkeys
    }

    /// The subkey with this name (case-insensitive).
    public func subkey(_ name: String) -> RegistryKey? {
        let lower = name.lowercased()
        return subkeys.first { $0.name.lowercased() == lower }
    }

    /// The key at a relative path, or nil.
    public func key(at path: RegistryPath) -> RegistryKey? {
        var k = self
        for c in path.components {
            guard let next = k.subkey(c) else { return nil }
            k = next
        }
        return k
    }

    /// Makes `change` at the relative path `rel` (creating keys on the way).
    mutating func update(at rel: ArraySlice<String>, _ change: Change) {
        guard let first = rel.first else {
            switch change.op {
            case .setValue:
                guard let name = change.name, let after = change.after else { return }
                if let i = values.firstIndex(where: { $0.name.lowercased() == name.lowercased() }) {
                    values[i].value = after
                } else {
                    values.append(HiveValue(name: name, value: after))
                }
            case .deleteValue:
                values.removeAll { $0.name.lowercased() == change.name?.lowercased() }
            case .createKey, .deleteKey:
                break
            }
            return
        }
        let lower = first.lowercased()
        if change.op == .deleteKey && rel.count == 1 {
            subkeys.removeAll { $0.name.lowercased() == lower }
            return
        }
        if let i = subkeys.firstIndex(where: { $0.name.lowercased() == lower }) {
            subkeys[i].update(at: rel.dropFirst(), change)
        } else {
            var k = RegistryKey(name: first)
            k.update(at: rel.dropFirst(), change)
            subkeys.append(k)
        }
    }

    /// The value with this name (case-insensitive), or nil.
    public func value(_ name: String) -> RegistryValue? {
        let lower = name.lowercased()
        return values.first { $0.name.lowercased() == lower }?.value
    }
}

extension HiveValue: Codable {
    private enum CodingKeys: String, CodingKey { case name, value }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            name: try c.decode(String.self, forKey: .name), value: try c.decode(RegistryValue.self, forKey: .value))
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(value, forKey: .value)
    }
}
