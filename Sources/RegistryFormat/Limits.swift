/// What a real hive and its transaction logs can be, so that a crafted file
/// cannot make remedy allocate or write more than that. A hive's cell
/// offsets are 31-bit, but real hives are far smaller: a SOFTWARE hive of a
/// long-lived server is a few hundred MiB at most, its logs less. Every size
/// read from a file is checked against these limits, and against the bytes
/// that could have produced it, before anything is allocated.
public enum RegistryLimits {
    /// Largest hive file remedy reads (and largest hive bins size it accepts or produces).
    public static let maxHiveFile = 512 << 20
    /// Largest hive bins data size (the hive file less its 4 KiB base block).
    public static let maxHiveBinsSize = maxHiveFile - BaseBlock.firstBin
    /// Largest transaction log remedy reads.
    public static let maxLogFile = 256 << 20
}
