/// Bounds-checked little-endian reads and writes over byte arrays. Every
/// read of untrusted data goes through these: an offset outside the data
/// gives nil, never a trap.
/// Public for the fixtures that write hives and logs from the same format.
extension Array where Element == UInt8 {
    public func u32(_ offset: Int) -> UInt32? {
        guard offset >= 0, offset <= count - 4 else { return nil }
        return UInt32(self[offset]) | UInt32(self[offset + 1]) << 8 | UInt32(self[offset + 2]) << 16 | UInt32(
            self[offset + 3]) << 24
    }

    public func u64(_ offset: Int) -> UInt64? {
        guard let lo = u32(offset), let hi = u32(offset + 4) else { return nil }
        return UInt64(lo) | UInt64(hi) << 32
    }

    func matches(_ ascii: String, at offset: Int) -> Bool {
        let sig = Array(ascii.utf8)
        guard offset >= 0, offset <= count - sig.count else { return false }
        return self[offset..<offset + sig.count].elementsEqual(sig)
    }

    public mutating func put32(_ value: UInt32, at offset: Int) {
        precondition(offset >= 0 && offset + 4 <= count)
        for i in 0..<4 { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
    }

    public mutating func put64(_ value: UInt64, at offset: Int) {
        put32(UInt32(truncatingIfNeeded: value), at: offset)
        put32(UInt32(truncatingIfNeeded: value >> 32), at: offset + 4)
    }

    /// Writes `bytes` at `offset`, growing the array with zeros when needed.
    mutating func write(_ bytes: ArraySlice<UInt8>, at offset: Int) {
        let end = offset + bytes.count
        if end > count { append(contentsOf: repeatElement(0, count: end - count)) }
        replaceSubrange(offset..<end, with: bytes)
    }
}

/// GUIDs as Windows stores them in binary registry values and on disk.
public enum WindowsGUID {
    /// The 16 bytes of `{4D36E97B-E325-11CE-BFC1-08002BE10318}` in Windows' mixed-endian order (the first three
    /// fields little-endian, the last two as written); nil when the text is not a GUID.
    public static func bytes(_ text: String) -> [UInt8]? {
        // ASCII hex only: `isHexDigit` also accepts fullwidth digits, which no radix-16 parse takes.
        let hex = Array(text.filter { $0 != "{" && $0 != "}" && $0 != "-" })
        guard hex.count == 32, hex.allSatisfy({ $0.isASCII && $0.isHexDigit }) else { return nil }
        let b = stride(from: 0, to: 32, by: 2).compactMap { UInt8(String(hex[$0...$0 + 1]), radix: 16) }
        guard b.count == 16 else { return nil }
        return [b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]] + b[8...]
    }
}
