import Foundation
import Synchronization
import SystemPackage

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
    public static let allOSDirectories: [String] = [
        "2k8", "2k8R2", "w7", "w8", "2k12", "w8.1", "2k12R2", "w10", "2k16", "2k19", "2k22", "2k25", "w11",
    ]

    /// Driver directory names written (ISO-tree spelling).
    public static let drivers: [String] = [
        "viostor", "vioscsi", "NetKVM", "Balloon", "vioserial", "viorng", "pvpanic", "fwcfg", "qemufwcfg", "sriov",
    ]

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
        case "NetKVM":
            return ["netkvm.inf", "netkvm.sys", "netkvm.cat", "netkvm.pdb", "netkvmp.exe"]
                + (hasNetkvmco(os) ? ["netkvmco.exe"] : [])
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
    public static func write(
        at directory: String, layout: Layout, osDirectories: [String] = allOSDirectories,
        driverVersion: String = "100.94.104.24000", driverDate: String = "09/19/2023"
    ) throws {
        for os in osDirectories where !allOSDirectories.contains(os) { throw Failure.unknownOSDirectory(os) }
        let oses = allOSDirectories.filter(osDirectories.contains)
        let root = URL(fileURLWithPath: directory, isDirectory: true)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)

        func writeDriverFiles(
            _ driver: String, os: String, arch: String, into dir: URL, only: ((String) -> Bool)? = nil
        ) throws {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            for file in files(ofDriver: driver, osDirectory: os) where only?(file) ?? true {
                let data = content(
                    of: file, driver: driver, os: os, arch: arch, version: driverVersion, date: driverDate)
                try data.write(to: dir.appendingPathComponent(file))
            }
        }

        switch layout {
        case .isoTree:
            var entries: [[String: String]] = []
            for driver in drivers {
                for os in oses {
                    for arch in architectures(forDriver: driver, osDirectory: os) {
                        let dir = root.appendingPathComponent(driver).appendingPathComponent(os).appendingPathComponent(
                            arch)
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
            try blob("virtio-win-gt-x64.msi", kind: .msi).write(
                to: root.appendingPathComponent("virtio-win-gt-x64.msi"))
            try blob("virtio-win-gt-x86.msi", kind: .msi).write(
                to: root.appendingPathComponent("virtio-win-gt-x86.msi"))
            try Data(licenseText.utf8).write(to: root.appendingPathComponent("virtio-win_license.txt"))
            let info: [String: Any] = ["version": distributionVersion, "drivers": entries]
            let json = try JSONSerialization.data(
                withJSONObject: info, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
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
                        let byOS = base.appendingPathComponent("by-os").appendingPathComponent(
                            rootArchitectureDirectory(arch)
                        )
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
            throw Failure.toolFailed(
                tool: genisoimage, status: process.terminationStatus,
                stderr: String(decoding: message, as: UTF8.self))
        }
    }

    // MARK: - File contents

    enum BlobKind { case pe, catalog, pdb, msi }

    static func content(
        of file: String, driver: String, os: String, arch: String, version: String, date: String
    ) -> Data {
        let ext = (FilePath(file).extension ?? "").lowercased()
        let what = "\(file) of \(driver) for \(os)/\(arch), version \(version)"
        switch ext {
        case "inf":
            return Data(
                inf(
                    infBaseName(ofDriver: driver), arch: arch, osDirectory: os,
                    driverVersion: version, driverDate: date
                ).utf8)
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
            bytes =
                Array("MZ".utf8) + [0x90, 0x00, 0x03, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00]
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
        var h: UInt32 = 2_166_136_261  // FNV-1a of the text seeds the filler
        for b in text { h = (h ^ UInt32(b)) &* 16_777_619 }
        while bytes.count < size {
            h ^= h << 13
            h ^= h >> 17
            h ^= h << 5
            bytes.append(UInt8(truncatingIfNeeded: h))
        }
        if kind == .catalog {
            let n = bytes.count - 4
            bytes[2] = UInt8(n >> 8)
            bytes[3] = UInt8(n & 0xFF)
        }
        return Data(bytes)
    }

    // MARK: - INF text

    /// The INF text of one driver for one OS dir and arch (exposed so unit tests can parse it without touching disk).
    /// `driver` is the INF base name: viostor, vioscsi, netkvm, balloon, vioser, viorng, pvpanic, fwcfg, qemufwcfg
    /// (also vioprot; driver directory spellings such as NetKVM, vioserial and sriov are accepted too).
    /// `arch` is `amd64` or `x86` (`i386`, `x64` and `x86_64` are accepted).
    ///
    /// Every driver but vioprot is the **real** INF of virtio-win (`Tests/Fixtures/virtio-win`, stamped from the
    /// upstream sources the way its build does): the Win10 build for w10, 2k16, 2k19 and 2k22, the Win11 build
    /// (`%13%`, run from the driver store; models for `10.0...16299`) for w11 and 2k25. Only the DriverVer line is
    /// stamped again with `driverDate`/`driverVersion`, as stampinf does. The directories of older Windows (2k8 to
    /// 2k12R2, w7 to w8.1) get the Win10 build stamped for the plain architecture (`NTamd64`, `NTx86`, as the build
    /// of those releases did) with their KMDF version: today's sources no longer build for them.
    public static func inf(
        _ driver: String, arch: String, osDirectory: String, driverVersion: String = "100.94.104.24000",
        driverDate: String = "09/19/2023"
    ) -> String {
        let a: String =
            switch arch.lowercased() {
            case "x86", "i386", "i686": "x86"
            default: "amd64"
            }
        let t = Target(os: osDirectory, arch: a, version: driverVersion, date: driverDate)
        let base: String
        switch driver.lowercased() {
        case "vioser", "vioserial": base = "vioser"
        case "vioprot", "sriov": return crlf(vioprotINF(t))
        case let d where realDrivers.contains(d): base = d
        default: preconditionFailure("FakeVirtioWin.inf: unknown driver '\(driver)'")
        }
        return realINF(base, t)
    }

    /// The drivers whose real INF is in `Tests/Fixtures/virtio-win`.
    public static let realDrivers: Set<String> = [
        "viostor", "vioscsi", "netkvm", "balloon", "vioser", "viorng", "pvpanic", "fwcfg", "qemufwcfg",
    ]

    /// Where the stamped real INFs are: `REMEDY_VIRTIO_INF_FIXTURES`, else `Tests/Fixtures/virtio-win` of the
    /// source tree this file was built from.
    public static var realINFDirectory: String {
        if let env = ProcessInfo.processInfo.environment["REMEDY_VIRTIO_INF_FIXTURES"], !env.isEmpty { return env }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("Tests/Fixtures/virtio-win").path
    }

    /// Which build of the real INFs an OS directory gets: `win11` (w11, 2k25), `win10` (w10, 2k16-2k22), or
    /// `legacy` (older Windows: the Win10 text for the plain architecture).
    public static func build(forOSDirectory os: String) -> String {
        switch os {
        case "w11", "2k25": "win11"
        case "w10", "2k16", "2k19", "2k22": "win10"
        default: "legacy"
        }
    }

    private static let realCache = Mutex<[String: String]>([:])

    static func realINF(_ name: String, _ t: Target) -> String {
        let build = build(forOSDirectory: t.os)
        // The Win11 build is 64-bit only (w11 and 2k25 have no x86 directory).
        let dir = build == "win11" ? "win11/amd64" : "win10/\(t.arch)"
        let path = realINFDirectory + "/" + dir + "/" + name + ".inf"
        var out = realCache.withLock { cache in
            if let known = cache[path] { return known }
            guard let data = FileManager.default.contents(atPath: path) else {
                preconditionFailure(
                    "FakeVirtioWin: the real virtio-win INF \(path) is missing (set REMEDY_VIRTIO_INF_FIXTURES to Tests/Fixtures/virtio-win)"
                )
            }
            let text = String(decoding: data, as: UTF8.self)
            cache[path] = text
            return text
        }
        if build == "legacy" {
            // stampinf with the plain architecture, and the KMDF version of that Windows.
            out = out.replacingOccurrences(of: "NT\(t.arch).10.0", with: "NT\(t.arch)")
            out = out.replacingOccurrences(
                of: "KmdfLibraryVersion = 1.15", with: "KmdfLibraryVersion = \(t.kmdfVersion)")
        }
        // stampinf: the DriverVer line of [Version] (qemufwcfg.inf ships already stamped and keeps its own).
        if name != "qemufwcfg" {
            var lines = out.components(separatedBy: "\r\n")
            if let i = lines.firstIndex(where: {
                $0.trimmingCharacters(in: .whitespaces).lowercased().hasPrefix("driverver")
            }) {
                lines[i] = "DriverVer = \(t.date),\(t.version)"
            }
            out = lines.joined(separator: "\r\n")
        }
        return out
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
