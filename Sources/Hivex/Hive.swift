import CHivex
import Glibc
import SystemPackage

@_exported import struct RegistryFormat.HiveValue
@_exported import struct RegistryFormat.RawHiveValue
// The values a hive holds are RegistryFormat's (pure) types; users of Hivex see them as before.
@_exported import enum RegistryFormat.RegistryValue
@_exported import enum RegistryFormat.RegistryValueType

/// An error reported by libhivex: the C function, the file, and errno.
public struct HivexError: Error, CustomStringConvertible, Sendable, Equatable {
    public var function: String
    public var path: String
    public var errno: Errno
    public var detail: String?

    public init(function: String, path: String, errno: Errno, detail: String? = nil) {
        self.function = function
        self.path = path
        self.errno = errno
        self.detail = detail
    }

    public var description: String {
        var s = "hivex_\(function) on \(path): "
        if let detail { s += detail + ": " }
        s += errno.description
        return s
    }
}

/// A key inside an open hive. Only meaningful for the hive that produced it.
public struct HiveNode: Hashable, Sendable {
    fileprivate let raw: Int
}

/// A registry hive file opened with libhivex.
///
/// Changes are made in memory and written only by ``commit(to:)``, which
/// writes a new file and fsyncs it; the original is never rewritten in place.
/// Not thread-safe.
public final class Hive {
    public let path: String
    public let writable: Bool
    private var handle: OpaquePointer?

    /// Opens a hive. `unsafe` lets libhivex open some damaged hives (read-only use only).
    public init(path: String, writable: Bool = false, unsafe: Bool = false) throws {
        self.path = path
        self.writable = writable
        var flags: Int32 = 0
        if writable { flags |= HIVEX_OPEN_WRITE }
        if unsafe { flags |= HIVEX_OPEN_UNSAFE }
        errno = 0
        guard let h = hivex_open(path, flags) else {
            let e = Errno(rawValue: Glibc.errno)
            throw HivexError(
                function: "open", path: path, errno: e.rawValue == 0 ? .invalidArgument : e,
                detail: "not a valid registry hive")
        }
        handle = h
    }

    deinit {
        if let h = handle { hivex_close(h) }
    }

    /// Closes the hive, discarding uncommitted changes.
    public func close() {
        if let h = handle { hivex_close(h) }
        handle = nil
    }

    private func h(_ function: String) throws -> OpaquePointer {
        guard let h = handle else {
            throw HivexError(function: function, path: path, errno: .badFileDescriptor, detail: "hive is closed")
        }
        return h
    }

    private func fail(_ function: String, _ detail: String? = nil) -> HivexError {
        let e = Errno(rawValue: Glibc.errno)
        return HivexError(function: function, path: path, errno: e.rawValue == 0 ? .invalidArgument : e, detail: detail)
    }

    // MARK: - Reading

    public func root() throws -> HiveNode {
        let h = try h("root")
        errno = 0
        let n = hivex_root(h)
        if n == 0 { throw fail("root") }
        return HiveNode(raw: n)
    }

    public func name(of node: HiveNode) throws -> String {
        let h = try h("node_name")
        errno = 0
        guard let p = hivex_node_name(h, node.raw) else { throw fail("node_name") }
        defer { free(p) }
        return String(cString: p)
    }

    public func children(of node: HiveNode) throws -> [HiveNode] {
        let h = try h("node_children")
        errno = 0
        guard let list = hivex_node_children(h, node.raw) else { throw fail("node_children") }
        defer { free(list) }
        var out: [HiveNode] = []
        var i = 0
        while list[i] != 0 {
            out.append(HiveNode(raw: list[i]))
            i += 1
        }
        return out
    }

    /// The child with this name (case-insensitive, as Windows compares), or nil.
    public func child(of node: HiveNode, named name: String) throws -> HiveNode? {
        let h = try h("node_get_child")
        errno = 0
        let n = hivex_node_get_child(h, node.raw, name)
        if n == 0 {
            if errno != 0 { throw fail("node_get_child", "looking up \(name)") }
            return nil
        }
        return HiveNode(raw: n)
    }

    /// Follows a backslash-separated path from `start` (the root by default).
    public func node(at path: String, from start: HiveNode? = nil) throws -> HiveNode? {
        var node = try start ?? root()
        for part in path.split(separator: "\\") where !part.isEmpty {
            guard let next = try child(of: node, named: String(part)) else { return nil }
            node = next
        }
        return node
    }

    public func values(of node: HiveNode) throws -> [HiveValue] {
        try rawValues(of: node).map { HiveValue(name: $0.name, value: $0.decoded) }
    }

    /// The values of a key as stored (type and bytes), in stored order.
    public func rawValues(of node: HiveNode) throws -> [RawHiveValue] {
        let h = try h("node_values")
        errno = 0
        guard let list = hivex_node_values(h, node.raw) else { throw fail("node_values") }
        defer { free(list) }
        var out: [RawHiveValue] = []
        var i = 0
        while list[i] != 0 {
            out.append(try readValue(h, list[i]))
            i += 1
        }
        return out
    }

    /// The value with this name (case-insensitive), or nil. `""` is the default value.
    public func value(of node: HiveNode, named name: String) throws -> RegistryValue? {
        try values(of: node).first { $0.name.caseInsensitiveCompare(name) }?.value
    }

    private func readValue(_ h: OpaquePointer, _ v: hive_value_h) throws -> RawHiveValue {
        errno = 0
        guard let keyPtr = hivex_value_key(h, v) else { throw fail("value_key") }
        let key = String(cString: keyPtr)
        free(keyPtr)
        var t = hive_type(0)
        var len = 0
        errno = 0
        guard let data = hivex_value_value(h, v, &t, &len) else { throw fail("value_value", "reading value \(key)") }
        defer { free(data) }
        let bytes = data.withMemoryRebound(to: UInt8.self, capacity: len) {
            Array(UnsafeBufferPointer(start: $0, count: len))
        }
        return RawHiveValue(name: key, type: UInt32(t.rawValue), data: bytes)
    }

    // MARK: - Writing (in memory until commit)

    /// The largest value data written in one cell. Windows stores larger data
    /// (in hives of format 1.4 and later) as big-data ('db') records, which
    /// hivex does not write: such a value would be unreadable to Windows.
    public static let maxValueBytes = 16344

    /// Adds a subkey and returns it. Names outside ASCII are refused: hivex
    /// hashes and orders them differently from Windows (which uses uppercase UTF-16).
    public func addChild(to parent: HiveNode, named name: String) throws -> HiveNode {
        guard !name.isEmpty, name.unicodeScalars.allSatisfy({ $0.isASCII && $0 != "\\" }) else {
            throw HivexError(
                function: "node_add_child", path: path, errno: .invalidArgument,
                detail:
                    "refusing to create key \(name): only ASCII key names are written (hivex would hash others differently from Windows)"
            )
        }
        let h = try h("node_add_child")
        errno = 0
        let n = hivex_node_add_child(h, parent.raw, name)
        if n == 0 { throw fail("node_add_child", "adding key \(name)") }
        return HiveNode(raw: n)
    }

    /// Returns the key at `path`, creating missing keys on the way.
    public func ensureNode(at path: String) throws -> HiveNode {
        var node = try root()
        for part in path.split(separator: "\\") where !part.isEmpty {
            node = try child(of: node, named: String(part)) ?? addChild(to: node, named: String(part))
        }
        return node
    }

    /// Deletes a key and its subtree.
    public func deleteChild(_ node: HiveNode) throws {
        let h = try h("node_delete_child")
        errno = 0
        if hivex_node_delete_child(h, node.raw) == -1 { throw fail("node_delete_child") }
    }

    /// Replaces all values of a key. Refuses data over ``maxValueBytes`` (an
    /// existing big value of the key included: it would be rewritten in a form
    /// Windows cannot read).
    public func setValues(of node: HiveNode, _ values: [HiveValue]) throws {
        try setRawValues(of: node, values.map(RawHiveValue.init))
    }

    /// Replaces all values of a key with these, each written with exactly its
    /// type number and bytes.
    public func setRawValues(of node: HiveNode, _ values: [RawHiveValue]) throws {
        if let big = values.first(where: { $0.data.count > Self.maxValueBytes }) {
            throw HivexError(
                function: "node_set_values", path: path, errno: .fileTooLarge,
                detail:
                    "value \(big.name) holds \(big.data.count) bytes, over the \(Self.maxValueBytes) bytes one cell may hold without big-data records, which hivex does not write"
            )
        }
        let h = try h("node_set_values")
        // Keep C strings and buffers alive for the call.
        var keys: [UnsafeMutablePointer<CChar>?] = []
        var buffers: [UnsafeMutableRawPointer] = []
        defer {
            keys.forEach { free($0) }
            buffers.forEach { free($0) }
        }
        var set: [hive_set_value] = []
        for v in values {
            let key = strdup(v.name)
            keys.append(key)
            let bytes = v.data
            let buf = malloc(max(bytes.count, 1))!
            buffers.append(buf)
            bytes.withUnsafeBytes { src in
                if !bytes.isEmpty { buf.copyMemory(from: src.baseAddress!, byteCount: bytes.count) }
            }
            set.append(
                hive_set_value(
                    key: key, t: hive_type(rawValue: v.type), len: bytes.count,
                    value: buf.assumingMemoryBound(to: CChar.self)))
        }
        errno = 0
        let rc = set.withUnsafeBufferPointer { hivex_node_set_values(h, node.raw, $0.count, $0.baseAddress, 0) }
        if rc == -1 { throw fail("node_set_values") }
    }

    /// Sets one value, replacing a value of the same name (case-insensitive;
    /// the stored name keeps its case, as Windows keeps it). The key's other
    /// values are written back with their stored type and bytes, untouched.
    public func setValue(of node: HiveNode, _ value: HiveValue) throws {
        var all = try rawValues(of: node)
        if let i = all.firstIndex(where: { $0.name.caseInsensitiveCompare(value.name) }) {
            all[i].type = value.value.type
            all[i].data = value.value.encoded
        } else {
            all.append(RawHiveValue(value))
        }
        try setRawValues(of: node, all)
    }

    /// Deletes one value; returns false when it did not exist.
    @discardableResult
    public func deleteValue(of node: HiveNode, named name: String) throws -> Bool {
        var all = try rawValues(of: node)
        guard let i = all.firstIndex(where: { $0.name.caseInsensitiveCompare(name) }) else { return false }
        all.remove(at: i)
        try setRawValues(of: node, all)
        return true
    }

    /// Writes the hive to a new file at `destination` and fsyncs it. The
    /// file is complete and durable when this returns.
    public func commit(to destination: String) throws {
        let h = try h("commit")
        errno = 0
        if hivex_commit(h, destination, 0) == -1 { throw fail("commit", "writing \(destination)") }
        let fd = open(destination, O_RDONLY)
        guard fd >= 0 else { throw fail("commit", "reopening \(destination) to fsync") }
        defer { Glibc.close(fd) }
        if fsync(fd) != 0 { throw fail("commit", "fsync \(destination)") }
    }
}

extension String {
    /// Registry names compare case-insensitively (ASCII and Unicode simple folding).
    func caseInsensitiveCompare(_ other: String) -> Bool {
        self.count == other.count && self.lowercased() == other.lowercased()
    }
}
