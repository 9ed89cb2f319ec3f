/// Registry value types, numbered as Windows numbers them.
public enum RegistryValueType: UInt32, Sendable, Codable, CaseIterable {
    case none = 0
    case string = 1  // REG_SZ
    case expandString = 2  // REG_EXPAND_SZ
    case binary = 3  // REG_BINARY
    case dword = 4  // REG_DWORD (little-endian)
    case dwordBigEndian = 5  // REG_DWORD_BIG_ENDIAN
    case link = 6  // REG_LINK
    case multiString = 7  // REG_MULTI_SZ
    case resourceList = 8
    case fullResourceDescriptor = 9
    case resourceRequirementsList = 10
    case qword = 11  // REG_QWORD

    /// The Windows name, e.g. `REG_MULTI_SZ`.
    public var name: String {
        switch self {
        case .none: "REG_NONE"
        case .string: "REG_SZ"
        case .expandString: "REG_EXPAND_SZ"
        case .binary: "REG_BINARY"
        case .dword: "REG_DWORD"
        case .dwordBigEndian: "REG_DWORD_BIG_ENDIAN"
        case .link: "REG_LINK"
        case .multiString: "REG_MULTI_SZ"
        case .resourceList: "REG_RESOURCE_LIST"
        case .fullResourceDescriptor: "REG_FULL_RESOURCE_DESCRIPTOR"
        case .resourceRequirementsList: "REG_RESOURCE_REQUIREMENTS_LIST"
        case .qword: "REG_QWORD"
        }
    }

    public init?(name: String) {
        guard let t = Self.allCases.first(where: { $0.name == name.uppercased() }) else { return nil }
        self = t
    }
}

/// A registry value's data, decoded. Strings are read leniently (a missing
/// terminator is tolerated, as in real hives) and always written exactly as
/// Windows writes them: UTF-16LE with a 2-byte NUL; REG_MULTI_SZ with each
/// string NUL-terminated and a final empty string.
public enum RegistryValue: Sendable, Hashable {
    case string(String)
    case expandString(String)
    case multiString([String])
    case dword(UInt32)
    case qword(UInt64)
    case binary([UInt8])
    /// Any other type, kept as raw bytes.
    case raw(type: UInt32, data: [UInt8])

    public var type: UInt32 {
        switch self {
        case .string: RegistryValueType.string.rawValue
        case .expandString: RegistryValueType.expandString.rawValue
        case .multiString: RegistryValueType.multiString.rawValue
        case .dword: RegistryValueType.dword.rawValue
        case .qword: RegistryValueType.qword.rawValue
        case .binary: RegistryValueType.binary.rawValue
        case .raw(let t, _): t
        }
    }

    public var typeName: String {
        RegistryValueType(rawValue: type)?.name ?? "REG_TYPE_\(type)"
    }

    /// The exact bytes Windows stores for this value.
    public var encoded: [UInt8] {
        switch self {
        case .string(let s), .expandString(let s):
            return Self.utf16z(s)
        case .multiString(let list):
            var out: [UInt8] = []
            for s in list { out += Self.utf16z(s) }
            out += [0, 0]
            return out
        case .dword(let v):
            return withUnsafeBytes(of: v.littleEndian, Array.init)
        case .qword(let v):
            return withUnsafeBytes(of: v.littleEndian, Array.init)
        case .binary(let b):
            return b
        case .raw(_, let d):
            return d
        }
    }

    /// Decodes stored bytes of the given type.
    public static func decode(type: UInt32, data: [UInt8]) -> RegistryValue {
        switch RegistryValueType(rawValue: type) {
        case .string: return .string(decodeString(data))
        case .expandString: return .expandString(decodeString(data))
        case .multiString: return .multiString(decodeMultiString(data))
        case .dword where data.count == 4:
            return .dword(UInt32(data[0]) | UInt32(data[1]) << 8 | UInt32(data[2]) << 16 | UInt32(data[3]) << 24)
        case .qword where data.count == 8:
            var v: UInt64 = 0
            for i in 0..<8 { v |= UInt64(data[i]) << (8 * UInt64(i)) }
            return .qword(v)
        case .binary: return .binary(data)
        default: return .raw(type: type, data: data)
        }
    }

    static func utf16z(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf16.count * 2 + 2)
        for unit in s.utf16 {
            out.append(UInt8(unit & 0xFF))
            out.append(UInt8(unit >> 8))
        }
        out += [0, 0]
        return out
    }

    static func units(_ data: [UInt8]) -> [UInt16] {
        stride(from: 0, to: data.count - 1, by: 2).map { UInt16(data[$0]) | UInt16(data[$0 + 1]) << 8 }
    }

    /// Reads up to the first NUL (or the end, when the terminator is missing).
    static func decodeString(_ data: [UInt8]) -> String {
        let u = units(data)
        let end = u.firstIndex(of: 0) ?? u.count
        return String(decoding: u[..<end], as: UTF16.self)
    }

    /// Splits on NUL; stops at the first empty string (the list terminator),
    /// tolerating a missing terminator.
    static func decodeMultiString(_ data: [UInt8]) -> [String] {
        var result: [String] = []
        var current: [UInt16] = []
        for unit in units(data) {
            if unit == 0 {
                if current.isEmpty { break }
                result.append(String(decoding: current, as: UTF16.self))
                current = []
            } else {
                current.append(unit)
            }
        }
        if !current.isEmpty { result.append(String(decoding: current, as: UTF16.self)) }
        return result
    }
}

extension RegistryValue: CustomStringConvertible {
    /// A short human rendering: `REG_SZ "x"`, `REG_DWORD 0x1 (1)`, ...
    public var description: String {
        switch self {
        case .string(let s): "\(typeName) \"\(s)\""
        case .expandString(let s): "\(typeName) \"\(s)\""
        case .multiString(let l): "\(typeName) [" + l.map { "\"\($0)\"" }.joined(separator: ", ") + "]"
        case .dword(let v): "\(typeName) 0x\(String(v, radix: 16)) (\(v))"
        case .qword(let v): "\(typeName) 0x\(String(v, radix: 16)) (\(v))"
        case .binary(let b), .raw(_, let b):
            "\(typeName) " + (b.isEmpty ? "(empty)" : hex(b.prefix(32)) + (b.count > 32 ? "… (\(b.count) bytes)" : ""))
        }
    }
}

func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
    bytes.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined()
}

extension RegistryValue: Codable {
    private enum CodingKeys: String, CodingKey { case type, data }

    /// JSON form: `{"type": "REG_SZ", "data": "text"}`; DWORD/QWORD data are
    /// numbers, REG_MULTI_SZ an array of strings, binary types lowercase hex.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(typeName, forKey: .type)
        switch self {
        case .string(let s), .expandString(let s): try c.encode(s, forKey: .data)
        case .multiString(let l): try c.encode(l, forKey: .data)
        case .dword(let v): try c.encode(v, forKey: .data)
        case .qword(let v): try c.encode(v, forKey: .data)
        case .binary(let b), .raw(_, let b): try c.encode(hex(b), forKey: .data)
        }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let typeName = try c.decode(String.self, forKey: .type)
        let type: UInt32
        if let t = RegistryValueType(name: typeName) {
            type = t.rawValue
        } else if typeName.hasPrefix("REG_TYPE_"), let n = UInt32(typeName.dropFirst(9)) {
            type = n
        } else {
            throw DecodingError.dataCorruptedError(
                forKey: .type, in: c, debugDescription: "unknown registry type \(typeName)")
        }
        switch RegistryValueType(rawValue: type) {
        case .string: self = .string(try c.decode(String.self, forKey: .data))
        case .expandString: self = .expandString(try c.decode(String.self, forKey: .data))
        case .multiString: self = .multiString(try c.decode([String].self, forKey: .data))
        case .dword: self = .dword(try c.decode(UInt32.self, forKey: .data))
        case .qword: self = .qword(try c.decode(UInt64.self, forKey: .data))
        default:
            let text = try c.decode(String.self, forKey: .data)
            guard let bytes = unhex(text) else {
                throw DecodingError.dataCorruptedError(
                    forKey: .data, in: c, debugDescription: "binary data must be hex")
            }
            self = type == RegistryValueType.binary.rawValue ? .binary(bytes) : .raw(type: type, data: bytes)
        }
    }
}

func unhex(_ s: String) -> [UInt8]? {
    let chars = Array(s.utf8)
    guard chars.count % 2 == 0 else { return nil }
    var out: [UInt8] = []
    out.reserveCapacity(chars.count / 2)
    var i = 0
    while i < chars.count {
        guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
        out.append(hi << 4 | lo)
        i += 2
    }
    return out
}

private func nibble(_ c: UInt8) -> UInt8? {
    switch c {
    case 0x30...0x39: c - 0x30
    case 0x61...0x66: c - 0x61 + 10
    case 0x41...0x46: c - 0x41 + 10
    default: nil
    }
}

/// One named value, decoded.
public struct HiveValue: Hashable, Sendable {
    public var name: String
    public var value: RegistryValue
    public init(name: String, value: RegistryValue) {
        self.name = name
        self.value = value
    }
}

/// One named value exactly as stored: its type number and its data bytes,
/// undecoded. Values remedy does not change are written back in this form,
/// so nothing passes through a lossy decoder (a REG_MULTI_SZ with an empty
/// string inside, a REG_SZ with bytes after its NUL or an unpaired surrogate).
public struct RawHiveValue: Hashable, Sendable {
    public var name: String
    public var type: UInt32
    public var data: [UInt8]
    public init(name: String, type: UInt32, data: [UInt8]) {
        self.name = name
        self.type = type
        self.data = data
    }
    public init(_ v: HiveValue) {
        self.init(name: v.name, type: v.value.type, data: v.value.encoded)
    }
    /// The decoded form (for reading; never written back).
    public var decoded: RegistryValue { .decode(type: type, data: data) }
}
