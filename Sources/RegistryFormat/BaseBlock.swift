/// A registry file's problem: what is wrong and where.
public struct RegfError: Error, Equatable, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The base block (first 4096 bytes of a primary hive; first sector of a
/// transaction log), per the published registry file format specification.
public struct BaseBlock: Equatable, Sendable {
    public static let size = 4096
    public static let firstBin = 4096

    public var primarySequence: UInt32
    public var secondarySequence: UInt32
    public var timestamp: UInt64
    public var majorVersion: UInt32
    public var minorVersion: UInt32
    /// 0 primary, 1 / 2 old-format log, 6 new-format log.
    public var fileType: UInt32
    public var rootCellOffset: UInt32
    public var hiveBinsSize: UInt32
    public var clusteringFactor: UInt32
    public var storedChecksum: UInt32
    /// The checksum the first 508 bytes call for.
    public var expectedChecksum: UInt32

    public var checksumValid: Bool { storedChecksum == expectedChecksum }
    /// Dirty: Windows replays the transaction logs into it at the next load.
    public var isDirty: Bool { !checksumValid || primarySequence != secondarySequence }

    /// Parses the first 512 bytes of `bytes` (all a log keeps of it).
    public init(_ bytes: [UInt8]) throws {
        guard bytes.count >= 512 else { throw RegfError("the file is \(bytes.count) bytes, shorter than a base block") }
        guard bytes.matches("regf", at: 0) else { throw RegfError("no regf signature: not a registry hive or log") }
        primarySequence = bytes.u32(4)!
        secondarySequence = bytes.u32(8)!
        timestamp = bytes.u64(12)!
        majorVersion = bytes.u32(20)!
        minorVersion = bytes.u32(24)!
        fileType = bytes.u32(28)!
        rootCellOffset = bytes.u32(36)!
        hiveBinsSize = bytes.u32(40)!
        clusteringFactor = bytes.u32(44)!
        storedChecksum = bytes.u32(508)!
        expectedChecksum = Self.checksum(bytes)
    }

    /// XOR-32 of the first 508 bytes, with the rule Windows applies and hivex
    /// does not: 0xFFFFFFFF becomes 0xFFFFFFFE and 0 becomes 1.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var x: UInt32 = 0
        for i in stride(from: 0, to: 508, by: 4) { x ^= bytes.u32(i) ?? 0 }
        if x == 0xFFFF_FFFF { return 0xFFFF_FFFE }
        if x == 0 { return 1 }
        return x
    }

    /// Makes a primary hive's base block clean and Windows-valid: both
    /// sequence numbers set to `sequence`, file type primary, checksum by
    /// Windows' rule.
    public static func seal(_ bytes: inout [UInt8], sequence: UInt32) {
        precondition(bytes.count >= size)
        bytes.put32(sequence, at: 4)
        bytes.put32(sequence, at: 8)
        bytes.put32(0, at: 28)
        bytes.put32(checksum(bytes), at: 508)
    }
}
