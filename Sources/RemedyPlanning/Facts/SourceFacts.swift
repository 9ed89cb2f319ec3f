/// What an OVF descriptor says, as the plan shows it (`source`).
public struct SourceFacts: Sendable, Equatable, Codable {
    public struct Disk: Sendable, Equatable, Codable {
        public var id: String
        /// The file (References/File href).
        public var file: String?
        public var capacityBytes: Int64?
        /// The OVF format URI (e.g. `...#streamOptimized`).
        public var format: String?

        package init(id: String, file: String? = nil, capacityBytes: Int64? = nil, format: String? = nil) {
            self.id = id
            self.file = file
            self.capacityBytes = capacityBytes
            self.format = format
        }
    }
    /// `ova` or `ovf`.
    public var kind: String = ""
    /// The descriptor's name.
    public var descriptor: String = ""
    /// The manifest whose digests were checked (nil when the package has none).
    public var manifest: String?
    /// Every disk, the system disk first.
    public var disks: [Disk] = []
    /// `bios` or `efi` (`vmw:firmware`), nil when the descriptor does not say.
    public var firmware: String?
    /// The guest OS type (`vmw:osType`, else the OperatingSystemSection description or CIM id).
    public var osType: String?
    /// NIC adapter types (ResourceSubType of ResourceType 10 items), in order.
    public var nics: [String] = []

    package init(
        kind: String = "", descriptor: String = "", manifest: String? = nil, disks: [Disk] = [],
        firmware: String? = nil, osType: String? = nil, nics: [String] = []
    ) {
        self.kind = kind
        self.descriptor = descriptor
        self.manifest = manifest
        self.disks = disks
        self.firmware = firmware
        self.osType = osType
        self.nics = nics
    }
}
