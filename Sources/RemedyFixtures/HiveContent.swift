import Foundation
import Hivex

/// A declarative description of a hive: keys (by path) and their values.
/// Written as a blank hive (bytes from the regf format) then filled with libhivex.
public struct HiveContent: Sendable {
    public var rootName: String
    public var fileName: String
    public private(set) var keys: [(path: String, values: [HiveValue])] = []

    public init(rootName: String = "ROOT", fileName: String) {
        self.rootName = rootName
        self.fileName = fileName
    }

    /// Adds values to a key (created with its parents); later values of the same name win.
    public mutating func set(_ path: String, _ values: [String: RegistryValue]) {
        let vs = values.sorted { $0.key < $1.key }.map { HiveValue(name: $0.key, value: $0.value) }
        if let i = keys.firstIndex(where: { $0.path.lowercased() == path.lowercased() }) {
            for v in vs {
                keys[i].values.removeAll { $0.name.lowercased() == v.name.lowercased() }
                keys[i].values.append(v)
            }
        } else {
            keys.append((path, vs))
        }
    }

    /// Writes the hive file.
    public func write(to path: String) throws {
        let blank = BlankHive.bytes(rootName: rootName, fileName: fileName)
        let tmp = path + ".blank"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(blank)) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: tmp])
        }
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let hive = try Hive(path: tmp, writable: true)
        defer { hive.close() }
        for (keyPath, values) in keys {
            let node = try hive.ensureNode(at: keyPath)
            if !values.isEmpty { try hive.setValues(of: node, values) }
        }
        try hive.commit(to: path)
    }
}
