import Foundation
import Hivex
import RemedyFixtures
import Testing

@testable import RemedyCore
@testable import RemedyPlanning

/// `hivexregedit --export HIVE KEY`: the hive read back by hivex's own tool, not by remedy.
func hivexExport(_ hive: String, _ key: String) throws -> String {
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

/// The key headers (`[\ControlSet001\...]`) of an export, lowercased.
func exportedKeys(_ export: String) -> Set<String> {
    Set(
        export.split(separator: "\n").filter { $0.hasPrefix("[") }.map {
            $0.lowercased().trimmingCharacters(in: .whitespacesAndNewlines)
        })
}

/// Rules run on real Windows SYSTEM hives (regipy), paired with the phony SOFTWARE of the matching release.
@Suite struct RealHiveRuleTests {
    static let idePath = ["atapi", "intelide", "pciide"]

    /// On real Windows 8.1 and 10 hives, atapi/intelide/pciide have Start=0 and StartOverride\0=3: they do not load.
    /// image-metadata alone (nothing applied) must not call such an image bootable from IDE.
    @Test(arguments: [RealSystemHive.windows81, .windows10])
    func demotedIdeDriversAreNotABootPath(hive: RealSystemHive) throws {
        let w = try LocalWindows(.real(hive))
        let p = try PolicyLoader.parse("name: m\ndescription: d\nrules:\n  - id: image-metadata\n", source: "m.yaml")
        let plan = try w.plan(p)
        #expect(plan.properties["hw_disk_bus"] == nil, "\(plan.properties)")
        #expect(
            plan.findings.contains { $0.id == "no-boot-disk-driver" && $0.severity == .blocker }, "\(plan.findings)")
    }

    /// ide-boot lifts the override in every control set; after apply (read back with hivexregedit) no IDE-path driver
    /// is demoted, every other override Windows wrote is untouched, and a re-plan is clean.
    @Test(arguments: [RealSystemHive.windows81, .windows10, .windows10v1709])
    func ideBootLiftsStartOverride(hive: RealSystemHive) throws {
        var w = try LocalWindows(.real(hive, states: [.noAutoReboot]))
        let original = w.hives[.system]!
        let sets = w.os.orderedControlSets.map(\.name)
        let before = try hivexExport(original, "\\")
        let overridden = Self.idePath.filter { name in
            sets.contains { exportedKeys(before).contains("[\\\($0)\\services\\\(name)\\startoverride]".lowercased()) }
        }
        #expect(!overridden.isEmpty)
        let p = try PolicyLoader.parse(
            "name: i\ndescription: d\nrules:\n  - id: ide-boot\n  - id: image-metadata\n", source: "i.yaml")
        let plan = try w.plan(p)
        let deleted = plan.changes.filter { $0.op == .deleteKey }.map(\.key.description)
        #expect(
            deleted
                == sets.flatMap { cs in overridden.map { "\(cs)\\Services\\\($0)\\StartOverride" } }.filter { path in
                    exportedKeys(before).contains("[\\\(path)]".lowercased())
                }, "\(deleted)")
        #expect(plan.properties["hw_disk_bus"] == "ide", "\(plan.properties)")
        #expect(!plan.findings.contains { $0.id == "no-boot-disk-driver" })
        try w.apply(plan)

        let after = try hivexExport(w.hives[.system]!, "\\")
        let keysBefore = exportedKeys(before), keysAfter = exportedKeys(after)
        for cs in sets {
            for name in Self.idePath {
                #expect(
                    !keysAfter.contains("[\\\(cs)\\services\\\(name)\\startoverride]".lowercased()), "\(cs) \(name)")
                let svc = try hivexExport(w.hives[.system]!, "\\\(cs)\\Services\\\(name)")
                #expect(svc.contains("\"Start\"=dword:00000000"), "\(svc)")
            }
        }
        // Every other key is still there (stornvme, storahci, LSI_SAS... keep their overrides).
        let removed = keysBefore.subtracting(keysAfter)
        #expect(
            removed.allSatisfy { k in Self.idePath.contains { k.hasSuffix("\\\($0)\\startoverride]") } },
            "\(removed.sorted())")
        #expect(
            keysBefore.contains { $0.hasSuffix("\\stornvme\\startoverride]") }
                == keysAfter.contains { $0.hasSuffix("\\stornvme\\startoverride]") })

        let again = try w.plan(p)
        #expect(again.actions.isEmpty, "\(again.actions.map(\.description))")
        #expect(again.properties["hw_disk_bus"] == "ide")
    }
}

@Suite struct Sha2KnownIssueTests {
    func plan(_ packages: [String]) throws -> Plan {
        var spec = PhonyWindows(release: .server2008R2, states: [.noAutoReboot])
        for kb in packages {
            spec.extraSoftware[
                "Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\Packages\\Package_for_\(kb)~31bf3856ad364e35~amd64~~6.1.3.2"
            ] = ["CurrentState": .dword(0x70)]
        }
        var w = try LocalWindows(spec)
        w.payloads.virtio = try FakeTrees.resolve("iso", w.os)
        return try w.plan(try PolicyLoader.load("huawei-ims"))
    }

    /// Only KB4474419 (SHA-2 code signing support) lets Windows 7 / 2008 R2 verify SHA-2 driver signatures; the
    /// servicing stack update KB4490628 alone is not enough.
    @Test func onlyTheSha2UpdateSatisfiesTheKnownIssue() throws {
        func warned(_ p: Plan) -> Bool {
            p.findings.contains { $0.id == "virtio-win-known-issue" && $0.message.contains("KB4474419") }
        }
        #expect(warned(try plan([])))
        #expect(warned(try plan(["KB4490628"])))
        #expect(!warned(try plan(["KB4474419"])))
        #expect(!warned(try plan(["KB4490628", "KB4474419"])))
    }
}

/// nic-dhcp on the real Windows 7 hive with two static NICs: the stale default routes and persisted addresses go,
/// the user's own persistent routes stay.
@Suite struct RealStaticNicTests {
    static let nsi = "Control\\Nsi\\{eb004a00-9b1a-11d4-9123-0050047759bc}"
    /// A user-added route (route -p add 10.0.0.0 mask 255.0.0.0 10.3.58.254), a default route via a gateway no
    /// interface has, and a persisted non-default route of the 192.168.1.123 interface (LUID 0000000600000600).
    static let userRoutes = [
        "\"10.0.0.0,255.0.0.0,10.3.58.254,1\"=hex(1):00,00",
        "\"0.0.0.0,0.0.0.0,172.16.0.1,-1\"=hex(1):00,00",
    ]
    static let userNsiRoute =
        "\"0a0000000000000000000000000000000000000000000000000000060000060000000006000006000a033afe00000000\"=hex(3):ff,ff"

    func merge(_ hive: String, _ text: String) throws {
        let reg = hive + ".user.reg"
        try Data(("Windows Registry Editor Version 5.00\r\n\r\n" + text).utf8).write(to: URL(fileURLWithPath: reg))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/hivexregedit")
        p.arguments = ["--merge", hive, reg]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
    }

    @Test func staticLeftoversGoUserRoutesStay() throws {
        var w = try LocalWindows(.real(.windows7, states: [.noAutoReboot]))
        let system = w.hives[.system]!
        var text = ""
        for cs in ["ControlSet001", "ControlSet002"] {
            text +=
                "[\\\(cs)\\services\\Tcpip\\Parameters\\PersistentRoutes]\r\n"
                + Self.userRoutes.joined(separator: "\r\n") + "\r\n\r\n"
            text += "[\\\(cs)\\\(Self.nsi)\\16]\r\n\(Self.userNsiRoute)\r\n\r\n"
        }
        try merge(system, text)
        let before = try hivexExport(system, "\\ControlSet001\\services\\Tcpip\\Parameters\\PersistentRoutes")
        #expect(
            before.contains("\"0.0.0.0,0.0.0.0,10.3.58.1,-1\"")
                && before.contains("\"0.0.0.0,0.0.0.0,192.168.1.1,-1\""), "\(before)")

        let p = try PolicyLoader.parse("name: n\ndescription: d\nrules:\n  - id: nic-dhcp\n", source: "n.yaml")
        let plan = try w.plan(p)
        #expect(plan.actions.count == 4, "\(plan.actions.map(\.description))")
        #expect(
            plan.actions.allSatisfy { $0.description.contains("persisted addresses removed") },
            "\(plan.actions.map(\.description))")
        try w.apply(plan)

        let after = w.hives[.system]!
        for cs in ["ControlSet001", "ControlSet002"] {
            let routes = try hivexExport(after, "\\\(cs)\\services\\Tcpip\\Parameters\\PersistentRoutes")
            #expect(!routes.contains("10.3.58.1,") && !routes.contains("192.168.1.1,"), "\(routes)")
            for user in Self.userRoutes { #expect(routes.contains(user), "\(user) gone: \(routes)") }
            let addresses = try hivexExport(after, "\\\(cs)\\\(Self.nsi)\\10")
            #expect(
                !addresses.contains("\"0000000600000600c0a8017b00000000\"")
                    && !addresses.contains("\"00000007000006000a033a0500000000\""), "\(addresses)")
            let nsiRoutes = try hivexExport(after, "\\\(cs)\\\(Self.nsi)\\16")
            #expect(
                !nsiRoutes.contains("c0a8010100000000\"") && !nsiRoutes.contains("0a033a0100000000\""), "\(nsiRoutes)")
            #expect(nsiRoutes.contains(Self.userNsiRoute), "\(nsiRoutes)")
            // The NSI store's other objects are untouched.
            #expect(
                try hivexExport(after, "\\\(cs)\\\(Self.nsi)\\7")
                    == (try hivexExport(system, "\\\(cs)\\\(Self.nsi)\\7")))
            let iface = try hivexExport(
                after, "\\\(cs)\\services\\Tcpip\\Parameters\\Interfaces\\{6AAFC9A9-0542-4DB2-8760-CCFFA953737C}")
            #expect(iface.contains("\"EnableDHCP\"=dword:00000001"), "\(iface)")
        }
        let again = try w.plan(p)
        #expect(again.actions.isEmpty, "\(again.actions.map(\.description))")
    }
}

/// Every shipped policy, planned, applied and re-planned on every real SYSTEM hive (no appliance: the hive files
/// as apply edits them). The end-to-end version, on disk images, is in EndToEndTests/RealHiveEndToEndTests.
@Suite struct RealHivePolicyTests {
    @Test(arguments: RealSystemHive.allCases)
    func everyPolicySettlesOnARealHive(hive: RealSystemHive) throws {
        for name in ["huawei-ims", "openstack-kvm", "azure"] {
            var w = try LocalWindows(.real(hive))
            let policy = try PolicyLoader.load(name)
            let plan = try w.plan(policy)
            #expect(!plan.actions.isEmpty, "\(hive) \(name)")
            #expect(!plan.findings.contains { $0.id == "no-boot-disk-driver" }, "\(hive) \(name): \(plan.findings)")
            try w.apply(plan)
            let again = try w.plan(policy)
            #expect(again.actions.isEmpty, "\(hive) \(name) after apply: \(again.actions.map(\.description))")
        }
    }
}
