import Foundation
import Hivex
import RemedyPlanning

/// Windows releases a phony image can imitate, with the registry facts
/// Windows records for them (SOFTWARE\Microsoft\Windows NT\CurrentVersion).
public enum WindowsRelease: String, Sendable, Codable, CaseIterable {
    case server2008 = "2008"
    case server2008R2 = "2008r2"
    case server2012 = "2012"
    case server2012R2 = "2012r2"
    case server2016 = "2016"
    case server2019 = "2019"
    case server2022 = "2022"

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
    public var defaultArch: Architecture { self == .server2008 ? .i386 : .x86_64 }
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

    public static func staticIP(
        _ guid: String, _ address: String, mask: String = "255.255.255.0", gateway: String? = nil,
        dns: [String] = ["8.8.8.8", "8.8.4.4"], controlSets: [Int]? = nil
    ) -> PhonyNIC {
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
public enum PhonyDamage: Sendable, Codable, Equatable {
    /// The SYSTEM hive cut to this many bytes.
    case truncateSystemHive(Int)
    /// Windows stopped mid-write: the SYSTEM hive is dirty and SYSTEM.LOG1
    /// (new format) holds the last write: CrashDumpEnabled=3 and a key
    /// `ControlSet001\Services\RemedyLogged` that only the log has.
    case dirtySystemHive
    /// A dirty SYSTEM hive whose logs are gone: it cannot be recovered.
    case dirtySystemHiveWithoutLogs
    /// hiberfil.sys holds a hibernation image (hibernated or Fast Startup).
    case hibernated
    /// The Windows volume itself is BitLocker-encrypted.
    case bitLockerSystemVolume
    /// A second, BitLocker-encrypted data partition beside an unencrypted Windows.
    case bitLockerDataVolume
}

/// A state an exported Windows really is found in, which remedy's rules fix
/// or report. A phony image starts as Windows installed on an IDE disk with
/// default settings; each state adds what that history leaves behind.
public enum PhonyState: String, Sendable, Codable, CaseIterable {
    /// VMware Tools: vmxnet3/pvscsi/vmmouse/vmhgfs services, vmmouse and a
    /// missing vmkbd in the keyboard/mouse class filters, its uninstaller.
    case vmwareTools = "vmware-tools"
    /// Citrix/XenServer PV drivers: xenbus/xenfilt/xenvbd/xennet, XENFILT
    /// on the System and HDC classes, its uninstaller.
    case xenPV = "xen-pv"
    /// Parallels Tools: prl_* services, prl_strg under the disk class, its uninstaller.
    case parallelsTools = "parallels-tools"
    /// VirtualBox Guest Additions: VBoxGuest/VBoxMouse, VBoxMouse on the mouse class.
    case virtualBoxAdditions = "virtualbox-additions"
    /// The IDE path switched off (a VM that booted from SCSI): atapi,
    /// intelide, pciide on demand start, no CriticalDeviceDatabase entries.
    case ideDisabled = "ide-disabled"
    /// Group Policy device-installation restrictions (DenyUnspecified, DenyDeviceIDs with a VirtIO ID).
    case deviceInstallRestricted = "device-install-restricted"
    /// Remote Desktop on, with its firewall rule active (Windows' default is off).
    case rdpEnabled = "rdp-enabled"
    /// CrashControl AutoReboot=0 already (Windows' default is 1).
    case noAutoReboot = "no-auto-reboot"
    /// The built-in Administrator account disabled (and no other enabled account).
    case adminDisabled = "admin-disabled"
    /// The boot manager was on another disk: no bootmgr/BCD (or EFI boot files) on this one.
    case bootOnOtherDisk = "boot-on-other-disk"
    /// A second NTFS partition with data beside Windows on the system disk (BIOS layout).
    case dataPartition = "data-partition"
    /// Receive-side scaling switched off (netsh int tcp set global rss=disabled; NDIS RSS=0).
    case rssDisabled = "rss-disabled"
    /// Cloudbase-Init installed (its service), with the plugin state of the machine the image was cloned from.
    case cloudbaseInitInstalled = "cloudbase-init-installed"
    /// UEFI: the ESP's fallback loader \EFI\Boot\bootx64.efi is not the Windows Boot Manager (an older, different file).
    case staleUefiFallback = "stale-uefi-fallback"
    /// Local Group Policy already runs a computer startup script (as gpedit leaves it): `GroupPolicy\gpt.ini`
    /// (scripts extension listed, Version=3) and `GroupPolicy\Machine\Scripts\scripts.ini` (UTF-16LE with a BOM)
    /// with `0CmdLine=inventory.cmd`, the script in `Machine\Scripts\Startup\`.
    case startupScript = "startup-script"
}

/// A declarative phony Windows installation: real NTFS, real hives, a
/// minimal PE `cmd.exe`; enough for libguestfs inspection and for remedy.
public struct PhonyWindows: Sendable, Codable {
    public var release: WindowsRelease
    public var arch: Architecture
    public var firmware: Firmware
    public var hostname: String
    /// How many ControlSet00N keys (1...9). Select: Current=1, Default=1, LastKnownGood=2 when present.
    public var controlSetCount: Int
    public var nics: [PhonyNIC]
    /// Extra SYSTEM keys: path -> values (paths with `{cs}` are written into every control set).
    public var extraSystem: [String: [String: RegistryValue]]
    public var extraSoftware: [String: [String: RegistryValue]]
    public var damage: PhonyDamage?
    public var states: Set<PhonyState>
    public var diskMiB: Int
    /// A real Windows SYSTEM hive to use instead of the generated one (then
    /// `controlSetCount`, `nics`, `extraSystem` and the states' SYSTEM content
    /// do not apply; SOFTWARE and SAM stay phony, of `release`).
    public var realSystem: RealSystemHive?

    /// An image around a real SYSTEM hive, with the phony SOFTWARE and SAM of the matching release.
    public static func real(
        _ hive: RealSystemHive, firmware: Firmware = .bios, states: Set<PhonyState> = [],
        extraSoftware: [String: [String: RegistryValue]] = [:]
    ) -> PhonyWindows {
        var w = PhonyWindows(release: hive.release, firmware: firmware, states: states, extraSoftware: extraSoftware)
        w.realSystem = hive
        return w
    }

    /// Filler for the SOFTWARE hive, so that it has a real hive's size: about `mib` MiB of keys under
    /// `SOFTWARE\RemedyBenchmarkFiller\Vendor<n>\Product<n>`, each with the values an installed product has (display
    /// name, version, publisher, install location, uninstall command with a product code) and 24 component paths with
    /// their GUIDs, as REG_SZ in UTF-16 like Windows' own: a real SOFTWARE hive is 40-100 MB of such keys and values,
    /// and this filler compresses about as much as a real hive does (the real SYSTEM hive: 5x with `gzip -1`).
    public static func softwareFiller(mib: Int) -> [String: [String: RegistryValue]] {
        guard mib > 0 else { return [:] }
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func guid() -> String {
            var parts: [UInt64] = []
            for _ in 0..<2 {
                seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                parts.append(seed)
            }
            let h = String(format: "%016llX%016llX", parts[0], parts[1])
            let c = Array(h)
            return
                "{\(String(c[0..<8]))-\(String(c[8..<12]))-\(String(c[12..<16]))-\(String(c[16..<20]))-\(String(c[20..<32]))}"
        }
        var out: [String: [String: RegistryValue]] = [:]
        // About 10 KiB of value data (UTF-16) a key.
        for k in 0..<(mib * 1024 / 10) {
            let vendor = String(format: "Vendor %03d", k / 40), product = String(format: "Product %05d", k)
            let home = "C:\\Program Files\\\(vendor)\\\(product)"
            var values: [String: RegistryValue] = [
                "DisplayName": .string("\(product) by \(vendor)"),
                "DisplayVersion": .string("\(k % 17).\(k % 5).\(k % 1000).\(k % 7)"),
                "Publisher": .string("\(vendor) Corporation"),
                "InstallLocation": .string(home + "\\"),
                "UninstallString": .string("MsiExec.exe /X\(guid())"),
                "EstimatedSize": .dword(UInt32(k % 65536)),
                "NoModify": .dword(1),
            ]
            for c in 0..<24 {
                values[String(format: "Component%02d", c)] = .string(
                    home + String(format: "\\bin\\module-%02d\\component-%05d.dll;", c, k) + guid()
                        + ";\(guid());InprocServer32;ThreadingModel=Both")
            }
            out["RemedyBenchmarkFiller\\\(vendor)\\\(product)"] = values
        }
        return out
    }

    /// Writes the SYSTEM hive file: the real one when there is one, else the generated one.
    public func writeSystemHive(to path: String, mountedDevice: [UInt8]) throws {
        if let realSystem {
            try realSystem.write(to: path)
        } else {
            try systemHive(mountedDevice: mountedDevice).write(to: path)
        }
    }

    public init(
        release: WindowsRelease, arch: Architecture? = nil, firmware: Firmware = .bios,
        hostname: String = "WIN-PHONY01",
        controlSetCount: Int = 2, nics: [PhonyNIC] = [], states: Set<PhonyState> = [],
        extraSystem: [String: [String: RegistryValue]] = [:],
        extraSoftware: [String: [String: RegistryValue]] = [:], damage: PhonyDamage? = nil, diskMiB: Int = 128
    ) {
        self.states = states
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

    /// Files a state leaves on the Windows volume: guest path -> bytes.
    public var stateFiles: [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        if states.contains(.startupScript) {
            let gp = "/Windows/System32/GroupPolicy"
            out[gp + "/gpt.ini"] = Array(
                "[General]\r\ngPCFunctionalityVersion=2\r\ngPCMachineExtensionNames=[{42B5FAAE-6536-11D2-AE5A-0000F87571E3}{40B6664F-4972-11D1-A7CA-0000F87571E3}]\r\nVersion=3\r\n"
                    .utf8)
            let ini = "\r\n[Startup]\r\n0CmdLine=inventory.cmd\r\n0Parameters=/quiet\r\n"
            out[gp + "/Machine/Scripts/scripts.ini"] =
                [0xFF, 0xFE] + ini.utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
            out[gp + "/Machine/Scripts/Startup/inventory.cmd"] = Array(
                "@echo off\r\nsysteminfo > C:\\inventory.txt\r\n".utf8)
        }
        return out
    }

    public func systemHive(mountedDevice: [UInt8]) -> HiveContent {
        var h = HiveContent(rootName: "ROOT", fileName: "\\SystemRoot\\System32\\Config\\SYSTEM")
        h.set(
            "Select",
            [
                "Current": .dword(1), "Default": .dword(1), "Failed": .dword(0),
                "LastKnownGood": .dword(UInt32(controlSetCount >= 2 ? 2 : 1)),
            ])
        h.set("MountedDevices", ["\\DosDevices\\C:": .binary(mountedDevice)])
        if release.version >= (6, 2) {
            h.set("DriverDatabase", ["SystemRoot": .string("C:\\Windows")])
        }
        for n in 1...controlSetCount {
            let cs = String(format: "ControlSet%03d", n)
            h.set("\(cs)\\Control\\ComputerName\\ComputerName", ["ComputerName": .string(hostname)])
            h.set(
                "\(cs)\\Control\\CrashControl",
                ["AutoReboot": .dword(states.contains(.noAutoReboot) ? 0 : 1), "CrashDumpEnabled": .dword(7)])
            writeBaseline(into: &h, cs)
            for state in states.sorted(by: { $0.rawValue < $1.rawValue }) { write(state, into: &h, cs) }
            var tcpip: [String: RegistryValue] = [
                "Hostname": .string(hostname), "NV Hostname": .string(hostname), "Domain": .string(""),
            ]
            if states.contains(.rssDisabled) {
                tcpip["EnableRSS"] = .dword(0)
                h.set("\(cs)\\Services\\NDIS\\Parameters", ["RSS": .dword(0)])
            }
            h.set("\(cs)\\Services\\Tcpip\\Parameters", tcpip)
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

    /// Local accounts: `SAM\Domains\Account\Users\<RID>` with the `F`
    /// value whose account control flags (offset 0x38) say enabled or
    /// disabled (bit 0x0001); Administrator (RID 500) and Guest (501, disabled).
    public func samHive() -> HiveContent {
        var h = HiveContent(rootName: "ROOT", fileName: "\\SystemRoot\\System32\\Config\\SAM")
        func f(_ acb: UInt16, rid: UInt32) -> RegistryValue {
            var v = [UInt8](repeating: 0, count: 0x50)
            v[0] = 2  // revision
            for i in 0..<4 { v[0x30 + i] = UInt8(truncatingIfNeeded: rid >> (8 * UInt32(i))) }
            v[0x38] = UInt8(acb & 0xFF)
            v[0x39] = UInt8(acb >> 8)
            return .binary(v)
        }
        let users = "SAM\\Domains\\Account\\Users"
        // ACB_NORMAL (0x0010) | ACB_PWNOEXP (0x0200); ACB_DISABLED is 0x0001.
        h.set("\(users)\\000001F4", ["F": f(states.contains(.adminDisabled) ? 0x0211 : 0x0210, rid: 0x1F4)])
        h.set("\(users)\\000001F5", ["F": f(0x0215, rid: 0x1F5)])
        h.set("\(users)\\Names\\Administrator", [:])
        h.set("\(users)\\Names\\Guest", [:])
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
        h.set(
            "Microsoft\\Windows\\CurrentVersion",
            [
                "ProgramFilesDir": .string("C:\\Program Files"),
                "DevicePath": .expandString("%SystemRoot%\\inf"),
            ])
        h.set("Microsoft\\Windows\\CurrentVersion\\Uninstall", [:])
        let uninstall = "Microsoft\\Windows\\CurrentVersion\\Uninstall"
        if states.contains(.vmwareTools) {
            h.set(
                "\(uninstall)\\{A4F5A2B1-7E2B-4B0D-9C1A-0C9F2C6E1A11}",
                [
                    "DisplayName": .string("VMware Tools"), "Publisher": .string("VMware, Inc."),
                    "UninstallString": .expandString("MsiExec.exe /I{A4F5A2B1-7E2B-4B0D-9C1A-0C9F2C6E1A11}"),
                ])
        }
        if states.contains(.xenPV) {
            h.set(
                "\(uninstall)\\Citrix XenServer Tools",
                [
                    "DisplayName": .string("Citrix XenServer Windows Management Agent"),
                    "UninstallString": .string("\"C:\\Program Files\\Citrix\\XenTools\\uninstaller.exe\""),
                ])
        }
        if states.contains(.parallelsTools) {
            h.set(
                "\(uninstall)\\{DDDA2E4C-2D68-4E8B-8A2F-6B0B7E1C3D55}",
                [
                    "DisplayName": .string("Parallels Tools"),
                    "UninstallString": .string("MsiExec.exe /X{DDDA2E4C-2D68-4E8B-8A2F-6B0B7E1C3D55}"),
                ])
        }
        if states.contains(.virtualBoxAdditions) {
            h.set(
                "Wow6432Node\\\(uninstall)\\Oracle VM VirtualBox Guest Additions",
                [
                    "DisplayName": .string("Oracle VM VirtualBox Guest Additions 6.1.38"),
                    "UninstallString": .string("C:\\Program Files\\Oracle\\VirtualBox Guest Additions\\uninst.exe"),
                ])
        }
        if states.contains(.cloudbaseInitInstalled) {
            // Plugin state is kept per instance id; a cloned image carries its source's.
            h.set(
                "Cloudbase Solutions\\Cloudbase-Init\\i-0a1b2c3d\\Plugins",
                [
                    "SetHostNamePlugin": .dword(1), "SetUserPasswordPlugin": .dword(1), "CreateUserPlugin": .dword(1),
                ])
        }
        if states.contains(.deviceInstallRestricted) {
            h.set(
                "Policies\\Microsoft\\Windows\\DeviceInstall\\Restrictions",
                [
                    "DenyUnspecified": .dword(1), "DenyDeviceIDs": .dword(1), "DenyDeviceIDsRetroactive": .dword(0),
                ])
            h.set(
                "Policies\\Microsoft\\Windows\\DeviceInstall\\Restrictions\\DenyDeviceIDs",
                ["1": .string("PCI\\VEN_1AF4&DEV_1000")])
        }
        for (path, values) in extraSoftware.sorted(by: { $0.key < $1.key }) { h.set(path, values) }
        return h
    }

    /// Class filters of a default installation (Microsoft's device setup classes).
    static let keyboardClass = "{4D36E96B-E325-11CE-BFC1-08002BE10318}"
    static let mouseClass = "{4D36E96F-E325-11CE-BFC1-08002BE10318}"
    static let diskClass = "{4D36E967-E325-11CE-BFC1-08002BE10318}"
    static let hdcClass = "{4D36E96A-E325-11CE-BFC1-08002BE10318}"
    static let systemClass = "{4D36E97D-E325-11CE-BFC1-08002BE10318}"
    static let scsiClass = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"

    static func service(
        _ start: UInt32, _ type: UInt32 = 1, _ image: String? = nil, group: String? = nil
    ) -> [String: RegistryValue] {
        var v: [String: RegistryValue] = ["Start": .dword(start), "Type": .dword(type), "ErrorControl": .dword(1)]
        if let image { v["ImagePath"] = .expandString(image) }
        if let group { v["Group"] = .string(group) }
        return v
    }

    /// What every control set of a default installation on an IDE disk holds.
    func writeBaseline(into h: inout HiveContent, _ cs: String) {
        let svc = "\(cs)\\Services"
        let ide = states.contains(.ideDisabled) ? UInt32(3) : 0
        h.set("\(svc)\\atapi", Self.service(ide, 1, "System32\\drivers\\atapi.sys", group: "SCSI miniport"))
        h.set("\(svc)\\intelide", Self.service(ide, 1, "System32\\drivers\\intelide.sys", group: "System Bus Extender"))
        h.set("\(svc)\\pciide", Self.service(ide, 1, "System32\\drivers\\pciide.sys", group: "System Bus Extender"))
        h.set("\(svc)\\disk", Self.service(0, 1, "System32\\drivers\\disk.sys", group: "SCSI Class"))
        h.set("\(svc)\\partmgr", Self.service(0, 1, "System32\\drivers\\partmgr.sys", group: "System Bus Extender"))
        h.set("\(svc)\\kbdclass", Self.service(1, 1, "System32\\drivers\\kbdclass.sys", group: "Keyboard Class"))
        h.set("\(svc)\\mouclass", Self.service(1, 1, "System32\\drivers\\mouclass.sys", group: "Pointer Class"))
        h.set("\(svc)\\i8042prt", Self.service(3, 1, "System32\\drivers\\i8042prt.sys", group: "Keyboard Port"))
        h.set("\(svc)\\TermService", Self.service(3, 32, "%SystemRoot%\\System32\\svchost.exe -k NetworkService"))
        for name in ["BFE", "Dhcp", "Dnscache", "mpssvc", "nsi"] {
            h.set(
                "\(svc)\\\(name)",
                Self.service(2, 32, "%SystemRoot%\\system32\\svchost.exe -k LocalServiceNetworkRestricted"))
        }
        for (guid, name, upper, lower) in classFilters() {
            var values: [String: RegistryValue] = ["Class": .string(name)]
            if !upper.isEmpty { values["UpperFilters"] = .multiString(upper) }
            if !lower.isEmpty { values["LowerFilters"] = .multiString(lower) }
            h.set("\(cs)\\Control\\Class\\\(guid)", values)
        }
        if release.version < (6, 2) && !states.contains(.ideDisabled) {
            let cdd = "\(cs)\\Control\\CriticalDeviceDatabase"
            for (device, service, guid) in [
                ("pci#ven_8086&dev_7010", "intelide", Self.hdcClass),
                ("pci#ven_8086&dev_7111", "intelide", Self.hdcClass),
                ("pci#cc_0101", "pciide", Self.hdcClass), ("primary_ide_channel", "atapi", Self.hdcClass),
                ("secondary_ide_channel", "atapi", Self.hdcClass), ("*pnp0600", "atapi", Self.hdcClass),
                ("gendisk", "disk", Self.diskClass),
            ] {
                h.set("\(cdd)\\\(device)", ["Service": .string(service), "ClassGUID": .string(guid)])
            }
        }
        let rdpOn = states.contains(.rdpEnabled)
        h.set("\(cs)\\Control\\Terminal Server", ["fDenyTSConnections": .dword(rdpOn ? 0 : 1)])
        h.set(
            "\(cs)\\Control\\Terminal Server\\WinStations\\RDP-Tcp",
            ["PortNumber": .dword(3389), "UserAuthentication": .dword(1)])
        let rule =
            release.version < (6, 2)
            ? (
                "RemoteDesktop-In-TCP",
                "v2.10|Action=Allow|Active=\(rdpOn ? "TRUE" : "FALSE")|Dir=In|Protocol=6|LPort=3389|App=System|Name=@FirewallAPI.dll,-28753|Desc=@FirewallAPI.dll,-28756|EmbedCtxt=@FirewallAPI.dll,-28752|"
            )
            : (
                "RemoteDesktop-UserMode-In-TCP",
                "v2.22|Action=Allow|Active=\(rdpOn ? "TRUE" : "FALSE")|Dir=In|Protocol=6|LPort=3389|App=%SystemRoot%\\system32\\svchost.exe|Svc=termservice|Name=@FirewallAPI.dll,-28775|Desc=@FirewallAPI.dll,-28756|EmbedCtxt=@FirewallAPI.dll,-28752|"
            )
        h.set(
            "\(svc)\\SharedAccess\\Parameters\\FirewallPolicy\\FirewallRules",
            [
                rule.0: .string(rule.1),
                "CoreNet-DHCP-In": .string(
                    "v2.10|Action=Allow|Active=TRUE|Dir=In|Protocol=17|LPort=68|RPort=67|App=%SystemRoot%\\system32\\svchost.exe|Svc=dhcp|Name=@FirewallAPI.dll,-25301|"
                ),
            ])
    }

    /// Class filters: Windows' defaults plus what the states' tools register
    /// (vmkbd is listed with its service gone: a half-removed Tools install).
    func classFilters() -> [(guid: String, name: String, upper: [String], lower: [String])] {
        let vmware = states.contains(.vmwareTools), xen = states.contains(.xenPV)
        let vbox = states.contains(.virtualBoxAdditions), prl = states.contains(.parallelsTools)
        return [
            (Self.keyboardClass, "Keyboard", (vmware ? ["vmkbd"] : []) + ["kbdclass"], []),
            (Self.mouseClass, "Mouse", (vbox ? ["VBoxMouse"] : []) + ["mouclass"] + (vmware ? ["vmmouse"] : []), []),
            (Self.diskClass, "DiskDrive", ["PartMgr"], prl ? ["prl_strg"] : []),
            (Self.hdcClass, "hdc", xen ? ["XENFILT"] : [], []),
            (Self.systemClass, "System", xen ? ["XENFILT"] : [], []),
            (Self.scsiClass, "SCSIAdapter", [], []),
        ]
    }

    /// What a state leaves in one control set.
    func write(_ state: PhonyState, into h: inout HiveContent, _ cs: String) {
        let svc = "\(cs)\\Services"
        switch state {
        case .vmwareTools:
            h.set("\(svc)\\vmxnet3ndis6", Self.service(3, 1, "System32\\drivers\\vmxnet3.sys", group: "NDIS"))
            h.set("\(svc)\\pvscsi", Self.service(0, 1, "System32\\drivers\\pvscsi.sys", group: "SCSI miniport"))
            h.set("\(svc)\\vmmouse", Self.service(3, 1, "System32\\drivers\\vmmouse.sys", group: "Pointer Port"))
            h.set("\(svc)\\vmhgfs", Self.service(1, 2, "System32\\drivers\\vmhgfs.sys", group: "Network"))
            h.set("\(svc)\\VMTools", Self.service(2, 16, "\"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe\""))
        case .xenPV:
            h.set("\(svc)\\xenbus", Self.service(0, 1, "System32\\drivers\\xenbus.sys", group: "Boot Bus Extender"))
            h.set("\(svc)\\xenfilt", Self.service(0, 1, "System32\\drivers\\xenfilt.sys", group: "Boot Bus Extender"))
            h.set("\(svc)\\xenvbd", Self.service(0, 1, "System32\\drivers\\xenvbd.sys", group: "System Bus Extender"))
            h.set("\(svc)\\xennet", Self.service(3, 1, "System32\\drivers\\xennet.sys", group: "NDIS"))
            h.set("\(svc)\\xenbus_monitor", Self.service(2, 16, "\"C:\\Windows\\system32\\xenbus_monitor.exe\""))
        case .parallelsTools:
            h.set("\(svc)\\prl_strg", Self.service(0, 1, "System32\\drivers\\prl_strg.sys", group: "PnP Filter"))
            h.set("\(svc)\\prl_fs", Self.service(1, 2, "System32\\drivers\\prl_fs.sys"))
            h.set("\(svc)\\prl_mouf", Self.service(3, 1, "System32\\drivers\\prl_mouf.sys"))
        case .virtualBoxAdditions:
            h.set("\(svc)\\VBoxGuest", Self.service(0, 1, "System32\\drivers\\VBoxGuest.sys", group: "Base"))
            h.set("\(svc)\\VBoxMouse", Self.service(3, 1, "System32\\drivers\\VBoxMouse.sys", group: "Pointer Port"))
        case .cloudbaseInitInstalled:
            h.set(
                "\(svc)\\cloudbase-init",
                Self.service(
                    2, 16,
                    "\"C:\\Program Files\\Cloudbase Solutions\\Cloudbase-Init\\Python\\Scripts\\cloudbase-init.exe\" --config-file \"C:\\Program Files\\Cloudbase Solutions\\Cloudbase-Init\\conf\\cloudbase-init.conf\""
                ))
        case .ideDisabled, .deviceInstallRestricted, .rdpEnabled, .noAutoReboot, .adminDisabled, .bootOnOtherDisk,
            .dataPartition, .rssDisabled,
            .staleUefiFallback, .startupScript:
            break  // written with the baseline, in SOFTWARE or as files
        }
    }
}
