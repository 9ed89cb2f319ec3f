/// What inspection learned about an image: plain values only. The planner
/// is a pure function of these facts and a policy.
public struct ImageFacts: Sendable, Equatable, Codable {
    public var image: ImageInfo
    public var os: OSFacts
    /// Registry subtrees read from each hive, keyed by the path that was asked for.
    public var registry: RegistrySnapshot
    /// The state Windows left each hive in (dirty, logs replayed).
    public var hives: [HiveIntegrity]
    /// The state of the Windows volume and the disk (hibernation, encryption).
    public var volume: VolumeFacts
    /// What the user gave to inject (virtio-win drivers chosen for this Windows, payload files).
    public var payloads: PayloadFacts
    /// Files rules asked about, as they are in the image.
    public var files: FileSnapshot

    public init(
        image: ImageInfo, os: OSFacts, registry: RegistrySnapshot, hives: [HiveIntegrity] = [],
        volume: VolumeFacts = VolumeFacts(),
        payloads: PayloadFacts = PayloadFacts(), files: FileSnapshot = FileSnapshot()
    ) {
        self.image = image
        self.os = os
        self.registry = registry
        self.hives = hives
        self.volume = volume
        self.payloads = payloads
        self.files = files
    }
}

/// How Windows left a hive file.
public struct HiveIntegrity: Sendable, Equatable, Codable {
    public var hive: HiveName
    /// Primary and secondary sequence numbers differ, or the checksum is wrong.
    public var dirty: Bool
    public var primarySequence: UInt32
    public var secondarySequence: UInt32
    public var checksumValid: Bool
    /// Guest paths of the transaction logs beside the hive.
    public var logs: [String]
    /// What was replayed from the logs (empty for a clean hive).
    public var replayed: [String]
    /// A rewritten hive must carry a sequence number above this.
    public var highestLogSequence: UInt32

    package init(
        hive: HiveName, dirty: Bool, primarySequence: UInt32, secondarySequence: UInt32, checksumValid: Bool,
        logs: [String], replayed: [String], highestLogSequence: UInt32
    ) {
        self.hive = hive
        self.dirty = dirty
        self.primarySequence = primarySequence
        self.secondarySequence = secondarySequence
        self.checksumValid = checksumValid
        self.logs = logs
        self.replayed = replayed
        self.highestLogSequence = highestLogSequence
    }
}

/// The Windows volume and its disk, as far as they decide whether the image can be edited and imported.
public struct VolumeFacts: Sendable, Equatable, Codable {
    /// `hiberfil.sys` holds a hibernation image (hibernated, or shut down with Fast Startup).
    public var hibernated: Bool
    /// Partitions of the image's disk that are BitLocker-encrypted.
    public var encrypted: [String]
    /// Every filesystem on the disk.
    public var filesystems: [FilesystemFacts]
    /// Where the boot manager is on this disk (`/dev/sda1:/bootmgr`); nil when
    /// it is not on the disk (the boot partition was on another disk), or not looked for.
    public var bootManager: String?
    /// Whether the disk was inspected for the above (false for facts built without an appliance).
    public var inspected: Bool
    /// The boot files on the EFI system partition (UEFI images whose ESP holds `bootmgfw.efi`); nil otherwise.
    public var esp: ESPFacts?

    public init(
        hibernated: Bool = false, encrypted: [String] = [], filesystems: [FilesystemFacts] = [],
        bootManager: String? = nil,
        inspected: Bool = false, esp: ESPFacts? = nil
    ) {
        self.esp = esp
        self.hibernated = hibernated
        self.encrypted = encrypted
        self.filesystems = filesystems
        self.bootManager = bootManager
        self.inspected = inspected
    }
}

/// The boot loaders on the EFI system partition: `\EFI\Microsoft\Boot\bootmgfw.efi` (Windows Boot Manager) and the
/// removable-media fallback loaders `\EFI\Boot\bootx64.efi` / `bootia32.efi` that firmware starts when NVRAM holds no
/// boot entry (a new VM). Paths are guest paths on the ESP (`/EFI/Boot/bootx64.efi`), as stored when present.
public struct ESPFacts: Sendable, Equatable, Codable {
    /// The ESP's filesystem in the appliance (`/dev/sda2`).
    public var device: String
    /// `bootmgfw.efi`, `bootx64.efi`, `bootia32.efi` when present, keyed by the lowercased guest path.
    public var files: [String: GuestFile]

    public init(device: String, files: [String: GuestFile] = [:]) {
        self.device = device
        self.files = files
    }

    public static let bootManager = "/EFI/Microsoft/Boot/bootmgfw.efi"
    public static let fallbackX64 = "/EFI/Boot/bootx64.efi"
    public static let fallbackIA32 = "/EFI/Boot/bootia32.efi"

    public func file(_ path: String) -> GuestFile? { files[path.lowercased()] }

    /// The ESP as a planned change of volume `esp` leaves it.
    public mutating func apply(_ c: FileChange) {
        guard c.volume == "esp" else { return }
        switch c.op {
        case .write: files[c.path.lowercased()] = GuestFile(path: c.path, size: c.size, sha256: c.sha256)
        case .delete: files[c.path.lowercased()] = nil
        }
    }
}

public struct FilesystemFacts: Sendable, Equatable, Codable {
    public var device: String
    /// `ntfs`, `vfat`, `BitLocker`, ... (blkid's name).
    public var type: String
    /// This one holds Windows.
    public var windows: Bool

    package init(device: String, type: String, windows: Bool) {
        self.device = device
        self.type = type
        self.windows = windows
    }
}

public struct ImageInfo: Sendable, Equatable, Codable {
    /// The path as the user gave it.
    public var path: String
    /// The disk image format detected from the file's content.
    public var format: DiskFormat
    public var fileSize: Int64
    public var virtualSize: Int64?

    public init(path: String, format: DiskFormat, fileSize: Int64, virtualSize: Int64? = nil) {
        self.path = path
        self.format = format
        self.fileSize = fileSize
        self.virtualSize = virtualSize
    }
}

/// One `ControlSet00N` key and the roles `SYSTEM\Select` gives it.
public struct ControlSet: Sendable, Equatable, Codable, Hashable {
    public enum Role: String, Sendable, Codable, CaseIterable {
        case current = "Current"
        case `default` = "Default"
        case lastKnownGood = "LastKnownGood"
        case failed = "Failed"
    }

    public var name: String
    public var roles: [Role]

    public init(name: String, roles: [Role]) {
        self.name = name
        self.roles = roles
    }
}

public struct OSFacts: Sendable, Equatable, Codable {
    /// The root filesystem inside the appliance, e.g. `/dev/sda2`.
    public var root: String
    public var product: String
    /// `Server` or `Client` as Windows records it (InstallationType).
    public var variant: String
    public var majorVersion: Int
    public var minorVersion: Int
    /// Build number from the SOFTWARE hive, when recorded.
    public var build: String?
    public var arch: Architecture
    public var hostname: String?
    /// Guest path of the Windows directory, e.g. `/Windows`.
    public var systemRoot: String
    /// e.g. `ControlSet001`.
    public var currentControlSet: String
    /// Every control set present, with the roles Select gives it. Windows may
    /// boot any that has a role; keys without a role are kept as well.
    public var controlSets: [ControlSet]
    /// How this Windows boots.
    public var firmware: Firmware
    /// The partition table of the disk holding the Windows volume.
    public var partitionTable: PartitionTable

    public init(
        root: String, product: String, variant: String, majorVersion: Int, minorVersion: Int, build: String?,
        arch: Architecture, hostname: String?, systemRoot: String, currentControlSet: String, controlSets: [ControlSet],
        firmware: Firmware = .unknown, partitionTable: PartitionTable = .unknown
    ) {
        self.firmware = firmware
        self.partitionTable = partitionTable
        self.root = root
        self.product = product
        self.variant = variant
        self.majorVersion = majorVersion
        self.minorVersion = minorVersion
        self.build = build
        self.arch = arch
        self.hostname = hostname
        self.systemRoot = systemRoot
        self.currentControlSet = currentControlSet
        self.controlSets = controlSets
    }

    /// `6.1`, `10.0`, ...
    public var version: String { "\(majorVersion).\(minorVersion)" }

    /// Windows 8 / Server 2012 (NT 6.2) or later.
    public var isWindows8OrLater: Bool { (majorVersion, minorVersion) >= (6, 2) }

    /// Control sets in a stable order (ControlSet001, ControlSet002, ...).
    public var orderedControlSets: [ControlSet] { controlSets.sorted { $0.name.lowercased() < $1.name.lowercased() } }

    /// `64` or `32`.
    public var bits: Int { arch.bits }
}

/// Parts of hives, read during inspection as plain values.
public struct RegistrySnapshot: Sendable, Equatable, Codable {
    /// hive -> requested path -> subtree (nil when the key does not exist).
    public var trees: [HiveName: [RegistryPath: RegistryKey?]]

    public init(trees: [HiveName: [RegistryPath: RegistryKey?]] = [:]) { self.trees = trees }

    /// The key at `path`, looked up in the deepest requested subtree that
    /// contains it (a shallow read of `Services` and a deep read of
    /// `Services\Tcpip\...` can both be present).
    public func key(_ hive: HiveName, _ path: RegistryPath) -> RegistryKey? {
        guard let (root, tree) = root(hive, containing: path) else { return nil }
        return tree?.key(at: RegistryPath(components: Array(path.components.dropFirst(root.components.count))))
    }

    /// The deepest requested root containing `path`, and its tree (nil when the key was absent).
    func root(_ hive: HiveName, containing path: RegistryPath) -> (RegistryPath, RegistryKey?)? {
        guard let roots = trees[hive] else { return nil }
        var best: (RegistryPath, RegistryKey?)?
        for (rootPath, tree) in roots where path.components.count >= rootPath.components.count {
            let prefix = RegistryPath(components: Array(path.components.prefix(rootPath.components.count)))
            if prefix == rootPath, rootPath.components.count > (best?.0.components.count ?? -1) {
                best = (rootPath, tree)
            }
        }
        return best
    }

    /// Whether `path` lies inside a subtree that was read.
    public func covers(_ hive: HiveName, _ path: RegistryPath) -> Bool { root(hive, containing: path) != nil }

    /// The snapshot as it will be once `changes` are made: every requested
    /// subtree containing a changed key is updated (keys created as needed).
    public func applying(_ changes: [Change]) -> RegistrySnapshot {
        var copy = self
        for c in changes { copy.apply(c) }
        return copy
    }

    mutating func apply(_ c: Change) {
        guard var roots = trees[c.hive] else { return }
        for (rootPath, tree) in roots where c.key.components.count >= rootPath.components.count {
            let prefix = RegistryPath(components: Array(c.key.components.prefix(rootPath.components.count)))
            guard prefix == rootPath else { continue }
            let rel = Array(c.key.components.dropFirst(rootPath.components.count))
            if c.op == .deleteKey && rel.isEmpty {
                roots[rootPath] = .some(nil)
                continue
            }
            var t = tree ?? RegistryKey(name: rootPath.components.last ?? "")
            t.update(at: rel[...], c)
            roots[rootPath] = t
        }
        trees[c.hive] = roots
    }

    public mutating func insert(_ hive: HiveName, _ path: RegistryPath, _ key: RegistryKey?) {
        trees[hive, default: [:]][path] = .some(key)
    }
}

/// A subtree a rule needs read from a hive.
public struct RegistryRequirement: Hashable, Sendable {
    public var hive: HiveName
    public var path: RegistryPath
    /// How many levels of subkeys to read below `path` (0 = values of the key only).
    public var depth: Int

    public init(_ hive: HiveName, _ path: RegistryPath, depth: Int) {
        self.hive = hive
        self.path = path
        self.depth = depth
    }
}
