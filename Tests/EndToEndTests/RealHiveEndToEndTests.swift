import Foundation
import Guestfs
import Hivex
import RemedyCore
import RemedyFixtures
import Testing

/// Images built around real Windows SYSTEM hives (regipy's Windows 7 with two static NICs, 8.1 and 10 1709, each with
/// the phony SOFTWARE of its release): planned, applied in one shared appliance, planned again, and read back with
/// libguestfs and hivexregedit (not remedy's reader).
@Suite(.serialized) struct RealHiveEndToEndTests {
    /// `hivexregedit --export HIVE KEY`.
    static func regExport(_ hive: String, _ key: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/hivexregedit")
        p.arguments = ["--export", hive, key]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        _ = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    @Test func realWindowsHivesArePlannedAppliedAndSettle() throws {
        let f = try Fixtures.get()
        let inputs = ["--jobs", "1", "--per-appliance", "3"]
        let applyReport = f.dir + "/real-apply.json"

        let applied = try remedy(["batch", f.realDir, "--apply", "--report", applyReport] + inputs)
        #expect(applied.status == 0, "\(applied.stderr)")
        let done = try readReport(applyReport)
        #expect(
            done.entries.count == 3 && done.entries.allSatisfy { $0.status == .fixed },
            "\(done.entries.map { "\($0.path) \($0.status) \($0.error?.message ?? "")" })")
        for e in done.entries {
            #expect(e.actions.contains { $0.rule == "ide-boot" }, "\(e.path)")
            #expect(e.actions.contains { $0.rule == "nic-dhcp" } == e.path.hasSuffix("real-w7.qcow2"), "\(e.path)")
        }

        // One read-only appliance for the three disks: each re-planned (compliant, nothing to do); then, with remedy's
        // sessions closed, the SYSTEM hives read back and exported with hivexregedit.
        let (appliance, sessions) = ImageSession.openMany(
            Fixtures.realImages.map { "\(f.realDir)/\($0.file)" }, writable: false, options: Fixtures.options)
        let a = try #require(appliance)
        defer { a.close() }
        let policy = try PolicyLoader.load(PolicyLoader.defaultPolicyName)
        for (image, result) in zip(Fixtures.realImages, sessions) {
            let session = try result.get()
            let again = try session.plan(policy: policy)
            #expect(
                !again.hasChanges && again.blockers.isEmpty,
                "\(image.file): \(again.actions.map(\.description)) \(again.blockers.map(\.id))")
            session.close()
        }
        let g = a.guestfs
        let devices = try g.listDevices()
        let work = NSTemporaryDirectory() + "/remedy-real-check-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let roots = try g.inspectOS()
        for (i, (hive, _)) in Fixtures.realImages.enumerated() {
            let root = try #require(
                roots.first { $0.hasPrefix(devices[i]) }, "\(hive): no Windows found on \(devices[i])")
            try g.umountAll()
            try g.mountReadOnly(root, at: "/")
            let system = "\(work)/\(hive.rawValue)"
            try g.download(try g.caseSensitivePath("/Windows/System32/config/SYSTEM"), to: system)
            let select = try Self.regExport(system, "\\Select")
            let sets = hive == .windows7 ? ["ControlSet001", "ControlSet002"] : ["ControlSet001"]
            #expect(select.contains("\"Current\"=dword:00000001"), "\(select)")
            for cs in sets {
                // The IDE path loads at boot: Start=0 and no StartOverride demoting it.
                for name in ["atapi", "intelide", "pciide"] {
                    let svc = try Self.regExport(system, "\\\(cs)\\Services\\\(name)")
                    #expect(svc.contains("\"Start\"=dword:00000000"), "\(hive) \(cs) \(name): \(svc)")
                    #expect(
                        !svc.lowercased().contains("\\startoverride]"), "\(hive) \(cs) \(name) is still demoted: \(svc)"
                    )
                }
                if hive != .windows7 {
                    // Overrides of drivers the platform does not need are Windows' own and stay.
                    #expect(
                        try Self.regExport(system, "\\\(cs)\\Services\\stornvme").lowercased().contains(
                            "\\stornvme\\startoverride]"), "\(hive)")
                }
            }
            if hive == .windows7 {
                for cs in sets {
                    let routes = try Self.regExport(system, "\\\(cs)\\services\\Tcpip\\Parameters\\PersistentRoutes")
                    #expect(
                        !routes.contains("0.0.0.0,0.0.0.0,10.3.58.1")
                            && !routes.contains("0.0.0.0,0.0.0.0,192.168.1.1"), "\(routes)")
                    let nsi = "\\\(cs)\\Control\\Nsi\\{eb004a00-9b1a-11d4-9123-0050047759bc}"
                    #expect(
                        !(try Self.regExport(system, nsi + "\\10")).contains("\"0000000600000600c0a8017b00000000\""))
                    #expect(!(try Self.regExport(system, nsi + "\\16")).contains("0000000600000600c0a8010100000000\""))
                    for guid in ["{698E50A9-4F58-4D86-B61D-F42E58DCACF6}", "{6AAFC9A9-0542-4DB2-8760-CCFFA953737C}"] {
                        let iface = try Self.regExport(
                            system, "\\\(cs)\\services\\Tcpip\\Parameters\\Interfaces\\\(guid)")
                        #expect(iface.contains("\"EnableDHCP\"=dword:00000001"), "\(cs) \(guid): \(iface)")
                    }
                }
            }
        }
    }
}
