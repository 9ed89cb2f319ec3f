import Hivex
import RegistryFormat

/// What inspection reads a hive through: libhivex on a local copy (a hive recovered from its logs, SAM), or
/// ``HiveCells`` on the hive's file in the image, read through the appliance where it is (a clean SYSTEM or SOFTWARE
/// hive: the planner needs a few subtrees of files of tens of megabytes).
protocol ReadableHive: AnyObject {
    associatedtype Node
    func root() throws -> Node
    func name(of node: Node) throws -> String
    func children(of node: Node) throws -> [Node]
    /// The child with this name, compared case-insensitively, or nil.
    func child(of node: Node, named name: String) throws -> Node?
    /// The values as stored (name, type, bytes), in stored order.
    func rawValues(of node: Node) throws -> [RawHiveValue]
}

extension ReadableHive {
    /// Follows a backslash-separated path from the root.
    func lookup(_ path: String) throws -> Node? {
        var node = try root()
        for part in path.split(separator: "\\") where !part.isEmpty {
            guard let next = try child(of: node, named: String(part)) else { return nil }
            node = next
        }
        return node
    }

    func decodedValues(of node: Node) throws -> [HiveValue] {
        try rawValues(of: node).map { HiveValue(name: $0.name, value: $0.decoded) }
    }

    /// The value with this name (case-insensitive), or nil. `""` is the default value.
    func decodedValue(of node: Node, named name: String) throws -> RegistryValue? {
        let wanted = name.lowercased()
        return try rawValues(of: node).first { $0.name.lowercased() == wanted }?.decoded
    }
}

extension Hive: ReadableHive {}

extension HiveCells: ReadableHive {
    func rawValues(of node: Key) throws -> [RawHiveValue] { try values(of: node) }
}
