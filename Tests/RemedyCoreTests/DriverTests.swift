import Foundation
import Hivex
import RemedyFixtures
import Testing

@testable import RemedyCore
@testable import RemedyPlanning

/// A fake virtio-win tree written once per test process, in both layouts.
enum FakeTrees {
    static let root: String = {
        let dir = NSTemporaryDirectory() + "/remedy-virtio-\(UUID().uuidString)"
        try! FakeVirtioWin.write(at: dir + "/iso", layout: .isoTree)
        try! FakeVirtioWin.write(at: dir + "/packaged", layout: .packaged)
        try! FakeVirtioWin.write(at: dir + "/only-2k19", layout: .isoTree, osDirectories: ["2k19"])
        return dir
    }()

    /// Every driver, and the guest agent MSI and balloon service too.
    /// Resolves the ISO tree with a fetch that copies each requested file into a fresh cache, and returns what was fetched.
    static func resolveFetching(
        _ os: OSFacts, drivers: Set<String>, tools: Set<VirtioWin.Tool> = []
    ) throws -> (VirtioFacts, [String]) {
        let source = root + "/iso"
        let cache = NSTemporaryDirectory() + "/remedy-fetch-\(UUID().uuidString)"
        var fetched: [String] = []
        let v = try PayloadResolver.virtio(
            source: source, kind: "tree", os: os, drivers: drivers, tools: tools,
            list: { try PayloadResolver.listDirectory(source) },
            fetch: { paths in
                fetched += paths
                for p in paths {
                    try FileManager.default.createDirectory(
                        atPath: cache + "/" + (p as NSString).deletingLastPathComponent,
                        withIntermediateDirectories: true)
                    try FileManager.default.copyItem(atPath: source + "/" + p, toPath: cache + "/" + p)
                }
            }, cache: cache, image: "test.img")
        return (v, fetched)
    }

    static func resolve(_ layout: String, _ os: OSFacts) throws -> VirtioFacts {
        let source = root + "/" + layout
        return try PayloadResolver.virtio(
            source: source, kind: "tree", os: os, tools: Set(VirtioWin.Tool.allCases),
            list: { try PayloadResolver.listDirectory(source) },
            fetch: { _ in }, cache: source, image: "test.img")
    }
}

@Suite struct INFTests {
    @Test func viostorINFGivesServiceHardwareIDsAndClass() throws {
        let inf = try DriverINF(
            name: "viostor.inf", text: FakeVirtioWin.inf("viostor", arch: "amd64", osDirectory: "2k16"),
            arch: .x86_64, osMajor: 10, osMinor: 0, build: 14393)
        #expect(inf.classGUID == DriverClassGUID.scsiAdapter)
        #expect(inf.driverClass == "SCSIAdapter")
        #expect(inf.provider == "Red Hat, Inc.")
        #expect(inf.version == "100.94.104.24000" && inf.date == "09/19/2023")
        // The real viostor.inf: a hardware ID and the vendor&device compatible ID on each models line.
        #expect(
            inf.hardwareIDs == [
                "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00", "PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01",
            ])
        #expect(inf.compatibleIDs == ["PCI\\VEN_1AF4&DEV_1001", "PCI\\VEN_1AF4&DEV_1042"])
        #expect(inf.models.first?.configuration == "scsi_inst")
        let svc = try #require(inf.functionService)
        #expect(svc.name == "viostor" && svc.type == 1 && svc.start == 0 && svc.errorControl == 1)
        #expect(svc.group == "SCSI miniport")
        #expect(svc.imagePath == "System32\\drivers\\viostor.sys")
        #expect(svc.flags == 2)
        #expect(inf.files == ["viostor.sys"])
        // Service AddReg ([pnpsafe_pci_addreg]) and the event log install ([scsi_EventLog_Inst]).
        #expect(
            svc.addReg.map { "\($0.root.rawValue)\\\($0.subkey)\\\($0.valueName ?? "-")" }
                == [
                    "HKR\\Parameters\\PnpInterface\\5", "HKR\\Parameters\\BusType",
                    "HKR\\Parameters\\DmaRemappingCompatible",
                ])
        #expect(svc.addReg.map(\.value) == [.dword(1), .dword(1), .dword(0)])
        #expect(svc.eventLog?.log == "System" && svc.eventLog?.name == "viostor")
        #expect(
            svc.eventLog?.addReg.map(\.value) == [.expandString("%SystemRoot%\\System32\\IoLogMsg.dll"), .dword(7)])
    }

    @Test func theWin11BuildRunsFromTheDriverStore() throws {
        let inf = try DriverINF(
            name: "viostor.inf", text: FakeVirtioWin.inf("viostor", arch: "amd64", osDirectory: "2k25"),
            arch: .x86_64, osMajor: 10, osMinor: 0, build: 26100)
        let svc = try #require(inf.functionService)
        #expect(svc.binary == "%13%\\viostor.sys" && svc.binaryDirid == 13)
        #expect(
            svc.imagePath(storeFolder: "viostor.inf_amd64_0123456789abcdef")
                == "\\SystemRoot\\System32\\DriverStore\\FileRepository\\viostor.inf_amd64_0123456789abcdef\\viostor.sys"
        )
        // The Win10 build: the drivers directory, as real hives have it.
        let w10 = try DriverINF(
            name: "viostor.inf", text: FakeVirtioWin.inf("viostor", arch: "amd64", osDirectory: "2k22"),
            arch: .x86_64, osMajor: 10, osMinor: 0, build: 20348)
        #expect(w10.functionService?.imagePath(storeFolder: "x") == "System32\\drivers\\viostor.sys")
    }

    @Test func everyRealINFParsesForEveryOSDirectory() throws {
        for (dir, major, minor, build) in [
            ("2k12R2", 6, 3, 9600), ("2k16", 10, 0, 14393), ("2k19", 10, 0, 17763), ("2k22", 10, 0, 20348),
            ("2k25", 10, 0, 26100), ("w11", 10, 0, 22631), ("2k8", 6, 0, 6002),
        ] {
            for name in FakeVirtioWin.realDrivers.sorted() {
                let arch: Architecture = dir == "2k8" ? .i386 : .x86_64
                let inf = try DriverINF(
                    name: "\(name).inf", text: FakeVirtioWin.inf(name, arch: arch.windowsName, osDirectory: dir),
                    arch: arch, osMajor: major, osMinor: minor, build: build)
                #expect(!inf.hardwareIDs.isEmpty, "\(name) \(dir)")
                if name != "qemufwcfg" { #expect(inf.functionService != nil, "\(name) \(dir)") }
            }
        }
    }

    @Test func anINFMayOnlyWriteItsOwnServiceKeys() throws {
        let good = FakeVirtioWin.inf("viostor", arch: "amd64", osDirectory: "2k22")
        func parse(_ t: String) throws -> DriverINF {
            try DriverINF(name: "viostor.inf", text: t, arch: .x86_64, osMajor: 10, osMinor: 0, build: 20348)
        }
        #expect(throws: Never.self) { try parse(good) }
        let tampered: [(String, String)] = [
            ("HKR, \"Parameters\", \"BusType\"", "HKLM, \"SYSTEM\\CurrentControlSet\\Services\\Tcpip\", \"Start\""),
            ("HKR, \"Parameters\", \"BusType\"", "HKR, , \"Start\""),
            ("HKR, \"Parameters\", \"BusType\"", "HKCR, \"x\", \"y\""),
            ("HKR, \"Parameters\", \"BusType\"", "HKR, \"..\\Tcpip\", \"Start\""),
            ("AddService = viostor,", "AddService = Tcpip\\..\\x,"),
            ("ServiceBinary  = %12%\\viostor.sys", "ServiceBinary  = %12%\\tcpip.sys"),
            // The event source is the service's own: another name would write another component's source key.
            ("scsi_Service_Inst, scsi_EventLog_Inst", "scsi_Service_Inst, scsi_EventLog_Inst, System, Tcpip"),
        ]
        for (from, to) in tampered {
            #expect(good.contains(from), "\(from)")
            do {
                _ = try parse(good.replacingOccurrences(of: from, with: to))
                Issue.record("accepted: \(to)")
            } catch let e as DriverINF.ParseError {
                guard case .refused(let line, _) = e else {
                    Issue.record("\(e)")
                    continue
                }
                #expect(line > 0)
            }
        }
        // `AddService = Tcpip` with the package's binary parses (virtio-win itself names services apart from their
        // files: VirtioSerial runs vioser.sys); the rule refuses it against an image that has Tcpip
        // (DriverRuleTests.anINFCannotTakeOverAServiceTheImageHas).
        let tcpip = try parse(good.replacingOccurrences(of: "AddService = viostor,", with: "AddService = Tcpip,"))
        #expect(tcpip.functionService?.name == "Tcpip" && tcpip.functionService?.binaryFile == "viostor.sys")
        // Where the service comes from, for the plan.
        let svc = try #require(try parse(good).functionService)
        #expect(
            svc.servicesSection == "scsi_inst.Services" && svc.addServiceLine.map { $0 > 0 } == true
                && svc.directiveLines?.count == 5,
            "\(svc)")
    }

    @Test func kmdfDriversUseTheirNTInstallSections() throws {
        let inf = try DriverINF(
            name: "balloon.inf", text: FakeVirtioWin.inf("balloon", arch: "amd64", osDirectory: "2k12R2"),
            arch: .x86_64, osMajor: 6, osMinor: 3, build: 9600)
        #expect(inf.functionService?.name == "BALLOON")
        #expect(inf.functionService?.start == 3)
        #expect(inf.hardwareIDs.contains("PCI\\VEN_1AF4&DEV_1002&SUBSYS_00051AF4&REV_00"))
    }

    @Test func aNullServiceInstallsNoService() throws {
        let inf = try DriverINF(
            name: "qemufwcfg.inf", text: FakeVirtioWin.inf("qemufwcfg", arch: "amd64", osDirectory: "2k19"),
            arch: .x86_64, osMajor: 10, osMinor: 0, build: 17763)
        #expect(inf.services.isEmpty)
        #expect(!inf.hardwareIDs.isEmpty)
    }

    @Test func x86INFsAreReadForI386Only() throws {
        let text = FakeVirtioWin.inf("viostor", arch: "x86", osDirectory: "2k8")
        let inf = try DriverINF(name: "viostor.inf", text: text, arch: .i386, osMajor: 6, osMinor: 0, build: 6002)
        #expect(inf.functionService?.name == "viostor")
        #expect(throws: DriverINF.ParseError.self) {
            try DriverINF(name: "viostor.inf", text: text, arch: .x86_64, osMajor: 6, osMinor: 0, build: 6002)
        }
    }

    @Test func aModelsSectionForNewerBuildsIsNotUsed() throws {
        // The Win11 build (2k25) targets NTamd64.10.0...16299: Server 2016 (build 14393) must not take it.
        let text = FakeVirtioWin.inf("viostor", arch: "amd64", osDirectory: "2k25")
        #expect(throws: DriverINF.ParseError.self) {
            try DriverINF(name: "viostor.inf", text: text, arch: .x86_64, osMajor: 10, osMinor: 0, build: 14393)
        }
        #expect(
            try DriverINF(name: "viostor.inf", text: text, arch: .x86_64, osMajor: 10, osMinor: 0, build: 17763).models
                .count == 1)
    }

    /// Issue 12 item 10: models parsing was quadratic (40,000 lines took 117 s). A 40,000-line INF with 20,000
    /// distinct models and 20,000 strings parses completely, and parsing scales linearly: four times the models
    /// take well under 16 times as long (a quadratic parser takes 16 times; the best of three runs of each size).
    @Test func aFortyThousandLineINFParses() throws {
        func text(_ n: Int) -> String {
            var text = FakeVirtioWin.inf("viostor", arch: "amd64", osDirectory: "2k22")
            text = text.replacingOccurrences(
                of: "[VioStor.NTamd64.10.0]\r\n",
                with: "[VioStor.NTamd64.10.0]\r\n"
                    + (0..<n).map {
                        "%D\($0)% = scsi_inst, PCI\\VEN_1AF4&DEV_\(String($0, radix: 16))&SUBSYS_00021AF4&REV_00, PCI\\VEN_1AF4&DEV_\(String($0, radix: 16))\r\n"
                    }.joined())
            return text + (0..<n).map { "D\($0) = \"Device \($0)\"\r\n" }.joined()
        }
        let full = text(20_000), quarter = text(5_000)
        #expect(full.unicodeScalars.filter { $0 == "\n" }.count > 40_000)
        func parse(_ t: String) throws -> DriverINF {
            try DriverINF(name: "viostor.inf", text: t, arch: .x86_64, osMajor: 10, osMinor: 0, build: 20348)
        }
        let inf = try parse(full)
        #expect(inf.models.count == 20_001)
        // Two generated IDs equal the real ones (DEV_1001, DEV_1042 in hex), so 20,000 distinct of each kind.
        #expect(inf.hardwareIDs.count == 20_001 && inf.compatibleIDs.count == 20_000)
        #expect(inf.models.contains { $0.description == "Device 19999" && $0.configuration == "scsi_inst" })
        #expect(inf.services.count == 1)
        let tFull = try Scaling.best { _ = try parse(full) }, tQuarter = try Scaling.best { _ = try parse(quarter) }
        print("INF of 40,000 lines parsed in \(tFull) s, of 10,000 lines in \(tQuarter) s")
        #expect(
            Scaling.linear(tFull, tQuarter),
            "4x the lines took \(tFull / tQuarter) times as long (\(tFull) s vs \(tQuarter) s)")
    }

    @Test func syntaxCommentsQuotesContinuationsAndStrings() {
        let inf = INFFile(
            text:
                "[Version]\r\nA = \"x;y\" ; comment\r\nB = one, \\\r\n  two\r\n[strings]\r\nS = \"He said \"\"hi\"\"\"\r\n[X]\r\nK = %s%, 100%%\r\n[version]\r\nC = 3\r\n"
        )
        #expect(inf.value("Version", "A") == "x;y")
        #expect(inf.lines("Version", "B").first?.fields == ["one", "two"])
        #expect(inf.value("X", "K") == "He said \"hi\"")
        #expect(inf.lines("X", "K").first?.fields.last == "100%")
        #expect(inf.value("VERSION", "c") == "3", "a repeated section is merged")
    }
}

@Suite struct VirtioLayoutTests {
    func os(_ release: WindowsRelease, arch: Architecture? = nil) -> OSFacts {
        let a = arch ?? release.defaultArch
        return OSFacts(
            root: "/dev/sda1", product: release.productName, variant: "Server", majorVersion: release.version.major,
            minorVersion: release.version.minor, build: release.build, arch: a, hostname: nil, systemRoot: "/Windows",
            currentControlSet: "ControlSet001", controlSets: [])
    }

    @Test(arguments: [
        (WindowsRelease.server2008, "2k8/x86"), (.server2008R2, "2k8R2/amd64"), (.server2012, "2k12/amd64"),
        (.server2012R2, "2k12R2/amd64"), (.server2016, "2k16/amd64"), (.server2019, "2k19/amd64"),
        (.server2022, "2k22/amd64"),
    ])
    func eachReleaseGetsItsOwnDirectory(release: WindowsRelease, expected: String) throws {
        #expect(VirtioWin.key(for: os(release)) == expected)
        for layout in ["iso", "packaged"] {
            let v = try FakeTrees.resolve(layout, os(release))
            #expect(v.selected == expected)
            // Every file of every package comes from that directory, whichever layout holds it.
            for p in v.packages {
                for f in p.files {
                    let dirs = f.source.lowercased().split(separator: "/")
                    #expect(dirs.contains(Substring(expected.split(separator: "/")[0].lowercased())), "\(f.source)")
                }
            }
            #expect(
                Set(v.packages.map(\.inf.name)).isSuperset(of: ["viostor.inf", "vioscsi.inf", "netkvm.inf"]),
                "\(layout)")
            #expect(
                !v.packages.contains { $0.inf.name.hasPrefix("vioprot") },
                "the SR-IOV protocol driver is never injected")
            #expect(!v.packages.flatMap(\.files).contains { $0.name.hasSuffix(".pdb") })
        }
    }

    @Test func anISOListingIsSplitIntoFilesWithoutAskingAboutEachEntry() {
        let listing = [
            "viostor", "viostor/2k16", "viostor/2k16/amd64", "viostor/2k16/amd64/viostor.inf", "viostor.txt", "empty",
        ]
        #expect(Set(ISOReader.leaves(listing)) == ["viostor/2k16/amd64/viostor.inf", "viostor.txt", "empty"])
    }

    @Test func clientWindowsAndServerWindowsDoNotShare() {
        var w10 = os(.server2016)
        w10.variant = "Client"
        w10.build = "19045"
        #expect(VirtioWin.key(for: w10) == "w10/amd64")
        w10.build = "22631"
        #expect(VirtioWin.key(for: w10) == "w11/amd64")
        var w7 = os(.server2008R2)
        w7.variant = "Client"
        #expect(VirtioWin.key(for: w7) == "w7/amd64")
    }

    @Test func bothLayoutsGiveTheSamePackages() throws {
        let a = try FakeTrees.resolve("iso", os(.server2012R2)),
            b = try FakeTrees.resolve("packaged", os(.server2012R2))
        #expect(a.packages.map(\.inf) == b.packages.map(\.inf))
        #expect(a.packages.map { $0.files.map(\.sha256) } == b.packages.map { $0.files.map(\.sha256) })
    }

    @Test func theStubFwCfgIsDroppedWhenTheRealOneIsThere() throws {
        let v = try FakeTrees.resolve("iso", os(.server2019))
        #expect(v.package("fwcfg.inf") != nil)
        #expect(v.package("qemufwcfg.inf") == nil)
    }

    @Test func noMatchingDirectoryIsAnErrorListingWhatThereIs() throws {
        do {
            _ = try FakeTrees.resolve("only-2k19", os(.server2016))
            Issue.record("a virtio-win without 2k16 was accepted for Server 2016")
        } catch let e as RemedyError {
            #expect(e.code == .virtioWinNoMatch)
            #expect(e.message.contains("2k16/amd64") && e.message.contains("it has: 2k19/amd64"), "\(e.message)")
        }
    }

    @Test func aDirectoryWithoutDriversIsRejected() throws {
        let empty = NSTemporaryDirectory() + "/remedy-empty-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: empty + "/docs", withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: empty + "/docs/readme.txt", contents: Data("x".utf8)))
        #expect(throws: RemedyError.self) {
            _ = try PayloadResolver.virtio(
                source: empty, kind: "tree", os: os(.server2016), list: { try PayloadResolver.listDirectory(empty) },
                fetch: { _ in }, cache: empty, image: "x")
        }
    }
}

@Suite struct DriverRuleTests {
    func windows(_ release: WindowsRelease, _ states: Set<PhonyState> = [.noAutoReboot]) throws -> LocalWindows {
        var w = try LocalWindows(PhonyWindows(release: release, states: states))
        w.payloads.virtio = try FakeTrees.resolve("iso", w.os)
        return w
    }

    @Test func windows7EraGetsCriticalDeviceDatabaseEntriesFromTheINF() throws {
        var w = try windows(.server2008R2)
        let policy = try PolicyLoader.load("huawei-ims")
        let plan = try w.plan(policy)
        let system = plan.changes.filter { $0.hive == .system }
        for cs in ["ControlSet001", "ControlSet002"] {
            for id in [
                "pci#ven_1af4&dev_1001&subsys_00021af4&rev_00", "pci#ven_1af4&dev_1001",
                "pci#ven_1af4&dev_1042&subsys_11001af4&rev_01",
                "pci#ven_1af4&dev_1004&subsys_00081af4&rev_00", "pci#ven_1af4&dev_1048",
            ] {
                let key = "\(cs)\\Control\\CriticalDeviceDatabase\\\(id)"
                #expect(
                    system.contains {
                        $0.key.description == key && $0.name == "ClassGUID"
                            && $0.after == .string(DriverClassGUID.scsiAdapter)
                    }, "\(key)")
            }
            #expect(
                system.contains {
                    $0.key.description == "\(cs)\\Services\\viostor" && $0.name == "Start" && $0.after == .dword(0)
                })
            #expect(
                system.contains {
                    $0.key.description == "\(cs)\\Services\\vioscsi" && $0.name == "ImagePath"
                        && $0.after == .expandString("System32\\drivers\\vioscsi.sys")
                })
        }
        #expect(!system.contains { $0.key.components.first == "DriverDatabase" })
        // netkvm and the others are installed at first boot, not by service keys written offline.
        #expect(!system.contains { $0.key.description.hasSuffix("Services\\netkvm") })
        let files = Set(plan.fileChanges.map(\.path))
        #expect(files.contains("/Windows/System32/drivers/viostor.sys"))
        #expect(files.contains("/Windows/Drivers/VirtIO/netkvm.inf"))
        #expect(files.contains("/Windows/remedy/firstboot/scripts/20-virtio-drivers.cmd"))
        #expect(files.contains("/Windows/System32/GroupPolicy/Machine/Scripts/scripts.ini"))
        #expect(plan.properties["hw_disk_bus"] == "virtio")
        #expect(plan.properties["hw_vif_multiqueue_enabled"] == "true")
        try w.apply(plan)
        #expect(try w.plan(policy).actions.isEmpty)
    }

    @Test func windows8AndLaterGetDriverDatabaseEntries() throws {
        for release in [WindowsRelease.server2012R2, .server2016, .server2022] {
            var w = try windows(release)
            let policy = try PolicyLoader.load("huawei-ims")
            let plan = try w.plan(policy)
            let system = plan.changes.filter { $0.hive == .system }
            #expect(!system.contains { $0.key.description.contains("CriticalDeviceDatabase") }, "\(release)")
            let viostor = try #require(w.payloads.virtio?.package("viostor.inf"))
            let label = VirtioDriversRule.label(viostor, w.os)
            #expect(label.hasPrefix("viostor.inf_amd64_") && label.count == "viostor.inf_amd64_".count + 16)
            let published = system.first {
                $0.key.description.hasPrefix("DriverDatabase\\DriverInfFiles\\") && $0.name == "Active"
                    && $0.after == .string(label)
            }
            let inf = try #require(published?.key.components.last, "\(release): no DriverInfFiles entry for \(label)")
            #expect(inf.hasPrefix("oem") && inf.hasSuffix(".inf"))
            // Ranks as a real Windows 10 hive has them: 01 for a hardware ID, 02 for a compatible ID.
            for (ids, rank) in [(viostor.inf.hardwareIDs, UInt8(1)), (viostor.inf.compatibleIDs, UInt8(2))] {
                #expect(!ids.isEmpty)
                for id in ids {
                    #expect(
                        system.contains {
                            $0.key.description == "DriverDatabase\\DeviceIds\\\(id)" && $0.name == inf
                                && $0.after == .binary([rank, 0xFF, 0, 0])
                        }, "\(release) \(id)")
                    #expect(
                        system.contains {
                            $0.key.description == "DriverDatabase\\DriverPackages\\\(label)\\Descriptors\\\(id)"
                                && $0.name == "Configuration" && $0.after == .string("scsi_inst")
                        })
                    #expect(
                        system.contains {
                            $0.key.description == "DriverDatabase\\DriverPackages\\\(label)\\Descriptors\\\(id)"
                                && $0.name == "Description" && $0.after == .string("%VioStorScsi.DeviceDesc%")
                        })
                }
            }
            #expect(
                system.contains {
                    $0.key.description == "DriverDatabase\\DriverPackages\\\(label)\\Strings"
                        && $0.name == "viostorscsi.devicedesc" && $0.after == .string("Red Hat VirtIO SCSI controller")
                })
            #expect(
                system.contains {
                    $0.key.description == "DriverDatabase\\DriverPackages\\\(label)\\Configurations\\scsi_inst"
                        && $0.name == "Service" && $0.after == .string("viostor")
                })
            #expect(
                system.contains {
                    $0.key.description == "DriverDatabase\\DriverPackages\\\(label)\\Configurations\\scsi_inst"
                        && $0.name == "ConfigScope" && $0.after == .dword(7)
                })
            #expect(
                system.contains {
                    $0.key.description == "DriverDatabase\\DeviceIds\\{4d36e97b-e325-11ce-bfc1-08002be10318}"
                        && $0.name == inf && $0.after == .raw(type: 0, data: [])
                })
            let version = system.first {
                $0.key.description == "DriverDatabase\\DriverPackages\\\(label)" && $0.name == "Version"
            }?.after
            // 09/19/2023 as a FILETIME, 100.94.104.24000 as words, amd64 (9).
            #expect(
                version
                    == .binary(
                        VirtioDriversRule.versionBlob(
                            classGUID: DriverClassGUID.scsiAdapter, date: "09/19/2023", version: "100.94.104.24000",
                            arch: .x86_64)))
            // Service AddReg and the event source, from the INF, in every control set, with where they come from.
            for cs in w.os.orderedControlSets.map(\.name) {
                #expect(
                    system.contains {
                        $0.key.description == "\(cs)\\Services\\viostor\\Parameters\\PnpInterface" && $0.name == "5"
                            && $0.after == .dword(1)
                    })
                #expect(
                    system.contains {
                        $0.key.description == "\(cs)\\Services\\viostor\\Parameters" && $0.name == "BusType"
                            && $0.after == .dword(1)
                    })
                #expect(
                    system.contains {
                        $0.key.description == "\(cs)\\Services\\vioscsi\\Parameters" && $0.name == "BusType"
                            && $0.after == .dword(0xA)
                    })
                #expect(
                    system.contains {
                        $0.key.description == "\(cs)\\Services\\EventLog\\System\\viostor"
                            && $0.name == "EventMessageFile"
                            && $0.after == .expandString("%SystemRoot%\\System32\\IoLogMsg.dll")
                    })
                #expect(
                    system.contains {
                        $0.key.description == "\(cs)\\Services\\EventLog\\System\\viostor"
                            && $0.name == "TypesSupported" && $0.after == .dword(7)
                    })
            }
            #expect(
                plan.actions.contains {
                    $0.description
                        == "viostor: values from viostor.inf [scsi_Service_Inst] AddReg = [pnpsafe_pci_addreg], lines 92, 93, 94"
                },
                "\(plan.actions.map(\.description))")
            // The service's own values too, naming the INF, its AddService line and the service-install section's lines.
            let service = plan.actions.first { $0.description.hasPrefix("viostor: service ") }
            #expect(
                service?.description
                    == "viostor: service Type, Start, ErrorControl, ImagePath from viostor.inf line 70 AddService = viostor in "
                    + "[scsi_inst.Services], [scsi_Service_Inst] lines 73, 74, 75, 76, 77",
                "\(plan.actions.map(\.description))")
            #expect(
                service.map { a in
                    a.changes.contains { $0.name == "ImagePath" } && a.changes.contains { $0.name == "Start" }
                } == true)
            #expect(plan.actions.contains { $0.target == "OemInfMap" })
            #expect(
                plan.fileChanges.contains {
                    $0.path == "/Windows/System32/DriverStore/FileRepository/\(label)/viostor.sys"
                })
            #expect(plan.fileChanges.contains { $0.path == "/Windows/INF/\(inf)" })
            try w.apply(plan)
            let again = try w.plan(policy)
            #expect(again.actions.isEmpty, "\(release): \(again.actions.map(\.description))")
        }
    }

    @Test func theWin11BuildRunsTheBootDriverFromTheDriverStore() throws {
        var w = try windows(.server2022)
        // virtio-win's 2k25 directory (the Win11 build: ServiceBinary = %13%\viostor.sys).
        var os2k25 = w.os
        os2k25.build = "26100"
        w.payloads.virtio = try FakeTrees.resolve("iso", os2k25)
        #expect(w.payloads.virtio?.selected == "2k25/amd64")
        let policy = try PolicyLoader.load("huawei-ims")
        let plan = try w.plan(policy)
        let viostor = try #require(w.payloads.virtio?.package("viostor.inf"))
        let label = VirtioDriversRule.label(viostor, w.os)
        let image = "\\SystemRoot\\System32\\DriverStore\\FileRepository\\\(label)\\viostor.sys"
        for cs in w.os.orderedControlSets.map(\.name) {
            #expect(
                plan.changes.contains {
                    $0.key.description == "\(cs)\\Services\\viostor" && $0.name == "ImagePath"
                        && $0.after == .expandString(image)
                })
        }
        // The file the ImagePath names is written; nothing goes to System32\drivers.
        #expect(
            plan.fileChanges.contains { $0.path == "/Windows/System32/DriverStore/FileRepository/\(label)/viostor.sys" }
        )
        #expect(!plan.fileChanges.contains { $0.path.hasPrefix("/Windows/System32/drivers/") })
        #expect(!plan.changes.contains { $0.after == .expandString("%13%\\viostor.sys") })
        try w.apply(plan)
        #expect(try w.plan(policy).actions.isEmpty)
    }

    /// Issue 12 item 11 (review): a tampered INF whose AddService names an existing service of the image (`Tcpip`)
    /// with the package's own binary would have rewritten that service's Type, Start and ImagePath. A package
    /// installs only its own services: a service the image has must already run the package's file.
    @Test func anINFCannotTakeOverAServiceTheImageHas() throws {
        var spec = PhonyWindows(release: .server2016, states: [.noAutoReboot])
        spec.extraSystem["{cs}\\Services\\Tcpip"] = [
            "Start": .dword(1), "Type": .dword(1), "ErrorControl": .dword(1),
            "ImagePath": .expandString("System32\\drivers\\tcpip.sys"),
        ]
        var w = try LocalWindows(spec)
        w.payloads.virtio = try FakeTrees.resolve("iso", w.os)
        let policy = try PolicyLoader.load("huawei-ims")
        // The real packages pass (virtio-win's own services, new to the image).
        let clean = try w.plan(policy)
        #expect(!clean.findings.contains { $0.id == "virtio-driver-foreign-service" })
        #expect(clean.changes.contains { $0.key.description.hasSuffix("Services\\viostor") && $0.name == "ImagePath" })

        let i = try #require(w.payloads.virtio?.packages.firstIndex { $0.inf.name == "viostor.inf" })
        let text = FakeVirtioWin.inf("viostor", arch: "amd64", osDirectory: "2k16")
        #expect(text.contains("AddService = viostor,"))
        w.payloads.virtio!.packages[i].inf = try DriverINF(
            name: "viostor.inf",
            text: text.replacingOccurrences(of: "AddService = viostor,", with: "AddService = Tcpip,"),
            arch: .x86_64, osMajor: 10, osMinor: 0, build: 14393)
        let plan = try w.plan(policy)
        let finding = try #require(plan.findings.first { $0.id == "virtio-driver-foreign-service" })
        #expect(
            finding.severity == .blocker && finding.message.contains("Tcpip")
                && finding.message.contains("viostor.inf"), "\(finding.message)")
        #expect(
            !plan.changes.contains {
                $0.key.description.contains("Services\\Tcpip") && $0.name != nil
                    && ["Start", "Type", "ImagePath", "ErrorControl"].contains($0.name!)
            },
            "\(plan.changes.filter { $0.key.description.contains("Services\\Tcpip") })")
        #expect(!plan.changes.contains { $0.key.description.contains("EventLog\\System\\Tcpip") })
        #expect(!plan.fileChanges.contains { $0.path.hasPrefix("/Windows/Drivers/VirtIO/viostor") })
        // vioscsi, its own, is still injected.
        #expect(plan.changes.contains { $0.key.description.hasSuffix("Services\\vioscsi") && $0.name == "Start" })

        // A service of the same name that runs a file of the same name (an older viostor) is the package's own.
        var older = spec
        older.extraSystem["{cs}\\Services\\viostor"] = [
            "Start": .dword(3), "Type": .dword(1), "ErrorControl": .dword(1),
            "ImagePath": .expandString(
                "\\SystemRoot\\System32\\DriverStore\\FileRepository\\viostor.inf_amd64_0123\\viostor.sys"),
        ]
        var o = try LocalWindows(older)
        o.payloads.virtio = try FakeTrees.resolve("iso", o.os)
        #expect(!(try o.plan(policy)).findings.contains { $0.id == "virtio-driver-foreign-service" })
    }

    @Test func aWorkingDriverTheImageHasIsKept() throws {
        var spec = PhonyWindows(release: .server2016, states: [.noAutoReboot])
        spec.extraSystem["{cs}\\Services\\viostor"] = [
            "Start": .dword(0), "Type": .dword(1), "ErrorControl": .dword(1),
            "ImagePath": .expandString("System32\\drivers\\viostor.sys"),
        ]
        var w = try LocalWindows(spec)
        w.payloads.virtio = try FakeTrees.resolve("iso", w.os)
        w.files.files[FileSnapshot.key("/Windows/System32/drivers/viostor.sys")] = GuestFile(
            path: "/Windows/System32/drivers/viostor.sys", size: 1, sha256: "old")
        let plan = try w.plan(try PolicyLoader.load("huawei-ims"))
        #expect(plan.findings.contains { $0.id == "virtio-driver-kept" })
        #expect(!plan.changes.contains { $0.key.description.hasSuffix("Services\\viostor") })
        #expect(!plan.fileChanges.contains { $0.path == "/Windows/System32/drivers/viostor.sys" })
        // vioscsi is still installed.
        #expect(plan.changes.contains { $0.key.description.hasSuffix("Services\\vioscsi") && $0.name == "Start" })

        // Demoted by StartOverride, the same driver does not load: remedy installs its own.
        var demoted = spec
        demoted.extraSystem["{cs}\\Services\\viostor\\StartOverride"] = ["0": .dword(3)]
        var d = try LocalWindows(demoted)
        d.payloads.virtio = w.payloads.virtio
        d.files = w.files
        let plan2 = try d.plan(try PolicyLoader.load("huawei-ims"))
        #expect(!plan2.findings.contains { $0.id == "virtio-driver-kept" })
        #expect(
            plan2.changes.contains {
                $0.key.description == "ControlSet001\\Services\\viostor\\StartOverride" && $0.op == .deleteValue
            })
    }

    @Test func versionBlobMatchesARealPackage() {
        // SYSTEM_WIN_10_1709, DriverPackages\vmci.inf_amd64_5e38a278d114b813: DriverVer 07/11/2019,9.8.16.0, class System.
        let real: [UInt8] = [
            0x00, 0xff, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7d, 0xe9, 0x36, 0x4d, 0x25, 0xe3, 0xce, 0x11, 0xbf, 0xc1,
            0x08, 0x00,
            0x2b, 0xe1, 0x03, 0x18, 0x00, 0x80, 0x24, 0x95, 0x7b, 0x37, 0xd5, 0x01, 0x00, 0x00, 0x10, 0x00, 0x08, 0x00,
            0x09, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ]
        #expect(
            VirtioDriversRule.versionBlob(
                classGUID: "{4D36E97D-E325-11CE-BFC1-08002BE10318}", date: "07/11/2019", version: "9.8.16.0",
                arch: .x86_64) == real)
        #expect(
            VirtioDriversRule.versionBlob(
                classGUID: "{4D36E97D-E325-11CE-BFC1-08002BE10318}", date: "07/11/2019", version: "9.8.16.0",
                arch: .i386)[2] == 0)
    }

    @Test func classGUIDBytesAreInWindowsOrder() {
        let b = VirtioDriversRule.guidBytes("{4D36E97B-E325-11CE-BFC1-08002BE10318}")
        #expect(b == [0x7B, 0xE9, 0x36, 0x4D, 0x25, 0xE3, 0xCE, 0x11, 0xBF, 0xC1, 0x08, 0x00, 0x2B, 0xE1, 0x03, 0x18])
    }

    @Test func multiQueueTurnsRSSBackOnAndReportsTheProperty() throws {
        var w = try windows(.server2016, [.noAutoReboot, .rssDisabled])
        let plan = try w.plan(try PolicyLoader.load("huawei-ims"))
        let mq = plan.actions.filter { $0.rule == "multi-queue" }.flatMap(\.changes)
        #expect(mq.contains { $0.name == "EnableRSS" && $0.before == .dword(0) && $0.after == .dword(1) })
        #expect(mq.contains { $0.name == "RSS" && $0.key.description.hasSuffix("NDIS\\Parameters") })
        #expect(plan.properties["hw_vif_multiqueue_enabled"] == "true")
        try w.apply(plan)
        #expect(try w.plan(try PolicyLoader.load("huawei-ims")).actions.isEmpty)
    }

    @Test func multiQueueIsNotOfferedOnOtherVersions() throws {
        let w = try windows(.server2019)
        let plan = try w.plan(try PolicyLoader.load("huawei-ims"))
        #expect(plan.properties["hw_vif_multiqueue_enabled"] == nil)
        #expect(plan.findings.contains { $0.id == "multi-queue-unsupported" && $0.severity == .info })
    }

    @Test func sha2WarningUnlessTheUpdatesAreInstalled() throws {
        let w = try windows(.server2008R2)
        let plan = try w.plan(try PolicyLoader.load("huawei-ims"))
        #expect(plan.findings.contains { $0.id == "virtio-win-known-issue" && $0.message.contains("KB4474419") })
        var spec = PhonyWindows(release: .server2008R2, states: [.noAutoReboot])
        spec.extraSoftware[
            "Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\Packages\\Package_for_KB4474419~31bf3856ad364e35~amd64~~6.1.3.2"
        ] = ["CurrentState": .dword(0x70)]
        var patched = try LocalWindows(spec)
        patched.payloads.virtio = w.payloads.virtio
        #expect(
            !(try patched.plan(try PolicyLoader.load("huawei-ims"))).findings.contains {
                $0.id == "virtio-win-known-issue"
            })
        #expect(
            !(try windows(.server2016).plan(try PolicyLoader.load("huawei-ims"))).findings.contains {
                $0.id == "virtio-win-known-issue"
            })
    }
}

@Suite struct FirstBootTests {
    @Test func anExistingScriptsIniKeepsItsEntriesAndGetsTheNextIndex() {
        let existing =
            "\r\n[Startup]\r\n0CmdLine=C:\\corp\\inventory.cmd\r\n0Parameters=/q\r\n[Shutdown]\r\n0CmdLine=x.cmd\r\n0Parameters=\r\n"
        let merged = FirstBoot.addStartup(existing, "C:\\Windows\\remedy\\firstboot\\run.cmd")
        #expect(
            merged.contains(
                "0CmdLine=C:\\corp\\inventory.cmd\r\n0Parameters=/q\r\n1CmdLine=C:\\Windows\\remedy\\firstboot\\run.cmd\r\n1Parameters=\r\n[Shutdown]"
            ))
        #expect(FirstBoot.addStartup("", "r.cmd") == "[Startup]\r\n0CmdLine=r.cmd\r\n0Parameters=\r\n")
    }

    @Test func gptIniRegistersScriptsAndRaisesTheMachineVersionOnly() {
        let (ours, restore) = FirstBoot.gptIniTexts(
            "[General]\r\ngPCMachineExtensionNames=[{35378EAC-683F-11D2-A89A-00C04FBBCFA2}{0F6B957D-509E-11D1-A7CC-0000F87571E3}]\r\nVersion=65539\r\n"
        )
        // 65539 = user version 1, machine version 3.
        #expect(ours.contains("Version=65540\r\n"))
        #expect(restore.contains("Version=65541\r\n"))
        #expect(
            ours.contains(
                "gPCMachineExtensionNames=[{35378EAC-683F-11D2-A89A-00C04FBBCFA2}{0F6B957D-509E-11D1-A7CC-0000F87571E3}][{42B5FAAE-6536-11D2-AE5A-0000F87571E3}{40B6664F-4972-11D1-A7CA-0000F87571E3}]"
            ))
        #expect(!restore.contains("42B5FAAE"))
        let (fresh, _) = FirstBoot.gptIniTexts("")
        #expect(fresh == "[General]\r\ngPCMachineExtensionNames=\(FirstBoot.scriptsExtension)\r\nVersion=1\r\n")
    }

    @Test func scriptsIniKeepsItsUTF16Encoding() throws {
        var w = try LocalWindows(PhonyWindows(release: .server2016, states: [.noAutoReboot]))
        w.payloads.virtio = try FakeTrees.resolve("iso", w.os)
        let text = "[Startup]\r\n0CmdLine=C:\\corp\\a.cmd\r\n0Parameters=\r\n"
        let bytes = TextEncoding.utf16le.encode(text)
        w.files.apply(
            FileChange(
                path: FirstBoot.scriptsIni(w.os), content: text, encoding: .utf16le, size: Int64(bytes.count),
                sha256: SHA256Hex.of(bytes), before: nil))
        let plan = try w.plan(try PolicyLoader.load("huawei-ims"))
        let ini = try #require(plan.fileChanges.first { $0.path == FirstBoot.scriptsIni(w.os) })
        #expect(ini.encoding == .utf16le && ini.before == SHA256Hex.of(bytes))
        #expect(
            ini.content?.contains("0CmdLine=C:\\corp\\a.cmd") == true
                && ini.content?.contains("1CmdLine=C:\\Windows\\remedy\\firstboot\\run.cmd") == true)
        let restore = try #require(plan.fileChanges.first { $0.path.hasSuffix("restore/scripts.ini") })
        #expect(restore.content == text)
    }

    @Test func textDecodingFollowsTheByteOrderMark() {
        #expect(TextEncoding.decode([0xFF, 0xFE, 0x41, 0x00, 0x42, 0x00]) == ("AB", .utf16le))
        #expect(TextEncoding.decode(Array("AB".utf8)) == ("AB", .utf8))
    }
}

@Suite struct PayloadTests {
    /// Issue 12 item 10: only the requested drivers' files are fetched and their INFs parsed.
    @Test func onlyTheRequestedDriversAreFetchedAndParsed() throws {
        let os = OSFacts(
            root: "/dev/sda1", product: "Windows Server 2016", variant: "Server", majorVersion: 10, minorVersion: 0,
            build: "14393", arch: .x86_64, hostname: nil, systemRoot: "/Windows", currentControlSet: "ControlSet001",
            controlSets: [])
        let (v, fetched) = try FakeTrees.resolveFetching(os, drivers: ["viostor", "vioscsi"])
        #expect(v.packages.map(\.inf.name) == ["vioscsi.inf", "viostor.inf"])
        #expect(
            !fetched.isEmpty
                && fetched.allSatisfy { $0.lowercased().contains("viostor") || $0.lowercased().contains("vioscsi") },
            "\(fetched)")
    }

    @Test func sha256MatchesPublishedVectors() {
        #expect(SHA256Hex.of([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256Hex.of(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            SHA256Hex.of(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // A million "a", read back in pieces from a file of 1,000,000 bytes (the streaming path).
        let file = NSTemporaryDirectory() + "/remedy-sha-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: file) }
        #expect(FileManager.default.createFile(atPath: file, contents: Data(repeating: 0x61, count: 1_000_000)))
        let million = try? SHA256Hex.ofFile(file)
        #expect(
            million?.sha256 == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
                && million?.size == 1_000_000)
    }

    func manifestDirectory(known sha: String?) throws -> String {
        let dir = NSTemporaryDirectory() + "/remedy-payload-\(UUID().uuidString)/tools"
        try FileManager.default.createDirectory(atPath: dir + "/kvm", withIntermediateDirectories: true)
        try """
        name: tools
        description: the cloud's VM tools
        input:
          kind: msi
          known:\(sha.map { "\n    - {file: tools.msi, version: 2.1, arch: x86_64, sha256: \($0)}" } ?? " []")
        detect: {service: cloudtools}
        install: {command: 'msiexec /i "%PAYLOAD%" /qn /l*v "%LOG%"', order: 60}
        variants: [kvm]
        variables: {region: none}
        files:
          - {template: "{variant}/tools.conf", target: '%ProgramFiles%\\Cloud Tools\\tools.conf'}
        remove-keys: ['SOFTWARE\\Cloud Tools\\State']
        """.write(toFile: dir + "/manifest.yaml", atomically: true, encoding: .utf8)
        try "region={{region}}\n".write(toFile: dir + "/kvm/tools.conf", atomically: true, encoding: .utf8)
        return dir
    }

    func plan(_ rule: PayloadRule, _ w: LocalWindows) throws -> Plan {
        let w = w
        return try w.plan(
            Policy(
                name: "t", description: "", source: "t", extends: [], versions: [], architectures: [], parameters: [:],
                rules: [rule]))
    }

    @Test func aNewPayloadIsDataStagedInstalledAndConfigured() throws {
        let msi: [UInt8] = Array("fake tools msi".utf8)
        let m = try PayloadManifest.load(try manifestDirectory(known: SHA256Hex.of(msi)) + "/manifest.yaml")
        let rule = try PayloadRule(manifest: m, parameters: PolicyParameters(["region": .string("eu-west-0")]))
        var w = try LocalWindows(PhonyWindows(release: .server2016))
        w.payloads.files["tools"] = PayloadFile(
            name: "tools.msi", source: "tools:tools.msi", size: Int64(msi.count), sha256: SHA256Hex.of(msi))
        let p = try plan(rule, w)
        #expect(p.findings.isEmpty, "\(p.findings)")
        let files = Dictionary(uniqueKeysWithValues: p.fileChanges.map { ($0.path, $0) })
        #expect(files["/Windows/remedy/payloads/tools/tools.msi"]?.source == "tools:tools.msi")
        #expect(files["/Windows/remedy/payloads/tools/files/tools.conf"]?.content == "region=eu-west-0\r\n")
        let step = try #require(files["/Windows/remedy/firstboot/scripts/60-tools.cmd"]?.content)
        #expect(
            step.contains(
                "msiexec /i \"C:\\Windows\\remedy\\payloads\\tools\\tools.msi\" /qn /l*v \"C:\\Windows\\remedy\\payloads\\tools\\install.log\""
            ))
        #expect(
            step.contains(
                "copy /y \"C:\\Windows\\remedy\\payloads\\tools\\files\\tools.conf\" \"%ProgramFiles%\\Cloud Tools\\tools.conf\""
            ))
        #expect(files["/Windows/remedy/firstboot/run.cmd"] != nil)
        try w.apply(p)
        #expect(try plan(rule, w).actions.isEmpty)
    }

    @Test func anUnknownFileIsUsedWithAWarningAndAMissingOneIsReported() throws {
        let m = try PayloadManifest.load(try manifestDirectory(known: nil) + "/manifest.yaml")
        var w = try LocalWindows(PhonyWindows(release: .server2016))
        let rule = try PayloadRule(manifest: m, parameters: PolicyParameters())
        #expect(try plan(rule, w).findings.map(\.id) == ["payload-missing"])
        w.payloads.files["tools"] = PayloadFile(
            name: "x.msi", source: "tools:x.msi", size: 1, sha256: String(repeating: "0", count: 64))
        #expect(try plan(rule, w).findings.map(\.id) == ["payload-unknown"])
        let strict = try PayloadRule(manifest: m, parameters: PolicyParameters(["required": .bool(true)]))
        w.payloads.files = [:]
        #expect(try plan(strict, w).findings.first?.severity == .blocker)
        #expect(throws: PolicyParameterError.self) {
            try PayloadRule(manifest: m, parameters: PolicyParameters(["colour": .string("x")]))
        }
    }

    @Test func cloudbaseInitAlreadyInstalledIsConfiguredInPlaceAndItsStateCleared() throws {
        var w = try LocalWindows(
            PhonyWindows(release: .server2012R2, states: [.noAutoReboot, .cloudbaseInitInstalled]))
        let policy = try PolicyLoader.load("huawei-ims")
        let p = try w.plan(policy)
        let cb = p.actions.filter { $0.rule == "cloudbase-init" }
        #expect(
            cb.flatMap(\.changes).contains {
                $0.op == .deleteKey && $0.key.description == "Cloudbase Solutions\\Cloudbase-Init"
            })
        let conf = try #require(
            cb.flatMap(\.files).first {
                $0.path == "/Program Files/Cloudbase Solutions/Cloudbase-Init/conf/cloudbase-init.conf"
            }?.content)
        for line in [
            "username=Administrator", "groups=Administrators", "netbios_host_name_compatibility=false",
            "metadata_services=cloudbaseinit.metadata.services.httpservice.HttpService", "inject_user_password=true",
            "first_logon_behaviour=no", "real_time_clock_utc=false", "retry_count=40", "retry_count_interval=5",
        ] {
            #expect(conf.contains(line + "\r\n"), "\(line)")
        }
        #expect(conf.contains("SetHostNamePlugin") && !conf.lowercased().contains("winrm"))
        let unattend = try #require(
            cb.flatMap(\.files).first { $0.path.hasSuffix("cloudbase-init-unattend.conf") }?.content)
        #expect(!unattend.contains("SetHostNamePlugin") && unattend.contains("ExtendVolumesPlugin"))
        #expect(!p.findings.contains { $0.id == "payload-missing" })
        try w.apply(p)
        #expect(try w.plan(policy).actions.isEmpty)
    }
}

@Suite struct UninstallTests {
    @Test func oldToolsAreUninstalledAtFirstBootWhenThePolicySaysSo() throws {
        var w = try LocalWindows(
            PhonyWindows(release: .server2012R2, states: [.vmwareTools, .xenPV, .parallelsTools, .virtualBoxAdditions]))
        let yaml = "name: t\ndescription: d\nextends: huawei-ims\nparameters:\n  uninstall-old-tools: true\n"
        let policy = try PolicyLoader.parse(yaml, source: NSTemporaryDirectory() + "/t.yaml")
        let plan = try w.plan(policy)
        let steps = plan.actions.filter { $0.rule == "pv-cleanup" && $0.description.hasPrefix("first boot: uninstall") }
        // MSI packages (VMware Tools, Parallels Tools) get MsiExec /X with /qn; the Xen and VirtualBox uninstallers are
        // plain executables without a quiet command: they stay warnings.
        #expect(steps.count == 2, "\(steps.map(\.description))")
        let scripts = steps.flatMap(\.files).filter { $0.path.contains("/firstboot/scripts/30-uninstall-") }
        #expect(scripts.count == 2)
        #expect(
            scripts.contains {
                $0.content?.contains("MsiExec.exe /X{A4F5A2B1-7E2B-4B0D-9C1A-0C9F2C6E1A11} /qn /norestart") == true
            })
        #expect(scripts.allSatisfy { $0.content?.contains(" /qn /norestart") == true })
        #expect(
            scripts.contains {
                $0.content?.contains("MsiExec.exe /X{DDDA2E4C-2D68-4E8B-8A2F-6B0B7E1C3D55} /qn /norestart") == true
            })
        let left = plan.findings.filter { $0.id == "old-tools-installed" }
        #expect(
            left.count == 2 && left.allSatisfy { $0.message.contains("no unattended uninstall command") },
            "\(left.map(\.message))")
        try w.apply(plan)
        #expect(try w.plan(policy).actions.isEmpty)
    }

    /// Issue 12 item 4: the guest's DisplayName goes into the uninstall step's `rem` line; a line break in it must
    /// not start a command of its own (the step runs as SYSTEM).
    @Test func aDisplayNameCannotAddACommandToTheUninstallStep() throws {
        let code = "{A4F5A2B1-7E2B-4B0D-9C1A-0C9F2C6E1A11}"
        var spec = PhonyWindows(release: .server2016, states: [.noAutoReboot, .vmwareTools])
        spec.extraSoftware["Microsoft\\Windows\\CurrentVersion\\Uninstall\\\(code)"] = [
            "DisplayName": .string("VMware Tools\r\n& whoami > C:\\pwned.txt\n%PATH%! rem"),
            "UninstallString": .expandString("MsiExec.exe /I\(code)"),
        ]
        let w = try LocalWindows(spec)
        let policy = try PolicyLoader.parse(
            "name: t\ndescription: d\nextends: huawei-ims\nparameters:\n  uninstall-old-tools: true\n",
            source: NSTemporaryDirectory() + "/t.yaml")
        let plan = try w.plan(policy)
        let script = try #require(
            plan.fileChanges.first { $0.path.contains("/firstboot/scripts/30-uninstall-vmware-") }?.content)
        let lines = script.components(separatedBy: .newlines).map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(
            !lines.contains {
                $0.hasPrefix("&") || $0.lowercased().contains("whoami") && !$0.lowercased().hasPrefix("rem ")
            }, "\(script)")
        #expect(
            lines.contains("rem remedy: uninstall VMware Tools__ whoami _ C:\\pwned.txt__PATH__ rem _vmware_"),
            "\(script)")
        #expect(CmdLint.problems(FirstBoot.crlf(script), name: "uninstall") == [])
        #expect(script.contains("MsiExec.exe /X\(code) /qn /norestart"))
    }
}

/// The driver store numbering on a real Windows 10 1709 SYSTEM hive (regipy, MIT; see Tests/Fixtures/README.md):
/// `DriverDatabase\OemInfMap` is `ff f0` (oem0 to oem11 in use) while `DriverInfFiles` names only oem0, 2, 4, 6, 11;
/// oem3.inf is a live VMware SVGA driver.
@Suite struct RealHiveDriverStoreTests {
    /// A clean copy of the hive captured without logs: secondary sequence = primary, base-block checksum recomputed
    /// (the hive bins are untouched), as Tests/Fixtures/README.md describes.
    static func cleanHive(_ name: String) throws -> String {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/regipy")
        let out = NSTemporaryDirectory() + "/remedy-real-\(UUID().uuidString)-\(name)"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/xz")
        p.arguments = ["-dc", fixtures.appendingPathComponent("\(name).xz").path]
        #expect(FileManager.default.createFile(atPath: out, contents: nil))
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        try p.run()
        p.waitUntilExit()
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: out)))
        for i in 0..<4 { bytes[8 + i] = bytes[4 + i] }
        var sum: UInt32 = 0
        for i in stride(from: 0, to: 508, by: 4) {
            sum ^=
                UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24
        }
        for i in 0..<4 { bytes[508 + i] = UInt8(truncatingIfNeeded: sum >> (8 * UInt32(i))) }
        try Data(bytes).write(to: URL(fileURLWithPath: out))
        return out
    }

    @Test func remedyDoesNotTakeANumberOemInfMapMarks() throws {
        let path = try Self.cleanHive("SYSTEM_WIN_10_1709")
        let hive = try Hive(path: path)
        defer { hive.close() }
        let (sets, current) = try HiveReader.controlSets(hive, guest: "SYSTEM")
        let os = OSFacts(
            root: "/dev/sda2", product: "Windows 10 Pro", variant: "Client", majorVersion: 10, minorVersion: 0,
            build: "16299",
            arch: .x86_64, hostname: nil, systemRoot: "/Windows", currentControlSet: current, controlSets: sets)
        var payloads = PayloadFacts()
        payloads.virtio = try FakeTrees.resolve("iso", os)
        #expect(payloads.virtio?.selected == "w10/amd64")
        let rule = VirtioDriversRule(drivers: VirtioDriversRule.defaultDrivers, required: false, knownIssues: [])
        var facts = ImageFacts(
            image: ImageInfo(path: path, format: .raw, fileSize: 0), os: os,
            registry: try HiveReader.snapshot(
                [.system: hive], rule.requirements(for: os, payloads: payloads).filter { $0.hive == .system },
                image: path))
        facts.payloads = payloads
        for r in rule.fileRequirements(for: facts) { facts.files.files[FileSnapshot.key(r.path)] = .some(nil) }
        #expect(VirtioDriversRule.usedOemNumbers(facts) == Set(0...11))
        let names = rule.publishedNames(facts)
        #expect(Set(names.keys) == ["viostor.inf", "vioscsi.inf"] && Set(names.values) == ["oem12.inf", "oem13.inf"])
        let map = try #require(rule.oemInfMapAction(facts, published: names)?.changes.first)
        #expect(map.before == .binary([0xFF, 0xF0]) && map.after == .binary([0xFF, 0xFC]))

        // An oemN.inf file in C:\Windows\INF that no registry entry names is taken too.
        facts.files.files[FileSnapshot.key("/Windows/INF/oem12.inf")] = GuestFile(
            path: "/Windows/INF/oem12.inf", size: 1, sha256: "x")
        #expect(Set(rule.publishedNames(facts).values) == ["oem13.inf", "oem14.inf"])

        // The whole plan on the real hive: nothing published as oem3, and the map marks what is taken.
        let result = rule.evaluate(facts)
        let changes = result.actions.flatMap(\.changes)
        #expect(
            !changes.contains {
                $0.key.description.lowercased().hasSuffix("driverinffiles\\oem3.inf")
                    || $0.name?.lowercased() == "oem3.inf"
            })
        #expect(changes.contains { $0.name == "OemInfMap" && $0.after == .binary([0xFF, 0xF6]) })
        #expect(
            changes.contains {
                $0.key.description == "DriverDatabase\\DriverInfFiles\\oem13.inf" && $0.name == "Active"
            })
    }
}
