/// A Group Policy registry policy file (`Registry.pol`), in Microsoft's documented "Registry Policy File Format":
/// a header `PReg` and version 1 (DWORD), then entries `[key;value;type;size;data]` where the brackets, semicolons
/// and the NUL-terminated key and value names are UTF-16LE, type and size are little-endian DWORDs and data is
/// `size` raw bytes. Entries are kept as byte ranges, so an edit leaves every other byte exactly as it was.
struct RegistryPol: Equatable {
    struct Entry: Equatable {
        var key: String
        var value: String
        var type: UInt32
        /// Where the entry's data lies in the file.
        var data: Range<Int>
        /// The whole entry, `[` to `]`.
        var range: Range<Int>
    }

    var bytes: [UInt8]
    var entries: [Entry]

    static let signature: [UInt8] = Array("PReg".utf8)

    /// Parses the file; nil when it is not a version-1 PReg file or an entry is cut short.
    init?(_ bytes: [UInt8]) {
        guard bytes.count >= 8, Array(bytes[0..<4]) == Self.signature, Self.u32(bytes, 4) == 1 else { return nil }
        self.bytes = bytes
        entries = []
        var i = 8
        func unit(_ at: Int) -> UInt16? { at + 1 < bytes.count ? UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 : nil }
        func expect(_ c: Character) -> Bool {
            guard unit(i) == UInt16(c.asciiValue!) else { return false }
            i += 2
            return true
        }
        func string() -> String? {
            var units: [UInt16] = []
            while let u = unit(i) {
                i += 2
                if u == 0 { return String(decoding: units, as: UTF16.self) }
                units.append(u)
            }
            return nil
        }
        func dword() -> UInt32? {
            guard i + 4 <= bytes.count else { return nil }
            defer { i += 4 }
            return Self.u32(bytes, i)
        }
        while i < bytes.count {
            let start = i
            guard expect("["), let key = string(), expect(";"), let value = string(), expect(";"),
                let type = dword(), expect(";"), let size = dword(), expect(";")
            else { return nil }
            let dataStart = i
            guard Int(size) <= bytes.count - i else { return nil }
            i += Int(size)
            guard expect("]") else { return nil }
            entries.append(
                Entry(key: key, value: value, type: type, data: dataStart..<(dataStart + Int(size)), range: start..<i))
        }
    }

    static func u32(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }

    /// A REG_DWORD entry's number (nil for other types or sizes).
    func number(_ e: Entry) -> UInt32? {
        e.type == RegistryValueType.dword.rawValue && e.data.count == 4 ? Self.u32(bytes, e.data.lowerBound) : nil
    }

    /// Sets a 4-byte REG_DWORD entry's data in place (nothing else moves).
    mutating func setNumber(_ e: Entry, _ v: UInt32) {
        precondition(e.data.count == 4)
        for k in 0..<4 { bytes[e.data.lowerBound + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(k))) }
    }

    /// The file's bytes from what the file facts hold: the text as inspection decoded it (UTF-8, or Latin-1 when the
    /// bytes are not UTF-8), checked against the file's SHA-256 so the reconstruction is the file byte for byte.
    static func bytes(of file: GuestFile) -> [UInt8]? {
        guard let text = file.text else { return nil }
        let utf8 = Array(text.utf8)
        if SHA256Hex.of(utf8) == file.sha256 { return utf8 }
        if text.unicodeScalars.allSatisfy({ $0.value <= 0xFF }) {
            let latin1 = TextEncoding.latin1.encode(text)
            if SHA256Hex.of(latin1) == file.sha256 { return latin1 }
        }
        return nil
    }
}

extension String {
    /// The bytes as Latin-1 text (each byte one character): how a binary file travels in a plan.
    init(latin1 bytes: [UInt8]) {
        self = String(String.UnicodeScalarView(bytes.map { Unicode.Scalar($0) }))
    }
}
