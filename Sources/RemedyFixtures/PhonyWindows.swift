import Foundation
import Hivex

/// Windows releases a phony image can imitate, with the registry facts
/// Windows records for them (SOFTWARE\Microsoft\Windows NT\CurrentVersion).
public enum WindowsRelease: String, Sendable, Codable, CaseIterable {
    case server2008 = "2008", server2008R2 = "2008r2", server2012 = "2012", server2012R2 = "2012r2"
    case server2016 = "2016", server2019 = "2019", server2022 = "2022"

    public var productName: String {
        switch self {
        case .server2008: "Windows Server (R) 2008 Standard"
        case .server2008R2: "Windows Server 2008 R2 Datacenter"
        case .server2012: "Windows Server 2012 Datacenter"
        case .server2012R2: "Windows Server 2012 R2 Datacenter"
        case .server2016: "Windows Server 2016 Datacenter"
        case .server2019: "Windows Server 2019 Datacenter"
        case .server2022: "Windows Server 2022 Datacenter"
        }
    }

    /// The legacy CurrentVersion string (frozen at 6.3 since Windows 8.1).
    public var currentVersion: String {
        switch self {
        case .server2008: "6.0"
        case .server2008R2: "6.1"
        case .server2012: "6.2"
        default: "6.3"
        }
    }

    /// The real NT version (what inspection must report).
    public var version: (major: Int, minor: Int) {
        switch self {
        case .server2008: (6, 0)
        case .server2008R2: (6, 1)
        case .server2012: (6, 2)
        case .server2012R2: (6, 3)
        case .server2016, .server2019, .server2022: (10, 0)
        }
    }

    public var build: String {
        switch self {
        case .server2008: "6002"
        case .server2008R2: "7601"
        case .server2012: "9200"
        case .server2012R2: "9600"
        case .server2016: "14393"
        case .server2019: "17763"
        case .server2022: "20348"
        }
    }

    public var editionID: String { self == .server2008 ? "ServerStandard" : "ServerDatacenter" }

    /// Server 2008 was the last with a 32-bit edition.
    public var defaultArch: Arch { self == .server2008 ? .i386 : .x86_64 }
}

public enum Arch: String, Sendable, Codable {
    case x86_64, i386
}

public enum Firmware: String, Sendable, Codable {
    /// MBR, one active NTFS partition.
    case bios
    /// GPT: EFI system partition (FAT) and an NTFS partition.
    case uefi
}

/// A network interface under `Services\Tcpip\Parameters\Interfaces\{GUID}`.
public struct PhonyNIC: Sendable, Codable {
    public var guid: String
    /// Static addressing (nil: DHCP, with a plausible lease).
    public var address: String?
    public var mask: String
    public var gateway: String?
    /// Static DNS servers (NameServer).
    public var dns: [String]
    /// Control set numbers this interface appears in (nil: all of them).
    public var controlSets: [Int]?

    public static func staticIP(_ guid: String, _ address: String, mask: String = "255.255.255.0", gateway: String? = nil,
                                dns: [String] = ["8.8.8.8", "8.8.4.4"], controlSets: [Int]? = nil) -> PhonyNIC {
        PhonyNIC(guid: guid, address: address, mask: mask, gateway: gateway, dns: dns, controlSets: controlSets)
    }

    public static func dhcp(_ guid: String, dns: [String] = [], controlSets: [Int]? = nil) -> PhonyNIC {
        PhonyNIC(guid: guid, address: nil, mask: "", gateway: nil, dns: dns, controlSets: controlSets)
    }

    /// The values Windows keeps for this interface.
    var values: [String: RegistryValue] {
        var v: [String: RegistryValue] = [
            "Domain": .string(""),
            "NameServer": .string(dns.joined(separator: ",")),
            "RegistrationEnabled": .dword(1),
            "RegisterAdapterName": .dword(0),
        ]
        if let address {
            v["EnableDHCP"] = .dword(0)
            v["IPAddress"] = .multiString([address])
            v["SubnetMask"] = .multiString([mask])
            if let gateway {
                v["DefaultGateway"] = .multiString([gateway])
                v["DefaultGatewayMetric"] = .multiString(["0"])
            }
        } else {
            v["EnableDHCP"] = .dword(1)
            v["DhcpIPAddress"] = .string("192.168.122.57")
            v["DhcpSubnetMask"] = .string("255.255.255.0")
            v["DhcpDefaultGateway"] = .multiString(["192.168.122.1"])
            v["DhcpServer"] = .string("192.168.122.1")
            v["DhcpNameServer"] = .string("192.168.122.1")
            v["Lease"] = .dword(3600)
        }
        return v
    }
}

/// A way to break a phony image on purpose.
public enum PhonyDamage: Sendable, Codable {
    /// The SYSTEM hive cut to this many bytes.
    case truncateSystemHive(Int)
}

/// A declarative phony Windows installation: real NTFS, real hives, a
/// minimal PE `cmd.exe`; enough for libguestfs inspection and for remedy.
public struct PhonyWindows: Sendable, Codable {
    public var release: WindowsRelease
    public var arch: Arch
    public var firmware: Firmware
    public var hostname: String
    /// How many ControlSet00N keys (1...9). Select: Current=1, Default=1, LastKnownGood=2 when present.
    public var controlSetCount: Int
    public var nics: [PhonyNIC]
    /// Extra SYSTEM keys: path -> values (paths with `{cs}` are written into every control set).
    public var extraSystem: [String: [String: RegistryValue]]
    public var extraSoftware: [String: [String: RegistryValue]]
    public var damage: PhonyDamage?
    public var diskMiB: Int

    public init(release: WindowsRelease, arch: Arch? = nil, firmware: Firmware = .bios, hostname: String = "WIN-PHONY01",
                controlSetCount: Int = 2, nics: [PhonyNIC] = [], extraSystem: [String: [String: RegistryValue]] = [:],
                extraSoftware: [String: [String: RegistryValue]] = [:], damage: PhonyDamage? = nil, diskMiB: Int = 128) {
        self.release = release
        self.arch = arch ?? release.defaultArch
        self.firmware = firmware
        self.hostname = hostname
        self.controlSetCount = controlSetCount
        self.nics = nics
        self.extraSystem = extraSystem
        self.extraSoftware = extraSoftware
        self.damage = damage
        self.diskMiB = diskMiB
    }

    public func systemHive(mountedDevice: [UInt8]) -> HiveContent {
        var h = HiveContent(rootName: "ROOT", fileName: "\\SystemRoot\\System32\\Config\\SYSTEM")
        h.set("Select", ["Current": .dword(1), "Default": .dword(1), "Failed": .dword(0),
                         "LastKnownGood": .dword(UInt32(controlSetCount >= 2 ? 2 : 1))])
        h.set("MountedDevices", ["\\DosDevices\\C:": .binary(mountedDevice)])
        if release.version >= (6, 2) {
            h.set("DriverDatabase", ["SystemRoot": .string("C:\\Windows")])
        }
        for n in 1...controlSetCount {
            let cs = String(format: "ControlSet%03d", n)
            h.set("\(cs)\\Control\\ComputerName\\ComputerName", ["ComputerName": .string(hostname)])
            h.set("\(cs)\\Control\\CrashControl", ["AutoReboot": .dword(1), "CrashDumpEnabled": .dword(7)])
            h.set("\(cs)\\Services\\Tcpip\\Parameters", ["Hostname": .string(hostname), "NV Hostname": .string(hostname), "Domain": .string("")])
            h.set("\(cs)\\Services\\Tcpip\\Parameters\\Interfaces", [:])
            for nic in nics where nic.controlSets?.contains(n) ?? true {
                h.set("\(cs)\\Services\\Tcpip\\Parameters\\Interfaces\\\(nic.guid)", nic.values)
            }
            for (path, values) in extraSystem.sorted(by: { $0.key < $1.key }) where path.contains("{cs}") {
                h.set(path.replacingOccurrences(of: "{cs}", with: cs), values)
            }
        }
        for (path, values) in extraSystem.sorted(by: { $0.key < $1.key }) where !path.contains("{cs}") {
            h.set(path, values)
        }
        return h
    }

    public func softwareHive() -> HiveContent {
        var h = HiveContent(rootName: "ROOT", fileName: "\\SystemRoot\\System32\\Config\\SOFTWARE")
        var cv: [String: RegistryValue] = [
            "ProductName": .string(release.productName),
            "CurrentVersion": .string(release.currentVersion),
            "CurrentBuild": .string(release.build),
            "CurrentBuildNumber": .string(release.build),
            "EditionID": .string(release.editionID),
            "InstallationType": .string("Server"),
            "SystemRoot": .string("C:\\Windows"),
            "PathName": .string("C:\\Windows"),
            "RegisteredOwner": .string("remedy test"),
        ]
        if release.version.major >= 10 {
            cv["CurrentMajorVersionNumber"] = .dword(UInt32(release.version.major))
            cv["CurrentMinorVersionNumber"] = .dword(UInt32(release.version.minor))
        }
        h.set("Microsoft\\Windows NT\\CurrentVersion", cv)
        h.set("Microsoft\\Windows\\CurrentVersion", [
            "ProgramFilesDir": .string("C:\\Program Files"),
            "DevicePath": .expandString("%SystemRoot%\\inf"),
        ])
        for (path, values) in extraSoftware.sorted(by: { $0.key < $1.key }) { h.set(path, values) }
        return h
    }
}
