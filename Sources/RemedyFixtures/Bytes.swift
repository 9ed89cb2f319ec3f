/// A little-endian byte buffer for building binary formats.
struct ByteWriter {
    private(set) var bytes: [UInt8]

    init(count: Int) { bytes = [UInt8](repeating: 0, count: count) }

    mutating func u8(_ v: UInt8, at o: Int) { bytes[o] = v }
    mutating func u16(_ v: UInt16, at o: Int) {
        for i in 0..<2 { bytes[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt16(i))) }
    }
    mutating func u32(_ v: UInt32, at o: Int) {
        for i in 0..<4 { bytes[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
    }
    mutating func i32(_ v: Int32, at o: Int) { u32(UInt32(bitPattern: v), at: o) }
    mutating func u64(_ v: UInt64, at o: Int) {
        for i in 0..<8 { bytes[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }
    mutating func put(_ b: [UInt8], at o: Int) { bytes.replaceSubrange(o..<(o + b.count), with: b) }
    mutating func ascii(_ s: String, at o: Int) { put(Array(s.utf8), at: o) }
    mutating func utf16(_ s: String, at o: Int) {
        var p = o
        for u in s.utf16 {
            u16(u, at: p)
            p += 2
        }
    }
}
