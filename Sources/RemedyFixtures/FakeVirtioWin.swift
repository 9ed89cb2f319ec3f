import Foundation

/// A stand-in for the virtio-win driver distribution: the real directory
/// layouts (an unpacked ISO, and the packaged `/usr/share/virtio-win` tree),
/// small fake binaries, and INF files written in the style of the real ones
/// (CRLF, `%token%` strings, decorated models sections, comments, a line
/// continuation) so that INF parsing and driver selection meet realistic input.
///
/// Nothing here is a working driver: `.sys`, `.exe` and `.dll` files are "MZ"
/// followed by text naming the file, driver, OS directory and architecture.
public enum FakeVirtioWin {
    public enum Layout: String, Sendable, CaseIterable { case isoTree, packaged }

    /// OS directory names as virtio-win uses them.
    public static let allOSDirectories: [String] = ["2k8", "2k8R2", "w7", "w8", "2k12", "w8.1", "2k12R2", "w10", "2k16", "2k19", "2k22", "2k25", "w11"]

    /// Driver directory names written (ISO-tree spelling).
    public static let drivers: [String] = ["viostor", "vioscsi", "NetKVM", "Balloon", "vioserial", "viorng", "pvpanic", "fwcfg", "qemufwcfg", "sriov"]

    /// The volume id `makeISO` gives the image.
    public static let volumeID = "virtio-win-0.1.240"

    /// The distribution version recorded in `data/info.json`.
    public static let distributionVersion = "0.1.240"

    /// The tool `makeISO` runs.
    public static let genisoimage = "/usr/bin/genisoimage"

    public enum Failure: Error, CustomStringConvertible, LocalizedError {
        /// `write` was asked for an OS directory virtio-win does not have.
        case unknownOSDirectory(String)
        /// `makeISO` was given a tree that is not a directory.
        case notADirectory(String)
        /// The external tool could not be started, or exited with a failure.
        case toolFailed(tool: String, status: Int32, stderr: String)

        public var description: String {
            switch self {
            case .unknownOSDirectory(let os): "unknown virtio-win OS directory '\(os)'"
            case .notADirectory(let path): "not a directory: \(path)"
            case .toolFailed(let tool, let status, let stderr):
                "\(tool) failed (status \(status)): \(stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
            }
        }

        public var errorDescription: String? { description }
    }

    // MARK: - What exists where

    /// OS directories whose INFs carry a `10.0...<build>` decorated models section,
    /// and where the newer drivers (qemufwcfg, sriov) are shipped.
    static let modernOSDirectories: Set<String> = ["w10", "w11", "2k16", "2k19", "2k22", "2k25"]

    /// Architecture directory names (`amd64`, `x86`) virtio-win ships for an OS directory:
    /// 2k8 and the clients up to w10 have both, 2k8R2 and later servers and w11 are 64-bit only.
    public static func architectures(forOSDirectory os: String) -> [String] {
        switch os {
        case "2k8", "w7", "w8", "w8.1", "w10": ["amd64", "x86"]
        default: ["amd64"]
        }
    }

    /// The OS directories a driver directory has.
    public static func osDirectories(forDriver driver: String) -> [String] {
        switch driver {
        case "qemufwcfg", "sriov": allOSDirectories.filter(modernOSDirectories.contains)
        default: drivers.contains(driver) ? allOSDirectories : []
        }
    }

    /// The architecture directories a driver has for an OS directory (empty when it has none).
    public static func architectures(forDriver driver: String, osDirectory os: String) -> [String] {
        guard osDirectories(forDriver: driver).contains(os) else { return [] }
        let arches = architectures(forOSDirectory: os)
        return driver == "sriov" ? arches.filter { $0 == "amd64" } : arches
    }

    /// The storage-only directory at the ISO root (and under `drivers/by-os`) for an architecture.
    public static func rootArchitectureDirectory(_ arch: String) -> String { arch == "x86" ? "i386" : "amd64" }

    /// The INF base name of a driver directory (`NetKVM` → `netkvm`, `vioserial` → `vioser`, `sriov` → `vioprot`).
    public static func infBaseName(ofDriver driver: String) -> String {
        switch driver {
        case "NetKVM": "netkvm"
        case "Balloon": "balloon"
        case "vioserial": "vioser"
        case "sriov": "vioprot"
        default: driver
        }
    }

    /// netkvmco.exe ships from Windows 8 / Server 2012 on.
    static func hasNetkvmco(_ os: String) -> Bool { !["2k8", "2k8R2", "w7"].contains(os) }

    /// The files of one driver directory for an OS directory.
    public static func files(ofDriver driver: String, osDirectory os: String) -> [String] {
        let b = infBaseName(ofDriver: driver)
        switch driver {
        case "viostor", "vioscsi", "vioserial": return ["\(b).inf", "\(b).sys", "\(b).cat", "\(b).pdb"]
        case "NetKVM": return ["netkvm.inf", "netkvm.sys", "netkvm.cat", "netkvm.pdb"] + (hasNetkvmco(os) ? ["netkvmco.exe"] : [])
        case "Balloon": return ["balloon.inf", "balloon.sys", "balloon.cat", "blnsvr.exe", "balloon.pdb"]
        case "viorng": return ["viorng.inf", "viorng.sys", "viorng.cat", "viorngum.dll"]
        case "pvpanic", "fwcfg", "sriov": return ["\(b).inf", "\(b).sys", "\(b).cat"]
        case "qemufwcfg": return ["qemufwcfg.inf", "qemufwcfg.cat"]
        default: return []
        }
    }

    // MARK: - Writing trees

    /// Writes the tree under `directory` (created if missing). `osDirectories` limits which OS dirs exist
    /// (used by tests to make a virtio-win that lacks some OS).
    /// `driverVersion` goes into every INF's DriverVer (date `driverDate`, MM/DD/YYYY).
    ///
    /// `.isoTree`: `<Driver>/<os>/<arch>/…`, storage-only `amd64|i386/<os>/` (viostor + vioscsi),
    /// `guest-agent/*.msi`, `virtio-win-gt-x64.msi`, `virtio-win-gt-x86.msi`, `virtio-win_license.txt`, `data/info.json`.
    /// `.packaged`: `drivers/by-driver/<Driver>/<os>/<arch>/…`, `drivers/by-os/amd64|i386/<os>/` (every driver's
    /// files of that OS and architecture in one directory) and `guest-agent/*.msi`; no ISO.
    public static func write(at directory: String, layout: Layout, osDirectories: [String] = allOSDirectories,
                             driverVersion: String = "100.94.104.24000", driverDate: String = "09/19/2023") throws {
        for os in osDirectories where !allOSDirectories.contains(os) { throw Failure.unknownOSDirectory(os) }
        let oses = allOSDirectories.filter(osDirectories.contains)
        let root = URL(fileURLWithPath: directory, isDirectory: true)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)

        func writeDriverFiles(_ driver: String, os: String, arch: String, into dir: URL, only: ((String) -> Bool)? = nil) throws {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            for file in files(ofDriver: driver, osDirectory: os) where only?(file) ?? true {
                let data = content(of: file, driver: driver, os: os, arch: arch, version: driverVersion, date: driverDate)
                try data.write(to: dir.appendingPathComponent(file))
            }
        }

        switch layout {
        case .isoTree:
            var entries: [[String: String]] = []
            for driver in drivers {
                for os in oses {
                    for arch in architectures(forDriver: driver, osDirectory: os) {
                        let dir = root.appendingPathComponent(driver).appendingPathComponent(os).appendingPathComponent(arch)
                        try writeDriverFiles(driver, os: os, arch: arch, into: dir)
                        entries.append([
                            "name": infBaseName(ofDriver: driver), "arch": arch, "windows_version": os,
                            "driver_version": driverVersion, "driver_date": driverDate,
                            "inf_path": "\(driver)/\(os)/\(arch)/\(infBaseName(ofDriver: driver)).inf",
                        ])
                    }
                }
            }
            // Storage drivers again at the root, for the Windows installer's "Load driver" dialog.
            for os in oses {
                for arch in architectures(forOSDirectory: os) {
                    let dir = root.appendingPathComponent(rootArchitectureDirectory(arch)).appendingPathComponent(os)
                    try writeDriverFiles("viostor", os: os, arch: arch, into: dir)
                    try writeDriverFiles("vioscsi", os: os, arch: arch, into: dir)
                }
            }
            try writeGuestAgent(root)
            try blob("virtio-win-gt-x64.msi", kind: .msi).write(to: root.appendingPathComponent("virtio-win-gt-x64.msi"))
            try blob("virtio-win-gt-x86.msi", kind: .msi).write(to: root.appendingPathComponent("virtio-win-gt-x86.msi"))
            try Data(licenseText.utf8).write(to: root.appendingPathComponent("virtio-win_license.txt"))
            let info: [String: Any] = ["version": distributionVersion, "drivers": entries]
            let json = try JSONSerialization.data(withJSONObject: info, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            let data = root.appendingPathComponent("data")
            try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
            try json.write(to: data.appendingPathComponent("info.json"))

        case .packaged:
            let base = root.appendingPathComponent("drivers")
            for driver in drivers {
                for os in oses {
                    for arch in architectures(forDriver: driver, osDirectory: os) {
                        let dir = base.appendingPathComponent("by-driver").appendingPathComponent(driver)
                            .appendingPathComponent(os).appendingPathComponent(arch)
                        try writeDriverFiles(driver, os: os, arch: arch, into: dir)
                        let byOS = base.appendingPathComponent("by-os").appendingPathComponent(rootArchitectureDirectory(arch))
                            .appendingPathComponent(os)
                        try writeDriverFiles(driver, os: os, arch: arch, into: byOS)
                    }
                }
            }
            try writeGuestAgent(root)
        }
    }

    static func writeGuestAgent(_ root: URL) throws {
        let ga = root.appendingPathComponent("guest-agent")
        try FileManager.default.createDirectory(at: ga, withIntermediateDirectories: true)
        for name in ["qemu-ga-x86_64.msi", "qemu-ga-i386.msi"] {
            try blob(name, kind: .msi).write(to: ga.appendingPathComponent(name))
        }
    }

    static let licenseText = """
        virtio-win (fake)\r
        \r
        This file stands in for the license file of the virtio-win driver\r
        distribution. It was written by remedy's test fixtures; none of the\r
        files in this tree are real drivers.\r

        """

    // MARK: - ISO

    /// Builds an ISO9660 image (Joliet + Rock Ridge, volume id "virtio-win-0.1.240") from a tree written with
    /// layout .isoTree, with /usr/bin/genisoimage. Throws with the tool's stderr on failure.
    public static func makeISO(from tree: String, to iso: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: tree, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw Failure.notADirectory(tree)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: genisoimage)
        process.arguments = ["-quiet", "-J", "-R", "-V", volumeID, "-o", iso, tree]
        let stderr = Pipe()
        process.standardError = stderr
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw Failure.toolFailed(tool: genisoimage, status: -1, stderr: "\(error)")
        }
        let message = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw Failure.toolFailed(tool: genisoimage, status: process.terminationStatus,
                                     stderr: String(decoding: message, as: UTF8.self))
        }
    }

    // MARK: - File contents

    enum BlobKind { case pe, catalog, pdb, msi }

    static func content(of file: String, driver: String, os: String, arch: String, version: String, date: String) -> Data {
        let ext = (file as NSString).pathExtension.lowercased()
        let what = "\(file) of \(driver) for \(os)/\(arch), version \(version)"
        switch ext {
        case "inf": return Data(inf(infBaseName(ofDriver: driver), arch: arch, osDirectory: os,
                                    driverVersion: version, driverDate: date).utf8)
        case "sys", "exe", "dll": return blob(what, kind: .pe)
        case "cat": return blob(what, kind: .catalog)
        case "pdb": return blob(what, kind: .pdb)
        default: return blob(what, kind: .msi)
        }
    }

    /// A few hundred deterministic bytes: a format-looking prefix, a line of text naming the file, then filler.
    static func blob(_ what: String, kind: BlobKind) -> Data {
        let text = Array("remedy fake virtio-win file: \(what). Not a real driver.\r\n".utf8)
        var bytes: [UInt8]
        switch kind {
        case .pe:
            bytes = Array("MZ".utf8) + [0x90, 0x00, 0x03, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00]
        case .catalog:
            // A DER SEQUENCE holding the PKCS #7 signedData object identifier, as catalogs begin.
            bytes = [0x30, 0x82, 0x00, 0x00, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02]
        case .pdb:
            bytes = Array("Microsoft C/C++ MSF 7.00\r\n".utf8) + [0x1A, 0x44, 0x53, 0x00, 0x00, 0x00]
        case .msi:
            bytes = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1] + [UInt8](repeating: 0, count: 16)
        }
        bytes += text
        let size = max(384, (bytes.count + 63) / 64 * 64 + 64)
        var h: UInt32 = 2_166_136_261 // FNV-1a of the text seeds the filler
        for b in text { h = (h ^ UInt32(b)) &* 16_777_619 }
        while bytes.count < size {
            h ^= h << 13; h ^= h >> 17; h ^= h << 5
            bytes.append(UInt8(truncatingIfNeeded: h))
        }
        if kind == .catalog {
            let n = bytes.count - 4
            bytes[2] = UInt8(n >> 8); bytes[3] = UInt8(n & 0xFF)
        }
        return Data(bytes)
    }

    // MARK: - INF text

    /// The INF text of one driver for one OS dir and arch (exposed so unit tests can parse it without touching disk).
    /// `driver` is the INF base name: viostor, vioscsi, netkvm, balloon, vioser, viorng, pvpanic, fwcfg, qemufwcfg
    /// (also vioprot; driver directory spellings such as NetKVM, vioserial and sriov are accepted too).
    /// `arch` is `amd64` or `x86` (`i386`, `x64` and `x86_64` are accepted).
    public static func inf(_ driver: String, arch: String, osDirectory: String, driverVersion: String = "100.94.104.24000",
                           driverDate: String = "09/19/2023") -> String {
        let a: String = switch arch.lowercased() {
        case "x86", "i386", "i686": "x86"
        default: "amd64"
        }
        let t = Target(os: osDirectory, arch: a, version: driverVersion, date: driverDate)
        let text: String
        switch driver.lowercased() {
        case "viostor": text = viostorINF(t)
        case "vioscsi": text = vioscsiINF(t)
        case "netkvm": text = netkvmINF(t)
        case "balloon": text = kmdfINF(.balloon, t)
        case "vioser", "vioserial": text = kmdfINF(.vioser, t)
        case "viorng": text = kmdfINF(.viorng, t)
        case "pvpanic": text = kmdfINF(.pvpanic, t)
        case "fwcfg": text = kmdfINF(.fwcfg, t)
        case "qemufwcfg": text = qemufwcfgINF(t)
        case "vioprot", "sriov": text = vioprotINF(t)
        default: preconditionFailure("FakeVirtioWin.inf: unknown driver '\(driver)'")
        }
        return crlf(text)
    }

    struct Target {
        var os: String, arch: String, version: String, date: String

        /// `NTamd64` / `NTx86`, with a minimum build for the Windows 10 era directories
        /// (Server 2016 is build 14393, so its directory targets 14393; the others 16299).
        var decoration: String {
            let base = arch == "x86" ? "NTx86" : "NTamd64"
            switch os {
            case "2k16": return base + ".10.0...14393"
            case _ where modernOSDirectories.contains(os): return base + ".10.0...16299"
            default: return base
            }
        }

        var kmdfVersion: String {
            switch os {
            case "2k8", "2k8R2", "w7": "1.9"
            case "w8", "2k12": "1.11"
            case "w8.1", "2k12R2": "1.13"
            default: "1.15"
            }
        }
    }

    /// Marks a template line to leave out.
    static let drop = "\u{1}drop\u{1}"

    /// LF template → CRLF INF, without dropped lines, ending in CRLF.
    static func crlf(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { $0 != drop[...] }
            .joined(separator: "\r\n")
            .trimmingCharacters(in: .newlines) + "\r\n"
    }

    static func header(_ file: String, _ what: String, _ t: Target) -> String {
        #"""
        ;-------------------------------------------------------------------------------
        ; \#(file)
        ;
        ; \#(what)
        ;
        ; Fake virtio-win driver package written by remedy's test fixtures. The
        ; binaries it names are placeholders, not drivers.
        ;
        ; OS directory: \#(t.os)    Architecture: \#(t.arch)
        ;-------------------------------------------------------------------------------
        """#
    }

    // MARK: viostor

    static func viostorINF(_ t: Target) -> String {
        let d = t.decoration
        return #"""
        \#(header("viostor.inf", "VirtIO block device: Storport miniport driver.", t))

        [Version]
        Signature               = "$WINDOWS NT$"
        Class                   = SCSIAdapter
        ClassGuid               = {4D36E97B-E325-11CE-BFC1-08002BE10318}
        Provider                = %VENDOR%
        DriverVer               = \#(t.date),\#(t.version)
        CatalogFile             = viostor.cat
        DriverPackageType       = PlugAndPlay
        DriverPackageDisplayName = %RHELScsi.DeviceDesc%
        PnpLockdown             = 1

        ;
        ; Source media and destination
        ;
        [DestinationDirs]
        DefaultDestDir = 12             ; drivers directory

        [SourceDisksNames]
        1 = %DiskId1%,,,""

        [SourceDisksFiles]
        viostor.sys = 1,,

        [ControlFlags]
        ExcludeFromSelect = *

        ;
        ; Models
        ;
        [Manufacturer]
        %VENDOR% = VirtioStor,\#(d)

        [VirtioStor.\#(d)]
        %RHELScsi.DeviceDesc% = rhelscsi_inst, PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00
        %RHELScsi.DeviceDesc% = rhelscsi_inst, PCI\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01

        ;
        ; Install
        ;
        [rhelscsi_inst]
        CopyFiles = @viostor.sys

        [rhelscsi_inst.HW]
        AddReg = rhelscsi_msi_addreg

        [rhelscsi_inst.Services]
        AddService = viostor, 0x00000002, rhelscsi_Service_Inst, rhelscsi_EventLog_Inst

        [rhelscsi_Service_Inst]
        DisplayName    = %RHELScsi.DeviceDesc%
        ServiceType    = %SERVICE_KERNEL_DRIVER%
        StartType      = %SERVICE_BOOT_START%      ; the system disk sits behind it
        ErrorControl   = %SERVICE_ERROR_NORMAL%
        ServiceBinary  = %12%\viostor.sys
        LoadOrderGroup = SCSI miniport
        AddReg         = rhelscsi_pnpsafe_pci_addreg

        [rhelscsi_pnpsafe_pci_addreg]
        HKR, "Parameters\PnpInterface", "5", %REG_DWORD%, 0x00000001
        HKR, "Parameters", "BusType", %REG_DWORD%, 0x00000001

        [rhelscsi_msi_addreg]
        HKR, "Interrupt Management", 0x00000010
        HKR, "Interrupt Management\MessageSignaledInterruptProperties", 0x00000010
        HKR, "Interrupt Management\MessageSignaledInterruptProperties", MSISupported, %REG_DWORD%, 1
        HKR, "Interrupt Management\MessageSignaledInterruptProperties", MessageNumberLimit, \
             %REG_DWORD%, 257
        HKR, "Interrupt Management\Affinity Policy", 0x00000010
        HKR, "Interrupt Management\Affinity Policy", DevicePolicy, %REG_DWORD%, 5   ; spread messages over all processors

        [rhelscsi_EventLog_Inst]
        AddReg = rhelscsi_EventLog_AddReg

        [rhelscsi_EventLog_AddReg]
        HKR,,EventMessageFile,%REG_EXPAND_SZ%,"%%SystemRoot%%\System32\IoLogMsg.dll"
        HKR,,TypesSupported,%REG_DWORD%,7

        [Strings]
        ;
        ; Localizable strings
        ;
        VENDOR              = "Red Hat, Inc."
        DiskId1             = "Red Hat VirtIO SCSI controller Installation Disk #1"
        RHELScsi.DeviceDesc = "Red Hat VirtIO SCSI controller"

        ;
        ; Non-localizable strings
        ;
        SERVICE_KERNEL_DRIVER = 1
        SERVICE_BOOT_START    = 0
        SERVICE_ERROR_NORMAL  = 1
        REG_EXPAND_SZ         = 0x00020000
        REG_DWORD             = 0x00010001
        """#
    }

    // MARK: vioscsi

    static func vioscsiINF(_ t: Target) -> String {
        let d = t.decoration
        return #"""
        \#(header("vioscsi.inf", "VirtIO SCSI host adapter: Storport miniport driver.", t))

        [Version]
        Signature         = "$WINDOWS NT$"
        Class             = SCSIAdapter
        ClassGuid         = {4D36E97B-E325-11CE-BFC1-08002BE10318}
        Provider          = %VENDOR%
        DriverVer         = \#(t.date),\#(t.version)
        CatalogFile       = vioscsi.cat
        DriverPackageType = PlugAndPlay
        PnpLockdown       = 1

        [DestinationDirs]
        DefaultDestDir = 12

        [SourceDisksNames]
        1 = %DiskId1%,,,""

        [SourceDisksFiles]
        vioscsi.sys = 1,,

        [ControlFlags]
        ExcludeFromSelect = *

        [Manufacturer]
        %VENDOR% = VioScsi,\#(d)

        [VioScsi.\#(d)]
        %VioScsi.DeviceDesc% = scsi_inst, PCI\VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00
        %VioScsi.DeviceDesc% = scsi_inst, PCI\VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01

        [scsi_inst]
        CopyFiles = scsi_files

        [scsi_files]
        vioscsi.sys,,,2                 ; COPYFLG_NOSKIP

        [scsi_inst.HW]
        AddReg = scsi_msi_addreg

        [scsi_inst.Services]
        AddService = vioscsi, 0x00000002, scsi_Service_Inst, scsi_EventLog_Inst

        [scsi_Service_Inst]
        DisplayName    = %VioScsi.DeviceDesc%
        ServiceType    = 1              ; SERVICE_KERNEL_DRIVER
        StartType      = 0              ; SERVICE_BOOT_START
        ErrorControl   = 1              ; SERVICE_ERROR_NORMAL
        ServiceBinary  = %12%\vioscsi.sys
        LoadOrderGroup = "SCSI miniport"
        AddReg         = scsi_pnpsafe_pci_addreg

        [scsi_pnpsafe_pci_addreg]
        HKR, "Parameters\PnpInterface", "5", 0x00010001, 0x00000001
        HKR, "Parameters", "BusType", 0x00010001, 0x0000000A      ; BusTypeSas

        [scsi_msi_addreg]
        HKR, "Interrupt Management", 0x00000010
        HKR, "Interrupt Management\MessageSignaledInterruptProperties", 0x00000010
        HKR, "Interrupt Management\MessageSignaledInterruptProperties", MSISupported, \
             0x00010001, 1
        HKR, "Interrupt Management\MessageSignaledInterruptProperties", MessageNumberLimit, 0x00010001, 257

        [scsi_EventLog_Inst]
        AddReg = scsi_EventLog_AddReg

        [scsi_EventLog_AddReg]
        HKR, , EventMessageFile, 0x00020000, "%%SystemRoot%%\System32\IoLogMsg.dll"
        HKR, , TypesSupported,   0x00010001, 7

        [Strings]
        VENDOR             = "Red Hat, Inc."
        DiskId1            = "Red Hat VirtIO SCSI pass-through controller Installation Disk #1"
        VioScsi.DeviceDesc = "Red Hat VirtIO SCSI pass-through controller"
        """#
    }

    // MARK: netkvm

    static func netkvmINF(_ t: Target) -> String {
        let d = t.decoration
        let co = hasNetkvmco(t.os)
        return #"""
        \#(header("netkvm.inf", "VirtIO network adapter: NDIS miniport driver.", t))

        [Version]
        Signature         = "$WINDOWS NT$"
        Class             = Net
        ClassGuid         = {4D36E972-E325-11CE-BFC1-08002BE10318}
        Provider          = %VENDOR%
        DriverVer         = \#(t.date),\#(t.version)
        CatalogFile       = netkvm.cat
        DriverPackageType = PlugAndPlay
        DriverPackageDisplayName = %kvmnet6.DeviceDesc%
        PnpLockdown       = 1

        [DestinationDirs]
        DefaultDestDir         = 12
        \#(co ? "kvmnet6.CopyFiles.Tool = 11      ; System32" : drop)

        [SourceDisksNames]
        1 = %DiskId1%,,,""

        [SourceDisksFiles]
        netkvm.sys   = 1,,
        \#(co ? "netkvmco.exe = 1,," : drop)

        [Manufacturer]
        %VENDOR% = NetKVM,\#(d)

        [NetKVM.\#(d)]
        %kvmnet6.DeviceDesc% = kvmnet6.ndi, PCI\VEN_1AF4&DEV_1000&SUBSYS_00011AF4&REV_00
        %kvmnet6.DeviceDesc% = kvmnet6.ndi, PCI\VEN_1AF4&DEV_1041&SUBSYS_11001AF4&REV_01

        [kvmnet6.ndi]
        Characteristics     = 0x84      ; NCF_PHYSICAL | NCF_HAS_UI
        BusType             = 5         ; PCIBus
        *IfType             = 6         ; IF_TYPE_ETHERNET_CSMACD
        *MediaType          = 0         ; NdisMedium802_3
        *PhysicalMediaType  = 0         ; NdisPhysicalMediumUnspecified
        *IfConnectorPresent = 1
        *ConnectionType     = 1
        *DirectionType      = 0
        *AccessType         = 2
        *HardwareLoopback   = 0
        AddReg              = kvmnet6.Reg, kvmnet6.Params.RSS, kvmnet6.Params.Offload
        CopyFiles           = kvmnet6.CopyFiles.Sys\#(co ? ", kvmnet6.CopyFiles.Tool" : "")

        [kvmnet6.ndi.HW]
        AddReg = kvmnet6.EnableMSI

        [kvmnet6.EnableMSI]
        HKR, "Interrupt Management", 0x00000010
        HKR, "Interrupt Management\MessageSignaledInterruptProperties", 0x00000010
        HKR, "Interrupt Management\MessageSignaledInterruptProperties", MSISupported, 0x00010001, 1
        HKR, "Interrupt Management\MessageSignaledInterruptProperties", MessageNumberLimit, 0x00010001, 2048

        [kvmnet6.Reg]
        HKR, Ndi,            Service,    0, "netkvm"
        HKR, Ndi\Interfaces, UpperRange, 0, "ndis5"
        HKR, Ndi\Interfaces, LowerRange, 0, "ethernet"

        [kvmnet6.Params.RSS]
        HKR, Ndi\params\*RSS,          ParamDesc, 0, %RSS%
        HKR, Ndi\params\*RSS,          Type,      0, "enum"
        HKR, Ndi\params\*RSS,          Default,   0, "1"
        HKR, Ndi\params\*RSS\enum,     "0",       0, %Disable%
        HKR, Ndi\params\*RSS\enum,     "1",       0, %Enable%
        HKR, Ndi\params\*NumRssQueues, ParamDesc, 0, %NumRssQueues%
        HKR, Ndi\params\*NumRssQueues, Type,      0, "int"
        HKR, Ndi\params\*NumRssQueues, Default,   0, "16"
        HKR, Ndi\params\*NumRssQueues, Min,       0, "1"
        HKR, Ndi\params\*NumRssQueues, Max,       0, "16"
        HKR, Ndi\params\*NumRssQueues, Step,      0, "1"

        [kvmnet6.Params.Offload]
        HKR, Ndi\params\*TCPChecksumOffloadIPv4,      ParamDesc, 0, %TCPChecksumOffloadIPv4%
        HKR, Ndi\params\*TCPChecksumOffloadIPv4,      Type,      0, "enum"
        HKR, Ndi\params\*TCPChecksumOffloadIPv4,      Default,   0, "3"
        HKR, Ndi\params\*TCPChecksumOffloadIPv4\enum, "0",       0, %Disable%
        HKR, Ndi\params\*TCPChecksumOffloadIPv4\enum, "1",       0, %TxEnabled%
        HKR, Ndi\params\*TCPChecksumOffloadIPv4\enum, "2",       0, %RxEnabled%
        HKR, Ndi\params\*TCPChecksumOffloadIPv4\enum, "3",       0, %TxRxEnabled%
        HKR, Ndi\params\*LsoV2IPv4,                   ParamDesc, 0, \
             %LsoV2IPv4%
        HKR, Ndi\params\*LsoV2IPv4,                   Type,      0, "enum"
        HKR, Ndi\params\*LsoV2IPv4,                   Default,   0, "1"
        HKR, Ndi\params\*LsoV2IPv4\enum,              "0",       0, %Disable%
        HKR, Ndi\params\*LsoV2IPv4\enum,              "1",       0, %Enable%
        HKR, Ndi\params\MTU,                          ParamDesc, 0, %MTU%
        HKR, Ndi\params\MTU,                          Type,      0, "long"
        HKR, Ndi\params\MTU,                          Default,   0, "1500"
        HKR, Ndi\params\MTU,                          Min,       0, "576"
        HKR, Ndi\params\MTU,                          Max,       0, "65500"
        HKR, Ndi\params\MTU,                          Step,      0, "1"

        [kvmnet6.CopyFiles.Sys]
        netkvm.sys,,,2
        \#(co ? "\n[kvmnet6.CopyFiles.Tool]\nnetkvmco.exe,,,2" : drop)

        [kvmnet6.ndi.Services]
        AddService = netkvm, 0x00000002, kvmnet6.Service, kvmnet6.EventLog

        [kvmnet6.Service]
        DisplayName    = %kvmnet6.Service.DispName%
        ServiceType    = 1              ; %SERVICE_KERNEL_DRIVER%
        StartType      = 3              ; %SERVICE_DEMAND_START%
        ErrorControl   = 1              ; %SERVICE_ERROR_NORMAL%
        ServiceBinary  = %12%\netkvm.sys
        LoadOrderGroup = NDIS
        AddReg         = TextModeFlags.Reg

        [TextModeFlags.Reg]
        HKR, , TextModeFlags, 0x00010001, 0x0001

        [kvmnet6.EventLog]
        AddReg = kvmnet6.AddEventLog.Reg

        [kvmnet6.AddEventLog.Reg]
        HKR, , EventMessageFile, 0x00020000, "%%SystemRoot%%\System32\netevent.dll"
        HKR, , TypesSupported,   0x00010001, 7

        [Strings]
        VENDOR                   = "Red Hat, Inc."
        DiskId1                  = "Red Hat VirtIO Ethernet Adapter Driver Disk #1"
        kvmnet6.DeviceDesc       = "Red Hat VirtIO Ethernet Adapter"
        kvmnet6.Service.DispName = "Red Hat VirtIO Ethernet Adapter Service"
        RSS                      = "Receive Side Scaling"
        NumRssQueues             = "Maximum Number of RSS Queues"
        TCPChecksumOffloadIPv4   = "TCP Checksum Offload (IPv4)"
        LsoV2IPv4                = "Large Send Offload V2 (IPv4)"
        MTU                      = "MTU Size"
        Disable                  = "Disabled"
        Enable                   = "Enabled"
        TxEnabled                = "Tx Enabled"
        RxEnabled                = "Rx Enabled"
        TxRxEnabled              = "Rx & Tx Enabled"
        """#
    }

    // MARK: KMDF function drivers (balloon, vioser, viorng, pvpanic, fwcfg)

    struct KMDF {
        var file: String, what: String
        var prefix: String, service: String, models: String
        var hardwareIDs: [String]
        var deviceDesc: String, serviceDesc: String
        var msi: Bool
        /// Extra binaries copied to System32 (DestinationDirs 11).
        var tools: [String] = []
        var extraInstall: [String] = []
        var extraSections: String = ""
        var extraStrings: [String] = []

        static let balloon = KMDF(
            file: "balloon", what: "VirtIO memory balloon driver.", prefix: "BALLOON", service: "BALLOON", models: "Standard",
            hardwareIDs: [#"PCI\VEN_1AF4&DEV_1002&SUBSYS_00051AF4&REV_00"#, #"PCI\VEN_1AF4&DEV_1045&SUBSYS_11001AF4&REV_01"#],
            deviceDesc: "VirtIO Balloon Driver", serviceDesc: "VirtIO Balloon Service", msi: true, tools: ["blnsvr.exe"])

        static let vioser = KMDF(
            file: "vioser", what: "VirtIO serial (console and channel) driver.", prefix: "VirtioSerial", service: "VirtioSerial",
            models: "VirtioSerial",
            hardwareIDs: [#"PCI\VEN_1AF4&DEV_1003&SUBSYS_00031AF4&REV_00"#, #"PCI\VEN_1AF4&DEV_1043&SUBSYS_11001AF4&REV_01"#],
            deviceDesc: "VirtIO Serial Driver", serviceDesc: "VirtIO Serial Service", msi: true)

        static let viorng = KMDF(
            file: "viorng", what: "VirtIO entropy source driver, with its CNG provider.", prefix: "VirtRng", service: "VirtRng",
            models: "Standard",
            hardwareIDs: [#"PCI\VEN_1AF4&DEV_1005&SUBSYS_00041AF4&REV_00"#, #"PCI\VEN_1AF4&DEV_1044&SUBSYS_11001AF4&REV_01"#],
            deviceDesc: "VirtIO RNG Device", serviceDesc: "VirtIO RNG Service", msi: true, tools: ["viorngum.dll"],
            extraInstall: ["RegisterDlls = VirtRng_RegisterDlls"],
            extraSections: """
                [VirtRng_RegisterDlls]
                11,,viorngum.dll,1              ; register the CNG provider
                """,
            extraStrings: [#"VirtRng.ProviderName = "VirtIO RNG Provider""#])

        static let pvpanic = KMDF(
            file: "pvpanic", what: "QEMU pvpanic device driver.", prefix: "PVPanic", service: "pvpanic", models: "Standard",
            hardwareIDs: [#"ACPI\QEMU0001"#],
            deviceDesc: "QEMU PVPanic Device", serviceDesc: "QEMU PVPanic Service", msi: false)

        static let fwcfg = KMDF(
            file: "fwcfg", what: "QEMU firmware configuration device driver.", prefix: "FwCfg", service: "FwCfg", models: "Standard",
            hardwareIDs: [#"ACPI\VEN_QEMU&DEV_0002"#, #"ACPI\QEMU0002"#],
            deviceDesc: "QEMU FwCfg Device", serviceDesc: "QEMU FwCfg Service", msi: false)
    }

    static func kmdfINF(_ k: KMDF, _ t: Target) -> String {
        let d = t.decoration, p = k.prefix
        let models = k.hardwareIDs.map { "%\(p).DeviceDesc% = \(p)_Device, \($0)" }.joined(separator: "\n")
        let copyFiles = ["\(p)_Driver_Files"] + (k.tools.isEmpty ? [] : ["\(p)_Tool_Files"])
        let msi = k.msi ? #"""

            [\#(p)_Device.NT.HW]
            AddReg = \#(p)_Device.NT.HW.AddReg

            [\#(p)_Device.NT.HW.AddReg]
            HKR, "Interrupt Management", 0x00000010
            HKR, "Interrupt Management\MessageSignaledInterruptProperties", 0x00000010
            HKR, "Interrupt Management\MessageSignaledInterruptProperties", MSISupported, %REG_DWORD%, 1
            """# : drop
        return #"""
        \#(header("\(k.file).inf", k.what, t))

        [Version]
        Signature         = "$WINDOWS NT$"
        Class             = System
        ClassGuid         = {4D36E97D-E325-11CE-BFC1-08002BE10318}
        Provider          = %VENDOR%
        DriverVer         = \#(t.date),\#(t.version)
        CatalogFile       = \#(k.file).cat
        DriverPackageType = PlugAndPlay
        DriverPackageDisplayName = %\#(p).DeviceDesc%
        PnpLockdown       = 1

        [DestinationDirs]
        DefaultDestDir = 12
        \#(k.tools.isEmpty ? drop : "\(p)_Tool_Files = 11      ; System32")

        [SourceDisksNames]
        1 = %DiskName%,,,""

        [SourceDisksFiles]
        \#(([k.file + ".sys"] + k.tools).map { "\($0) = 1,," }.joined(separator: "\n"))

        [Manufacturer]
        %VENDOR% = \#(k.models),\#(d)

        [\#(k.models).\#(d)]
        \#(models)

        [\#(p)_Device.NT]
        CopyFiles = \#(copyFiles.joined(separator: ", "))
        \#(k.extraInstall.isEmpty ? drop : k.extraInstall.joined(separator: "\n"))

        [\#(p)_Driver_Files]
        \#(k.file).sys
        \#(k.tools.isEmpty ? drop : "\n[\(p)_Tool_Files]\n" + k.tools.joined(separator: "\n"))
        \#(k.extraSections.isEmpty ? drop : "\n" + k.extraSections)
        \#(msi)

        [\#(p)_Device.NT.Services]
        AddService = \#(k.service), %SPSVCINST_ASSOCSERVICE%, \#(p)_Service_Inst, \#(p)_EventLog_Inst

        [\#(p)_Service_Inst]
        DisplayName    = %\#(p).SVCDESC%
        ServiceType    = %SERVICE_KERNEL_DRIVER%
        StartType      = %SERVICE_DEMAND_START%
        ErrorControl   = %SERVICE_ERROR_NORMAL%
        ServiceBinary  = %12%\\#(k.file).sys
        LoadOrderGroup = Extended Base

        [\#(p)_EventLog_Inst]
        AddReg = \#(p)_EventLog_AddReg

        [\#(p)_EventLog_AddReg]
        HKR, , EventMessageFile, %REG_EXPAND_SZ%, \
             "%%SystemRoot%%\System32\IoLogMsg.dll;%%SystemRoot%%\System32\drivers\\#(k.file).sys"
        HKR, , TypesSupported, %REG_DWORD%, 7

        ;
        ; Kernel-mode driver framework
        ;
        [\#(p)_Device.NT.Wdf]
        KmdfService = \#(k.service), \#(p)_wdfsect

        [\#(p)_wdfsect]
        KmdfLibraryVersion = \#(t.kmdfVersion)

        [Strings]
        VENDOR             = "Red Hat, Inc."
        DiskName           = "\#(k.deviceDesc) Installation Disk"
        \#(p).DeviceDesc = "\#(k.deviceDesc)"
        \#(p).SVCDESC    = "\#(k.serviceDesc)"
        \#(k.extraStrings.isEmpty ? drop : k.extraStrings.joined(separator: "\n"))

        SPSVCINST_ASSOCSERVICE = 0x00000002
        SERVICE_KERNEL_DRIVER  = 1
        SERVICE_DEMAND_START   = 3
        SERVICE_ERROR_NORMAL   = 1
        REG_EXPAND_SZ          = 0x00020000
        REG_DWORD              = 0x00010001
        """#
    }

    // MARK: qemufwcfg (null driver)

    static func qemufwcfgINF(_ t: Target) -> String {
        let d = t.decoration
        return #"""
        \#(header("qemufwcfg.inf", "QEMU firmware configuration device: null driver, only names the device.", t))

        [Version]
        Signature         = "$WINDOWS NT$"
        Class             = System
        ClassGuid         = {4D36E97D-E325-11CE-BFC1-08002BE10318}
        Provider          = %VENDOR%
        DriverVer         = \#(t.date),\#(t.version)
        CatalogFile       = qemufwcfg.cat
        DriverPackageType = PlugAndPlay
        PnpLockdown       = 1

        [DestinationDirs]
        DefaultDestDir = 12

        [SourceDisksNames]
        1 = %DiskName%,,,""

        [SourceDisksFiles]
        ; no binaries: the device runs without a function driver

        [Manufacturer]
        %VENDOR% = Standard,\#(d)

        [Standard.\#(d)]
        %QemuFwCfg.DeviceDesc% = QemuFwCfg_Device, ACPI\VEN_QEMU&DEV_0002
        %QemuFwCfg.DeviceDesc% = QemuFwCfg_Device, ACPI\QEMU0002

        [QemuFwCfg_Device.NT]
        ; nothing to copy

        [QemuFwCfg_Device.NT.Services]
        AddService = ,2                 ; null service (SPSVCINST_ASSOCSERVICE, no driver)

        [Strings]
        VENDOR               = "Red Hat, Inc."
        DiskName             = "QEMU FwCfg Installation Disk"
        QemuFwCfg.DeviceDesc = "QEMU FWCfg Device"
        """#
    }

    // MARK: vioprot (sriov)

    static func vioprotINF(_ t: Target) -> String {
        let d = t.decoration
        return #"""
        \#(header("vioprot.inf", "VirtIO network protocol driver: pairs a VirtIO adapter with its SR-IOV virtual function.", t))

        [Version]
        Signature         = "$WINDOWS NT$"
        Class             = NetTrans
        ClassGuid         = {4D36E975-E325-11CE-BFC1-08002BE10318}
        Provider          = %VENDOR%
        DriverVer         = \#(t.date),\#(t.version)
        CatalogFile       = vioprot.cat
        DriverPackageType = Network
        PnpLockdown       = 1

        [DestinationDirs]
        DefaultDestDir = 12

        [SourceDisksNames]
        1 = %DiskName%,,,""

        [SourceDisksFiles]
        vioprot.sys = 1,,

        [Manufacturer]
        %VENDOR% = Standard,\#(d)

        [Standard.\#(d)]
        %VioProt.DeviceDesc% = VioProt_Install, VIOPROT

        [VioProt_Install]
        Characteristics  = 0x0
        NetCfgInstanceId = "{8F2C3B71-6A0D-4E55-9C1B-2D7E4A9F0C36}"
        CopyFiles        = VioProt_CopyFiles
        AddReg           = VioProt_Ndi

        [VioProt_CopyFiles]
        vioprot.sys,,,2

        [VioProt_Ndi]
        HKR, Ndi,            Service,    0, "VioProt"
        HKR, Ndi,            HelpText,   0, %VioProt.HelpText%
        HKR, Ndi\Interfaces, UpperRange, 0, "noupper"
        HKR, Ndi\Interfaces, LowerRange, 0, \
             "ndis5,ethernet"

        [VioProt_Install.Services]
        AddService = VioProt, 0x00000000, VioProt_Service_Inst, VioProt_EventLog_Inst

        [VioProt_Service_Inst]
        DisplayName    = %VioProt.Service.DispName%
        ServiceType    = 1              ; SERVICE_KERNEL_DRIVER
        StartType      = 3              ; SERVICE_DEMAND_START
        ErrorControl   = 1              ; SERVICE_ERROR_NORMAL
        ServiceBinary  = %12%\vioprot.sys
        LoadOrderGroup = PNP_TDI
        Description    = %VioProt.HelpText%

        [VioProt_EventLog_Inst]
        AddReg = VioProt_EventLog_AddReg

        [VioProt_EventLog_AddReg]
        HKR, , EventMessageFile, 0x00020000, "%%SystemRoot%%\System32\netevent.dll"
        HKR, , TypesSupported,   0x00010001, 7

        [Strings]
        VENDOR                   = "Red Hat, Inc."
        DiskName                 = "VirtIO Protocol Driver Installation Disk"
        VioProt.DeviceDesc       = "VirtIO protocol"
        VioProt.Service.DispName = "VirtIO Protocol Service"
        VioProt.HelpText         = "Teams a VirtIO network adapter with its SR-IOV virtual function."
        """#
    }
}
