import Foundation

/// The virtio-win driver distribution: its layouts, its OS directory names,
/// and how remedy picks the drivers for one Windows.
///
/// Layouts (all three are read the same way, by looking for an OS and an
/// architecture component in each file's directory):
/// - the ISO, or an unpacked copy: `<Driver>/<os>/<arch>/` (`viostor/2k16/amd64/`),
///   plus storage-only `amd64/<os>/` and `i386/<os>/` at the root;
/// - the packaged tree (`/usr/share/virtio-win`): `drivers/by-driver/<Driver>/<os>/<arch>/`
///   and `drivers/by-os/<amd64|i386>/<os>/`.
public enum VirtioWin {
    /// One OS directory name and the Windows it serves.
    public struct OSDirectory: Sendable, Equatable {
        public var name: String
        public var major: Int
        public var minor: Int
        /// Server (`2k..`) or client (`w..`) Windows.
        public var server: Bool
        /// For NT 10.0, which builds: Server 2016/2019/2022/2025 and Windows 10/11 share the version.
        public var builds: Range<Int>?
        /// Other spellings seen in older trees (`Win2012R2`).
        public var aliases: [String]
    }

    /// virtio-win's OS directories (spellings from the virtio-win ISO; build
    /// ranges from Microsoft's release builds: 14393 Server 2016, 17763
    /// Server 2019, 20348 Server 2022, 26100 Server 2025, 22000 Windows 11).
    public static let osDirectories: [OSDirectory] = [
        OSDirectory(name: "2k8", major: 6, minor: 0, server: true, builds: nil, aliases: ["win2008"]),
        OSDirectory(name: "2k8R2", major: 6, minor: 1, server: true, builds: nil, aliases: ["win2008r2"]),
        OSDirectory(name: "w7", major: 6, minor: 1, server: false, builds: nil, aliases: ["win7"]),
        OSDirectory(name: "w8", major: 6, minor: 2, server: false, builds: nil, aliases: ["win8"]),
        OSDirectory(name: "2k12", major: 6, minor: 2, server: true, builds: nil, aliases: ["win2012"]),
        OSDirectory(name: "w8.1", major: 6, minor: 3, server: false, builds: nil, aliases: ["win8.1"]),
        OSDirectory(name: "2k12R2", major: 6, minor: 3, server: true, builds: nil, aliases: ["win2012r2"]),
        OSDirectory(name: "w10", major: 10, minor: 0, server: false, builds: 0..<22000, aliases: ["win10"]),
        OSDirectory(name: "w11", major: 10, minor: 0, server: false, builds: 22000..<Int.max, aliases: ["win11"]),
        OSDirectory(name: "2k16", major: 10, minor: 0, server: true, builds: 0..<17763, aliases: ["win2016"]),
        OSDirectory(name: "2k19", major: 10, minor: 0, server: true, builds: 17763..<20348, aliases: ["win2019"]),
        OSDirectory(name: "2k22", major: 10, minor: 0, server: true, builds: 20348..<26100, aliases: ["win2022"]),
        OSDirectory(name: "2k25", major: 10, minor: 0, server: true, builds: 26100..<Int.max, aliases: ["win2025"]),
    ]

    /// The OS directory for an inspected Windows, or nil when virtio-win has none.
    public static func osDirectory(for os: OSFacts) -> OSDirectory? {
        let server = os.variant.lowercased() != "client"
        let build = Int(os.build ?? "") ?? 0
        return osDirectories.first {
            $0.major == os.majorVersion && $0.minor == os.minorVersion && $0.server == server
                && ($0.builds?.contains(build) ?? true)
        }
    }

    static func osDirectory(named component: String) -> OSDirectory? {
        let c = component.lowercased()
        return osDirectories.first { $0.name.lowercased() == c || $0.aliases.contains(c) }
    }

    /// Files never installed: debug symbols, and the SR-IOV protocol driver (it needs its own setup).
    static func skipped(_ path: String) -> Bool {
        let lower = path.lowercased()
        let name = GuestPath.name(lower)
        return name.hasSuffix(".pdb") || name.hasPrefix("vioprot.") || lower.split(separator: "/").contains("sriov")
    }

    /// One driver package found in a source: an INF and the files in its directory.
    public struct Candidate: Sendable, Equatable {
        /// The INF's file name, lowercased.
        public var inf: String
        /// Its directory, relative to the source root.
        public var directory: String
        /// Relative paths of the package's files (the INF included).
        public var files: [String]
    }

    /// What a source offers: for each (os directory, arch directory) the packages found.
    public struct Listing: Sendable {
        public var packages: [String: [Candidate]] = [:]  // "2k16/amd64" -> packages
        /// OS/arch pairs the source has drivers for, in virtio-win's order.
        public var available: [String] {
            let order = VirtioWin.osDirectories.map(\.name)
            return packages.keys.sorted {
                let a = $0.split(separator: "/"), b = $1.split(separator: "/")
                let ia = order.firstIndex(of: String(a[0])) ?? 99, ib = order.firstIndex(of: String(b[0])) ?? 99
                return (ia, String(a[1])) < (ib, String(b[1]))
            }
        }
    }

    /// Groups a source's files (relative paths, `/`-separated) into driver
    /// packages per OS and architecture. A driver's own directory wins over
    /// the combined by-os / storage-only directories holding the same INF.
    public static func list(_ paths: [String]) -> Listing {
        var byDirectory: [String: [String]] = [:]
        for p in paths where !skipped(p) {
            let dir = GuestPath.parent(p)
            byDirectory[dir, default: []].append(p)
        }
        var listing = Listing()
        var infNames: [String: Set<String>] = [:]  // key -> INF names already taken
        // Per-driver directories first (`<Driver>/<os>/<arch>`), then combined ones.
        let dirs = byDirectory.keys.sorted { (combined($0) ? 1 : 0, $0) < (combined($1) ? 1 : 0, $1) }
        for dir in dirs {
            let parts = dir.split(separator: "/").map(String.init)
            guard let osPart = parts.first(where: { osDirectory(named: $0) != nil }).flatMap(osDirectory(named:)),
                let archPart = parts.last(where: { ["amd64", "x86", "i386"].contains($0.lowercased()) })
            else { continue }
            let arch = archPart.lowercased() == "amd64" ? "amd64" : "x86"
            let key = "\(osPart.name)/\(arch)"
            let files = byDirectory[dir]!.sorted()
            // In a combined directory only the files named after an INF belong to it: grouped once by stem, so a
            // directory of n files costs n, not n per INF.
            let byStem =
                combined(dir)
                ? Dictionary(grouping: files) { GuestPath.stem($0.lowercased()) } : nil
            for inf in files where inf.lowercased().hasSuffix(".inf") {
                let name = GuestPath.name(inf).lowercased()
                guard infNames[key, default: []].insert(name).inserted else { continue }
                let mine = byStem.map { $0[String(name.dropLast(4))] ?? [] } ?? files
                listing.packages[key, default: []].append(Candidate(inf: name, directory: dir, files: mine))
            }
        }
        return listing
    }

    /// A directory holding several drivers' files: `drivers/by-os/...` or the ISO's `amd64/<os>`.
    static func combined(_ dir: String) -> Bool {
        let parts = dir.lowercased().split(separator: "/")
        if parts.contains("by-os") { return true }
        return ["amd64", "x86", "i386"].contains(parts.first.map(String.init) ?? "") && parts.count == 2
    }

    /// `2k16/amd64` for an inspected Windows, or nil when virtio-win has no directory for it.
    public static func key(for os: OSFacts) -> String? {
        guard let dir = osDirectory(for: os) else { return nil }
        return "\(dir.name)/\(os.arch.windowsName)"
    }

    /// Programs virtio-win ships beside the drivers, installed at first boot by the `guest-agent` rule.
    public enum Tool: String, Sendable, CaseIterable, Codable {
        /// The QEMU guest agent installer: `guest-agent/qemu-ga-<arch>.msi`.
        case guestAgent = "qemu-ga"
        /// The balloon service: `blnsvr.exe` in the Balloon driver's directory for the OS and architecture.
        case balloonService = "blnsvr"
    }

    /// The guest-agent MSI names for an architecture, preferred first (`qemu-ga-x86_64.msi` as virtio-win ships it
    /// now; `qemu-ga-x64.msi` / `qemu-ga-x86.msi` in older trees).
    public static func guestAgentNames(_ arch: Architecture) -> [String] {
        arch == .i386 ? ["qemu-ga-i386.msi", "qemu-ga-x86.msi"] : ["qemu-ga-x86_64.msi", "qemu-ga-x64.msi"]
    }

    /// A path whose every component is a plain name (letters, digits, `.`, `_`, `-`): the only ones a tool is taken from.
    static func plain(_ path: String) -> Bool {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        return !parts.isEmpty
            && parts.allSatisfy { part in
                !part.isEmpty && part != "." && part != ".."
                    && part.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
            }
    }

    /// Where a source (relative paths, `/`-separated) has `tool` for the OS/arch directory `key` (`2k16/amd64`), or nil.
    /// The guest agent: a `guest-agent/` directory's MSI for the architecture (the shallowest one). The balloon service:
    /// `blnsvr.exe` in a directory of that OS and architecture, the Balloon driver's own (`Balloon/2k16/amd64`,
    /// `drivers/by-driver/Balloon/2k16/amd64`) before a combined one (`drivers/by-os/amd64/2k16`).
    public static func toolPath(_ tool: Tool, in paths: [String], key: String) -> String? {
        let keyParts = key.split(separator: "/").map(String.init)
        guard keyParts.count == 2 else { return nil }
        let arch: Architecture = keyParts[1] == "x86" ? .i386 : .x86_64
        switch tool {
        case .guestAgent:
            let names = guestAgentNames(arch)
            let found = paths.filter { p in
                let parts = p.lowercased().split(separator: "/").map(String.init)
                return plain(p) && parts.count >= 2 && parts[parts.count - 2] == "guest-agent"
                    && names.contains(parts[parts.count - 1])
            }
            func rank(_ p: String) -> (Int, Int, String) {
                (names.firstIndex(of: GuestPath.name(p).lowercased()) ?? names.count, p.split(separator: "/").count, p)
            }
            return found.min { rank($0) < rank($1) }
        case .balloonService:
            let found = paths.filter { p in
                guard plain(p), !skipped(p), GuestPath.name(p).lowercased() == "blnsvr.exe" else { return false }
                let parts = GuestPath.parent(p).split(separator: "/").map(String.init)
                guard let os = parts.first(where: { osDirectory(named: $0) != nil }).flatMap(osDirectory(named:)),
                    let archPart = parts.last(where: { ["amd64", "x86", "i386"].contains($0.lowercased()) })
                else { return false }
                return os.name == keyParts[0] && (archPart.lowercased() == "amd64" ? "amd64" : "x86") == keyParts[1]
            }
            func rank(_ p: String) -> (Int, Int, Int, String) {
                let dir = GuestPath.parent(p)
                let own = dir.lowercased().split(separator: "/").contains("balloon")
                return (own ? 0 : 1, combined(dir) ? 1 : 0, p.split(separator: "/").count, p)
            }
            return found.min { rank($0) < rank($1) }
        }
    }

    /// A human description of an inspected Windows, for errors.
    public static func describe(_ os: OSFacts) -> String {
        "\(os.product) (NT \(os.version)\(os.build.map { " build \($0)" } ?? ""), \(os.variant.isEmpty ? "Server" : os.variant), \(os.arch))"
    }
}

/// The drivers chosen from virtio-win for one image, with their INFs parsed.
public struct VirtioFacts: Sendable, Equatable, Codable {
    /// The path the user gave.
    public var source: String
    /// `iso`, `tree`.
    public var kind: String
    /// `2k16/amd64`.
    public var selected: String
    /// What the source has (`2k8/x86`, `2k12R2/amd64`, ...).
    public var available: [String]
    public var packages: [DriverPackage]
    /// The driver version of the selected packages (from the INFs' DriverVer), the highest one.
    public var driverVersion: String
    /// The QEMU guest agent MSI for the image's architecture (`guest-agent/qemu-ga-x86_64.msi`), when it was asked
    /// for and the source has it.
    public var guestAgent: PayloadFile?
    /// The balloon service (`Balloon/2k16/amd64/blnsvr.exe`) of the selected directory, when it was asked for and the source has it.
    public var balloonService: PayloadFile?

    public init(
        source: String, kind: String, selected: String, available: [String], packages: [DriverPackage],
        driverVersion: String,
        guestAgent: PayloadFile? = nil, balloonService: PayloadFile? = nil
    ) {
        self.source = source
        self.kind = kind
        self.selected = selected
        self.available = available
        self.packages = packages
        self.driverVersion = driverVersion
        self.guestAgent = guestAgent
        self.balloonService = balloonService
    }

    public func package(_ inf: String) -> DriverPackage? { packages.first { $0.inf.name == inf.lowercased() } }
}

/// One driver package ready to inject: its parsed INF and its files.
public struct DriverPackage: Sendable, Equatable, Codable {
    public var inf: DriverINF
    public var files: [PayloadFile]
    /// The INF's text (the DriverDatabase needs nothing else from it, but the hash of the package is taken over it).
    public var infSHA256: String

    /// A boot-critical storage driver: a SCSIAdapter/HDC-class package whose function service starts at boot.
    public var bootCritical: Bool {
        let storage = [DriverClassGUID.scsiAdapter, DriverClassGUID.hdc].contains(inf.classGUID.uppercased())
        return storage && inf.functionService?.start == 0
    }

    package init(inf: DriverINF, files: [PayloadFile], infSHA256: String) {
        self.inf = inf
        self.files = files
        self.infSHA256 = infSHA256
    }
}

public enum DriverClassGUID {
    public static let scsiAdapter = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
    public static let hdc = "{4D36E96A-E325-11CE-BFC1-08002BE10318}"
    public static let net = "{4D36E972-E325-11CE-BFC1-08002BE10318}"
}
