/// The processor architecture of a Windows installation, as read from its cmd.exe (the PE header's machine field).
/// In JSON it is the name libguestfs uses (`x86_64`, `i386`, `aarch64`); anything else reads as `unknown`.
public enum Architecture: String, Sendable, Codable, CaseIterable {
    case x86_64, i386, aarch64, unknown

    public init(from decoder: any Decoder) throws {
        self = Architecture(rawValue: try decoder.singleValueContainer().decode(String.self)) ?? .unknown
    }

    /// The name Windows, INF platform suffixes and virtio-win's folders use: `x86` for i386, `amd64` otherwise (remedy
    /// has drivers for these two only).
    public var windowsName: String { self == .i386 ? "x86" : "amd64" }

    /// `32` or `64`.
    public var bits: Int { self == .i386 ? 32 : 64 }
}

/// How a Windows installation boots, told from its disk's partition table: `uefi` (GPT with an EFI system
/// partition), `bios` (MBR) or `unknown`.
public enum Firmware: String, Sendable, Codable, CaseIterable {
    case uefi, bios, unknown

    public init(from decoder: any Decoder) throws {
        self = Firmware(rawValue: try decoder.singleValueContainer().decode(String.self)) ?? .unknown
    }

    public init(partitionTable: PartitionTable) {
        switch partitionTable {
        case .gpt: self = .uefi
        case .msdos: self = .bios
        case .unknown: self = .unknown
        }
    }
}

/// The partition table of the disk holding Windows, named as parted names it; a table parted calls otherwise
/// (`loop`, `mac`, ...) or none is `unknown`.
public enum PartitionTable: String, Sendable, Codable, CaseIterable {
    case gpt, msdos, unknown

    public init(from decoder: any Decoder) throws {
        self = PartitionTable(rawValue: try decoder.singleValueContainer().decode(String.self)) ?? .unknown
    }
}

/// Disk image formats, detected from content (never from the file name).
public enum DiskFormat: String, Sendable, Codable, CaseIterable {
    case raw, qcow2, qcow, vmdk, vhd, vhdx, vdi, qed

    /// qemu's driver name.
    public var qemuName: String {
        switch self {
        case .vhd: "vpc"
        default: rawValue
        }
    }
}
