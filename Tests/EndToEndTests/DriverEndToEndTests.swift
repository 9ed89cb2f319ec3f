import Foundation
import Guestfs
import Hivex
import RemedyCore
import RemedyFixtures
import Testing

/// VirtIO drivers, the first-boot runner and Cloudbase-Init, injected into
/// phony 2008 (x86), 2008 R2, 2012 R2, 2016 and 2022 images from a fake
/// virtio-win ISO built by the suite: planned, applied in one shared
/// appliance, read back from the images, planned again.
@Suite(.serialized) struct DriverEndToEndTests {
    /// hostname -> (virtio-win directory, arch directory, Windows 8 or later, Cloudbase-Init already installed).
    static let driverImages: [String: (os: String, arch: String, win8: Bool, cloudbaseInstalled: Bool)] = [
        "D-2008": ("2k8", "x86", false, false), "D-2008R2": ("2k8R2", "amd64", false, false),
        "D-2012R2": ("2k12R2", "amd64", true, true), "D-2016": ("2k16", "amd64", true, false),
        "D-2022": ("2k22", "amd64", true, false),
    ]

    @Test func virtioDriversFirstBootAndCloudbaseInitAreInjectedForEachWindows() throws {
        let f = try Fixtures.get()
        let inputs = [
            "--virtio-win", f.virtioISO, "--payload", "cloudbase-init=\(f.cloudbaseMSI)", "--per-appliance", "5",
            "--jobs", "1",
        ]
        let planReport = f.dir + "/drivers-plan.json", applyReport = f.dir + "/drivers-apply.json"

        let planned = try remedy(["batch", f.driversDir, "--report", planReport] + inputs)
        #expect(planned.status == 2, "\(planned.stderr)")
        let plan = try readReport(planReport)
        #expect(
            plan.entries.count == 5 && plan.entries.allSatisfy { $0.status == .pending },
            "\(plan.entries.map { "\($0.path) \($0.status) \($0.error?.message ?? "")" })")
        for e in plan.entries {
            let files = e.actions.flatMap(\.files).map(\.path)
            #expect(files.contains { $0.hasSuffix("/Windows/System32/drivers/viostor.sys") }, "\(e.path)")
            #expect(
                files.contains("/Windows/remedy/firstboot/run.cmd")
                    && files.contains("/Windows/remedy/firstboot/scripts/20-virtio-drivers.cmd"))
            #expect(e.actions.contains { $0.rule == "cloudbase-init" }, "\(e.path)")
        }

        let applied = try remedy(["batch", f.driversDir, "--apply", "--report", applyReport] + inputs)
        #expect(applied.status == 0, "\(applied.stderr)")
        let done = try readReport(applyReport)
        #expect(
            done.entries.allSatisfy { $0.status == .fixed },
            "\(done.entries.map { "\($0.path) \($0.status) \($0.error?.message ?? "")" })")
        // apply did exactly what plan showed.
        for e in done.entries {
            let p = try #require(plan.entries.first { $0.path == e.path })
            #expect(p.actions == e.actions, "\(e.path): apply differs from the plan")
        }

        // In one appliance: every image re-planned with the same inputs (compliant, nothing to do), then, with
        // remedy's sessions closed, read back with libguestfs and libhivex.
        let paths = try FileManager.default.contentsOfDirectory(atPath: f.driversDir).sorted().map {
            "\(f.driversDir)/\($0)"
        }
        let (appliance, sessions) = ImageSession.openMany(
            paths, writable: false, options: Fixtures.options,
            inputs: PayloadInputs(virtioWin: f.virtioISO, files: ["cloudbase-init": f.cloudbaseMSI]))
        let a = try #require(appliance)
        defer { a.close() }
        let policy = try PolicyLoader.load(PolicyLoader.defaultPolicyName)
        for (path, result) in zip(paths, sessions) {
            let session = try result.get()
            let again = try session.plan(policy: policy)
            #expect(
                !again.hasChanges && again.blockers.isEmpty,
                "\(path): \(again.actions.map(\.description)) \(again.blockers.map(\.id))")
            session.close()
        }
        try Self.checkInjected(f, g: a.guestfs)
    }

    /// Reads every image back with libguestfs and libhivex, independently of remedy's planner, in `g` (an appliance
    /// carrying every image of `f.driversDir`).
    static func checkInjected(_ f: Fixtures, g: Guestfs) throws {
        let work = NSTemporaryDirectory() + "/remedy-drivers-check-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        var seen: Set<String> = []
        for root in try g.inspectOS() {
            let host = try g.inspectHostname(root)
            guard let want = driverImages[host] else { continue }
            seen.insert(host)
            try g.umountAll()
            try g.mountReadOnly(root, at: "/")
            func sha(_ guest: String) throws -> String? {
                guard let p = try? g.caseSensitivePath(guest), (try? g.isFile(p)) == true else { return nil }
                return try g.checksum("sha256", p)
            }
            func text(_ guest: String) throws -> String {
                TextEncoding.decode(try g.readFile(try g.caseSensitivePath(guest))).0
            }
            // The right OS directory's files, where the README says.
            let source = "\(f.virtioTree)/viostor/\(want.os)/\(want.arch)"
            let expected = try SHA256Hex.ofFile("\(source)/viostor.sys").sha256
            #expect(
                try sha("/Windows/System32/drivers/viostor.sys") == expected,
                "\(host): viostor.sys is not the \(want.os)/\(want.arch) one")
            #expect(
                try sha("/Windows/Drivers/VirtIO/viostor.inf") == SHA256Hex.ofFile("\(source)/viostor.inf").sha256,
                "\(host)")
            #expect(
                try sha("/Windows/Drivers/VirtIO/netkvm.sys")
                    == SHA256Hex.ofFile("\(f.virtioTree)/NetKVM/\(want.os)/\(want.arch)/netkvm.sys").sha256, "\(host)")
            #expect(try sha("/Windows/Drivers/VirtIO/viostor.pdb") == nil, "\(host): debug symbols are not injected")
            // First-boot runner, registered as a startup script.
            #expect(
                try text("/Windows/remedy/firstboot/scripts/20-virtio-drivers.cmd").contains(
                    "pnputil -i -a \"%SystemRoot%\\Drivers\\VirtIO\\viostor.inf\""))
            #expect(try text("/Windows/remedy/firstboot/run.cmd").contains("PendingFileRenameOperations"))
            // nothing remedy wrote is writable by users; its state is not readable by them
            try NTFSSecurity.check(g, host: host)
            #expect(
                try text("/Windows/System32/GroupPolicy/Machine/Scripts/scripts.ini").contains(
                    "0CmdLine=C:\\Windows\\remedy\\firstboot\\run.cmd"))
            #expect(
                try text("/Windows/System32/GroupPolicy/gpt.ini").contains("{42B5FAAE-6536-11D2-AE5A-0000F87571E3}"))
            // Cloudbase-Init: staged with its first-boot step, or configured in place where it is installed.
            if want.cloudbaseInstalled {
                let conf = try text("/Program Files/Cloudbase Solutions/Cloudbase-Init/conf/cloudbase-init.conf")
                #expect(conf.contains("first_logon_behaviour=no") && conf.contains("retry_count=40"), "\(host)")
                #expect(try sha("/Windows/remedy/firstboot/scripts/50-cloudbase-init.cmd") == nil)
            } else {
                #expect(
                    try sha("/Windows/remedy/payloads/cloudbase-init/cloudbase-init.msi")
                        == SHA256Hex.ofFile(f.cloudbaseMSI).sha256, "\(host)")
                #expect(
                    try text("/Windows/remedy/payloads/cloudbase-init/files/cloudbase-init.conf").contains(
                        "metadata_services=cloudbaseinit.metadata.services.httpservice.HttpService"))
                #expect(
                    try text("/Windows/remedy/firstboot/scripts/50-cloudbase-init.cmd").contains(
                        "msiexec /i \"C:\\Windows\\remedy\\payloads\\cloudbase-init\\cloudbase-init.msi\" /qn"))
            }
            // The registry, read with libhivex.
            try g.download(try g.caseSensitivePath("/Windows/System32/config/SYSTEM"), to: "\(work)/\(host)-SYSTEM")
            try g.download(try g.caseSensitivePath("/Windows/System32/config/SOFTWARE"), to: "\(work)/\(host)-SOFTWARE")
            let system = try Hive(path: "\(work)/\(host)-SYSTEM"), software = try Hive(path: "\(work)/\(host)-SOFTWARE")
            defer {
                system.close()
                software.close()
            }
            func value(_ h: Hive, _ key: String, _ name: String) throws -> RegistryValue? {
                guard let n = try h.node(at: key) else { return nil }
                return try h.value(of: n, named: name)
            }
            for svc in ["viostor", "vioscsi"] {
                #expect(try value(system, "ControlSet001\\Services\\\(svc)", "Start") == .dword(0), "\(host) \(svc)")
                #expect(
                    try value(system, "ControlSet001\\Services\\\(svc)", "ImagePath")
                        == .expandString("System32\\drivers\\\(svc).sys"))
                #expect(try value(system, "ControlSet001\\Services\\\(svc)", "Group") == .string("SCSI miniport"))
                // The ImagePath names the file, with the bytes of virtio-win's driver.
                #expect(
                    try sha("/Windows/System32/drivers/\(svc).sys")
                        == SHA256Hex.ofFile("\(f.virtioTree)/\(svc)/\(want.os)/\(want.arch)/\(svc).sys").sha256,
                    "\(host) \(svc)")
                // The service-install section's AddReg (real INF: [pnpsafe_pci_addreg]) and the event source, in every control set.
                for cs in ["ControlSet001", "ControlSet002"] {
                    #expect(
                        try value(system, "\(cs)\\Services\\\(svc)\\Parameters\\PnpInterface", "5") == .dword(1),
                        "\(host) \(cs) \(svc)")
                    #expect(
                        try value(system, "\(cs)\\Services\\\(svc)\\Parameters", "BusType")
                            == .dword(svc == "viostor" ? 1 : 0xA), "\(host) \(svc)")
                    #expect(
                        try value(system, "\(cs)\\Services\\EventLog\\System\\\(svc)", "EventMessageFile")
                            == .expandString("%SystemRoot%\\System32\\IoLogMsg.dll"), "\(host) \(svc)")
                    #expect(
                        try value(system, "\(cs)\\Services\\EventLog\\System\\\(svc)", "TypesSupported") == .dword(7),
                        "\(host) \(svc)")
                }
            }
            let id = "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00"
            if want.win8 {
                let node = try #require(
                    try system.node(at: "DriverDatabase\\DeviceIds\\\(id)"), "\(host): no DriverDatabase device id")
                let published = try #require(try system.values(of: node).first?.name)
                let label = try value(system, "DriverDatabase\\DriverInfFiles\\\(published)", "Active")
                guard case .string(let l)? = label else {
                    Issue.record("\(host): \(published) has no Active package")
                    continue
                }
                #expect(
                    try value(system, "DriverDatabase\\DriverPackages\\\(l)\\Configurations\\scsi_inst", "Service")
                        == .string("viostor"))
                #expect(try sha("/Windows/INF/\(published)") == SHA256Hex.ofFile("\(source)/viostor.inf").sha256)
                #expect(try sha("/Windows/System32/DriverStore/FileRepository/\(l)/viostor.sys") == expected, "\(host)")
                // The number taken is marked in OemInfMap (most significant bit first).
                if let n = Int(published.dropFirst(3).dropLast(4)),
                    case .binary(let map)? = try value(system, "DriverDatabase", "OemInfMap")
                {
                    #expect(
                        map.count > n / 8 && map[n / 8] & (0x80 >> UInt8(n % 8)) != 0,
                        "\(host): \(published) not marked in \(map)")
                } else {
                    Issue.record("\(host): no OemInfMap marking \(published)")
                }
                #expect(
                    try system.node(at: "ControlSet001\\Control\\CriticalDeviceDatabase\\pci#ven_1af4&dev_1001") == nil)
            } else {
                for key in [
                    id.lowercased().replacingOccurrences(of: "\\", with: "#"), "pci#ven_1af4&dev_1001",
                    "pci#ven_1af4&dev_1004",
                ] {
                    #expect(
                        try value(system, "ControlSet001\\Control\\CriticalDeviceDatabase\\\(key)", "Service") != nil,
                        "\(host) \(key)")
                }
                #expect(try system.node(at: "DriverDatabase\\DeviceIds") == nil)
            }
            guard
                case .expandString(let devicePath)? = try value(
                    software, "Microsoft\\Windows\\CurrentVersion", "DevicePath")
            else {
                Issue.record("\(host): DevicePath")
                continue
            }
            #expect(devicePath.hasSuffix(";%SystemRoot%\\Drivers\\VirtIO"))
            if want.cloudbaseInstalled {
                #expect(
                    try software.node(at: "Cloudbase Solutions\\Cloudbase-Init") == nil,
                    "\(host): stale Cloudbase-Init state kept")
            }
            if host == "D-2008R2" || host == "D-2016" {
                #expect(
                    try value(system, "ControlSet001\\Services\\Tcpip\\Parameters", "EnableRSS") == .dword(1), "\(host)"
                )
            }
        }
        #expect(seen == Set(driverImages.keys), "\(seen)")
    }

    @Test func aVirtioWinWithoutThisWindowsOrMissingIsRefusedAndTheImageIsUntouched() throws {
        let f = try Fixtures.get()
        let before = try fileBytes(f.driversWrongOS)
        let wrong = try remedy(["apply", f.driversWrongOS, "--virtio-win", f.virtioOnly2k19, "--format", "json"])
        #expect(wrong.status == 1)
        let doc = try json(wrong.stdout)
        #expect(doc["code"] as? String == "virtio-win-no-match", "\(wrong.stdout)")
        #expect(
            wrong.stderr.contains(f.driversWrongOS) && wrong.stderr.contains("2k16/amd64")
                && wrong.stderr.contains("it has: 2k19/amd64"), "\(wrong.stderr)")
        for bad in ["/nonexistent/virtio-win", f.cloudbaseMSI] {
            let r = try remedy(["apply", f.driversWrongOS, "--virtio-win", bad, "--format", "json"])
            #expect(r.status == 1)
            #expect(try json(r.stdout)["code"] as? String == "virtio-win-invalid", "\(bad): \(r.stdout)")
            #expect(r.stderr.contains(bad), "\(r.stderr)")
        }
        #expect(try fileBytes(f.driversWrongOS) == before, "the image changed")
        // The packaged tree (drivers/by-driver and drivers/by-os) works like the ISO.
        let packaged = try remedy(["plan", f.driversWrongOS, "--virtio-win", f.virtioPackaged, "--format", "json"])
        #expect(packaged.status == 2, "\(packaged.stderr)")
        let plan = try RemedyJSON.decoder().decode(Plan.self, from: Data(packaged.stdout.utf8))
        #expect(
            plan.actions.contains {
                $0.description == "inject viostor.inf 100.94.104.24000 (SCSIAdapter) from virtio-win 2k16/amd64"
            })
        #expect(
            plan.fileChanges.contains { $0.source == "virtio-win:drivers/by-driver/viostor/2k16/amd64/viostor.sys" })
        #expect(try fileBytes(f.driversWrongOS) == before)
    }
}
