/// The Marvin32 hash (Microsoft's keyed 32-bit-lane hash) that checksums
/// entries of the new-format registry transaction log.
public enum Marvin32 {
    /// The seed registry logs use (0x82EF4D887A4E55C5).
    public static let registrySeed: UInt64 = 0x82EF_4D88_7A4E_55C5

    public static func hash(_ data: ArraySlice<UInt8>, seed: UInt64 = registrySeed) -> UInt64 {
        var lo = UInt32(truncatingIfNeeded: seed)
        var hi = UInt32(truncatingIfNeeded: seed >> 32)
        func mix() {
            hi ^= lo
            lo = rotl(lo, 20) &+ hi
            hi = rotl(hi, 9) ^ lo
            lo = rotl(lo, 27) &+ hi
            hi = rotl(hi, 19)
        }
        var i = data.startIndex
        while data.endIndex - i >= 4 {
            lo &+= UInt32(data[i]) | UInt32(data[i + 1]) << 8 | UInt32(data[i + 2]) << 16 | UInt32(data[i + 3]) << 24
            mix()
            i += 4
        }
        // The tail (0-3 bytes) and then one 0x80 byte, as a little-endian word.
        var last: UInt32 = 0
        var k: UInt32 = 0
        while i < data.endIndex {
            last |= UInt32(data[i]) << (8 * k)
            k += 1
            i += 1
        }
        last |= 0x80 << (8 * k)
        lo &+= last
        mix()
        mix()
        return UInt64(hi) << 32 | UInt64(lo)
    }

    @inline(__always) static func rotl(_ x: UInt32, _ n: UInt32) -> UInt32 { (x << n) | (x >> (32 - n)) }
}
