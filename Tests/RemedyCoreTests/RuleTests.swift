import Foundation
import Hivex
import RemedyFixtures
import Testing

@testable import RemedyCore
@testable import RemedyPlanning

/// A phony Windows as real hive files on the host (written with libhivex
/// from the same description the image factory uses), planned and applied
/// with the same code as `remedy plan` / `remedy apply`, minus the appliance.
struct LocalWindows {
    let spec: PhonyWindows
    let dir: String
    var hives: [HiveName: String]
    let os: OSFacts

    init(_ spec: PhonyWindows) throws {
        self.spec = spec
        dir = NSTemporaryDirectory() + "/remedy-local-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        hives = [.system: dir + "/SYSTEM", .software: dir + "/SOFTWARE", .sam: dir + "/SAM"]
        try spec.writeSystemHive(
            to: hives[.system]!, mountedDevice: [0x12, 0x34, 0x56, 0x78, 0, 0x10, 0, 0, 0, 0, 0, 0])
        try spec.softwareHive().write(to: hives[.software]!)
        try spec.samHive().write(to: hives[.sam]!)
        let system = try Hive(path: hives[.system]!)
        defer { system.close() }
        let (sets, current) = try HiveReader.controlSets(system, guest: "SYSTEM")
        os = OSFacts(
            root: "/dev/sda2", product: spec.release.productName, variant: "Server",
            majorVersion: spec.release.version.major, minorVersion: spec.release.version.minor,
            build: spec.release.build,
            arch: spec.arch, hostname: spec.hostname, systemRoot: "/Windows", currentControlSet: current,
            controlSets: sets,
            firmware: spec.firmware, partitionTable: spec.firmware == .uefi ? .gpt : .msdos)
    }

    func facts(_ requirements: [RegistryRequirement]) throws -> ImageFacts {
        var open: [HiveName: Hive] = [:]
        defer { open.values.forEach { $0.close() } }
        for (name, path) in hives { open[name] = try Hive(path: path) }
        return ImageFacts(
            image: ImageInfo(path: dir, format: .raw, fileSize: 0), os: os,
            registry: try HiveReader.snapshot(open, requirements, image: dir))
    }

    /// The image's files as far as tests put them there (and apply writes them).
    var files = FileSnapshot()
    /// What the run was given to inject.
    var payloads = PayloadFacts()

    func plan(_ policy: Policy) throws -> Plan {
        var f = try facts(Planner.requirements(policy: policy, os: os, payloads: payloads))
        f.payloads = payloads
        for r in Planner.fileRequirements(policy: policy, facts: f) {
            let key = FileSnapshot.key(r.path)
            f.files.files[key] = files.files[key] ?? .some(nil)
        }
        return Planner.plan(facts: f, policy: policy)
    }

    /// Applies the plan's changes to the hive files, as apply does before uploading, and its file changes to `files`.
    mutating func apply(_ plan: Plan) throws {
        for c in plan.fileChanges {
            #expect(files.file(c.path)?.sha256 == c.before, "\(c.path): planned against another file")
            files.apply(c)
        }
        for (hive, newFile) in try Applier.prepare(plan.changes, localHives: hives, image: dir) {
            let next = dir + "/\(hive.rawValue).\(UUID().uuidString)"
            try FileManager.default.moveItem(atPath: newFile, toPath: next)
            hives[hive] = next
        }
    }

    func value(_ hive: HiveName, _ key: String, _ name: String) throws -> RegistryValue? {
        let h = try Hive(path: hives[hive]!)
        defer { h.close() }
        guard let node = try h.node(at: key) else { return nil }
        return try h.value(of: node, named: name)
    }
}

let everyOldPlatform: Set<PhonyState> = [.vmwareTools, .xenPV, .parallelsTools, .virtualBoxAdditions]
let mouseClass = "{4D36E96F-E325-11CE-BFC1-08002BE10318}"
let keyboardClass = "{4D36E96B-E325-11CE-BFC1-08002BE10318}"
let diskClass = "{4D36E967-E325-11CE-BFC1-08002BE10318}"

@Suite struct BuiltinRuleTests {
    /// Rules that act, by state, for a Windows that is otherwise clean under huawei-ims.
    @Test(arguments: [
        (PhonyState.vmwareTools, ["input-devices", "pv-cleanup"]),
        (.xenPV, ["input-devices", "pv-cleanup"]),
        (.parallelsTools, ["input-devices", "pv-cleanup"]),
        (.virtualBoxAdditions, ["input-devices", "pv-cleanup"]),
        (.ideDisabled, ["ide-boot"]),
        (.deviceInstallRestricted, ["driver-restrictions"]),
        (.rdpEnabled, []),
    ])
    func eachBrokenStateIsFixedByItsRule(state: PhonyState, rules: [String]) throws {
        for release in [WindowsRelease.server2008R2, .server2016] {
            var w = try LocalWindows(PhonyWindows(release: release, states: [state, .noAutoReboot]))
            let policy = try PolicyLoader.load("huawei-ims")
            let plan = try w.plan(policy)
            #expect(
                Set(plan.actions.map(\.rule)) == Set(rules), "\(release) \(state): \(plan.actions.map(\.description))")
            #expect(!plan.findings.contains { $0.severity == .blocker }, "\(plan.findings)")
            try w.apply(plan)
            let again = try w.plan(policy)
            #expect(again.actions.isEmpty, "\(release) \(state) after apply: \(again.actions.map(\.description))")
        }
    }

    @Test func aCleanImageNeedsNothing() throws {
        let w = try LocalWindows(PhonyWindows(release: .server2012R2, states: [.noAutoReboot]))
        let plan = try w.plan(try PolicyLoader.load("huawei-ims"))
        #expect(plan.actions.isEmpty, "\(plan.actions.map(\.description))")
        // The note that a password's complexity cannot be read offline, and the warnings that without
        // virtio-win and a Cloudbase-Init MSI the image keeps booting from IDE, without multi-queue or Cloudbase-Init.
        #expect(
            plan.findings.map(\.id) == [
                "multi-queue-no-driver", "payload-missing", "virtio-win-missing", "password-complexity",
            ], "\(plan.findings)")
        #expect(plan.properties["hw_disk_bus"] == "ide")
    }

    @Test func everythingBrokenAtOnceIsPlannedExactly() throws {
        var w = try LocalWindows(
            PhonyWindows(
                release: .server2008R2,
                nics: [.staticIP("{11111111-2222-3333-4444-555555555555}", "10.9.8.7", gateway: "10.9.8.1")],
                states: everyOldPlatform.union([.ideDisabled, .deviceInstallRestricted])))
        let policy = try PolicyLoader.load("huawei-ims")
        let plan = try w.plan(policy)
        func targets(_ rule: String) -> [String] { plan.actions.filter { $0.rule == rule }.compactMap(\.target) }
        let sets = ["ControlSet001", "ControlSet002"]
        #expect(
            targets("nic-dhcp") == ["{11111111-2222-3333-4444-555555555555}", "{11111111-2222-3333-4444-555555555555}"])
        let disabled = [
            "prl_fs", "prl_mouf", "prl_strg", "pvscsi", "VBoxGuest", "VBoxMouse", "vmhgfs", "vmmouse", "vmxnet3ndis6",
            "xenbus", "xenbus_monitor", "xenfilt", "xennet", "xenvbd",
        ]
        #expect(targets("pv-cleanup") == disabled + disabled)
        #expect(
            plan.actions.filter { $0.rule == "pv-cleanup" }.allSatisfy {
                $0.changes.count == 1 && $0.changes[0].name == "Start" && $0.changes[0].after == .dword(4)
            })
        // Keyboard (vmkbd), Mouse (VBoxMouse, vmmouse), DiskDrive (prl_strg), HDC and System (XENFILT), per control set.
        #expect(plan.actions.filter { $0.rule == "input-devices" }.count == 10)
        let ide = plan.actions.filter { $0.rule == "ide-boot" }
        #expect(ide.count == 2 * (3 + 7), "\(ide.map(\.description))")
        #expect(targets("crash-settings") == sets)
        let restrictions = plan.changes.filter { $0.hive == .software }
        #expect(restrictions.map { $0.name! } == ["DenyUnspecified", "DenyDeviceIDs"])
        #expect(restrictions.allSatisfy { $0.after == .dword(0) })
        #expect(plan.findings.filter { $0.id == "old-tools-installed" }.count == 4)
        #expect(plan.blockers.isEmpty, "\(plan.blockers)")
        #expect(plan.properties["hw_disk_bus"] == "ide")
        #expect(plan.properties["__os_bit"] == "64")
        #expect(plan.properties["hw_firmware_type"] == "bios")

        try w.apply(plan)
        for cs in sets {
            #expect(
                try w.value(.system, "\(cs)\\Control\\Class\\\(mouseClass)", "UpperFilters")
                    == .multiString(["mouclass"]))
            #expect(
                try w.value(.system, "\(cs)\\Control\\Class\\\(keyboardClass)", "UpperFilters")
                    == .multiString(["kbdclass"]))
            #expect(try w.value(.system, "\(cs)\\Control\\Class\\\(diskClass)", "LowerFilters") == nil)
            #expect(
                try w.value(.system, "\(cs)\\Control\\Class\\\(diskClass)", "UpperFilters") == .multiString(["PartMgr"])
            )
            #expect(try w.value(.system, "\(cs)\\Services\\xenfilt", "Start") == .dword(4))
            #expect(try w.value(.system, "\(cs)\\Services\\intelide", "Start") == .dword(0))
            #expect(
                try w.value(.system, "\(cs)\\Control\\CriticalDeviceDatabase\\pci#ven_8086&dev_7010", "Service")
                    == .string("intelide"))
            #expect(
                try w.value(.system, "\(cs)\\Control\\CriticalDeviceDatabase\\gendisk", "ClassGUID")
                    == .string(diskClass))
            #expect(try w.value(.system, "\(cs)\\Control\\CrashControl", "AutoReboot") == .dword(0))
        }
        let again = try w.plan(policy)
        #expect(again.actions.isEmpty, "\(again.actions.map(\.description))")
    }

    @Test func windows8AndLaterGetNoCriticalDeviceDatabaseEntries() throws {
        let w = try LocalWindows(PhonyWindows(release: .server2012, states: [.ideDisabled, .noAutoReboot]))
        let plan = try w.plan(try PolicyLoader.load("huawei-ims"))
        #expect(plan.actions.map(\.target) == ["atapi", "intelide", "pciide", "atapi", "intelide", "pciide"])
        #expect(!plan.changes.contains { $0.key.description.contains("CriticalDeviceDatabase") })
    }

    @Test func restrictionsAreOnlyReportedUnlessThePolicyAllowsRemoving() throws {
        let w = try LocalWindows(PhonyWindows(release: .server2019, states: [.deviceInstallRestricted, .noAutoReboot]))
        let p = try PolicyLoader.parse(
            """
            name: r
            description: d
            rules:
              - id: driver-restrictions
            """, source: "r.yaml")
        let plan = try w.plan(p)
        #expect(plan.actions.isEmpty)
        let found = plan.findings.filter { $0.id == "device-install-restricted" }
        #expect(found.map(\.measured) == ["DenyUnspecified=1", "DenyDeviceIDs=1"])
        #expect(found[1].message.contains("PCI\\VEN_1AF4&DEV_1000"))
        #expect(found[0].severity == .blocker)
    }

    @Test func remoteAccessTurnsRDPOnAndKeepsTheFirewallRuleString() throws {
        var w = try LocalWindows(PhonyWindows(release: .server2016, states: [.noAutoReboot]))
        let policy = try PolicyLoader.load("openstack-kvm")
        let plan = try w.plan(policy)
        let rdp = plan.actions.filter { $0.rule == "remote-access" }
        #expect(rdp.count == 4, "\(rdp.map(\.description))")
        let rule = try #require(plan.changes.first { $0.name == "RemoteDesktop-UserMode-In-TCP" })
        guard case .string(let before)? = rule.before, case .string(let after)? = rule.after else {
            Issue.record("not strings")
            return
        }
        #expect(before.hasPrefix("v2.22|") && after.hasPrefix("v2.22|"))
        #expect(after == before.replacingOccurrences(of: "Active=FALSE", with: "Active=TRUE"))
        #expect(
            plan.properties["hw_disk_bus"] == "ide" && plan.properties["os_type"] == "windows"
                && plan.properties["__os_bit"] == nil)
        try w.apply(plan)
        #expect(try w.value(.system, "ControlSet002\\Control\\Terminal Server", "fDenyTSConnections") == .dword(0))
        #expect(try w.plan(policy).actions.isEmpty)

        let nla = try PolicyLoader.parse(
            "name: n\ndescription: d\nrules:\n  - id: remote-access\n    with: {nla: disabled, firewall: false}\n",
            source: "n.yaml")
        let off = try w.plan(nla)
        #expect(
            off.changes.map { "\($0.key)|\($0.name!)|\($0.after!)" }
                == ["ControlSet001", "ControlSet002"].map {
                    "\($0)\\Control\\Terminal Server\\WinStations\\RDP-Tcp|UserAuthentication|\(RegistryValue.dword(0))"
                })
    }

    @Test func azurePolicyAppliesCleanlyAndSettles() throws {
        var w = try LocalWindows(
            PhonyWindows(
                release: .server2019, firmware: .uefi,
                nics: [.staticIP("{A0000000-0000-0000-0000-000000000001}", "10.0.0.4")],
                states: [.vmwareTools]))
        let policy = try PolicyLoader.load("azure")
        let plan = try w.plan(policy)
        #expect(!plan.findings.contains { $0.id == "policy-conflict" }, "\(plan.findings)")
        let rules = Set(plan.actions.map(\.rule))
        for r in [
            "nic-dhcp", "pv-cleanup", "input-devices", "remote-access", "san-policy", "rtc-utc", "temp-environment",
            "crash-dump", "user-mode-dumps", "rdp-policy", "rdp-listener", "firewall-public",
        ] {
            #expect(rules.contains(r), "\(r) missing from \(rules.sorted())")
        }
        // Services the image does not have are not created.
        #expect(!plan.changes.contains { $0.key.description.hasSuffix("\\Services\\IKEEXT") })
        #expect(plan.properties["hw_firmware_type"] == "uefi")
        try w.apply(plan)
        #expect(try w.value(.system, "ControlSet001\\Services\\partmgr\\Parameters", "SanPolicy") == .dword(1))
        #expect(
            try w.value(.system, "ControlSet002\\Control\\Session Manager\\Environment", "TEMP")
                == .expandString("%SystemRoot%\\TEMP"))
        #expect(
            try w.value(.software, "Microsoft\\Windows\\Windows Error Reporting\\LocalDumps", "DumpType") == .dword(2))
        #expect(try w.plan(policy).actions.isEmpty)
    }

    @Test func everyBuiltinRuleIsDocumentedAndUsedByAShippedPolicy() throws {
        let shipped = try ["huawei-ims", "openstack-kvm", "azure"].flatMap { try PolicyLoader.load($0).rules.map(\.id) }
        for b in BuiltinRule.all {
            let d = b.documentation
            #expect(!d.summary.isEmpty && !d.checks.isEmpty && !d.changes.isEmpty && !d.why.isEmpty, "\(d.id)")
            #expect(shipped.contains(d.id), "\(d.id) is in no shipped policy")
        }
    }
}

@Suite struct PolicyLanguageTests {
    func write(_ files: [String: String]) throws -> String {
        let dir = NSTemporaryDirectory() + "/remedy-policies-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, text) in files { try text.write(toFile: "\(dir)/\(name)", atomically: true, encoding: .utf8) }
        return dir
    }

    @Test func extendsOverridesDisablesAndAddsRules() throws {
        let dir = try write([
            "base.yaml": """
            name: base
            description: base
            applies-to: {versions: ["10.0"], arch: [x86_64]}
            parameters: {dns: false}
            rules:
              - id: nic-dhcp
                with: {keep-static-dns: $dns}
              - id: crash-settings
              - id: ide-boot
            """,
            "site.yaml": """
            name: site
            description: site
            extends: base.yaml
            parameters: {dns: true}
            rules:
              - id: ide-boot
                enabled: false
              - id: crash-settings
                with: {auto-reboot: true}
              - id: banner
                registry:
                  hive: SOFTWARE
                  key: Microsoft\\Windows NT\\CurrentVersion\\Winlogon
                  values: [{name: LegalNoticeCaption, data: "Property of ACME"}]
            """,
        ])
        let p = try PolicyLoader.load(dir + "/site.yaml")
        #expect(p.name == "site")
        #expect(p.extends == ["base"])
        #expect(p.rules.map(\.id) == ["nic-dhcp", "crash-settings", "banner"])
        #expect(p.versions == ["10.0"])
        #expect((p.rule("nic-dhcp") as? NicDhcpRule)?.keepStaticDNS == true)
        #expect((p.rule("crash-settings") as? CrashSettingsRule)?.autoReboot == true)
        let banner = try #require(p.rule("banner") as? RegistryRule)
        #expect(banner.hive == .software && !banner.perControlSet)
        #expect(banner.values.first?.data == .string("Property of ACME"))
    }

    @Test func extendsCyclesAreErrors() throws {
        let dir = try write([
            "a.yaml": "name: a\ndescription: a\nextends: b.yaml\n",
            "b.yaml": "name: b\ndescription: b\nextends: a.yaml\n",
        ])
        #expect { try PolicyLoader.load(dir + "/a.yaml") } throws: {
            ($0 as? RemedyError)?.code == .policyInvalid && "\($0)".contains("extends itself")
        }
    }

    @Test(arguments: [
        ("      values: [{name: X, type: REG_DWORD, data: -1}]", "out of range"),
        ("      values: [{name: X, type: REG_SZ, data: 5}]", "must be a string"),
        ("      values: [{name: X, type: REG_BINARY, data: \"zz\"}]", "hex bytes"),
        ("      values: [{name: X, type: REG_LINK, data: \"a\"}]", "unsupported type"),
        ("      values: [{name: X}]", "needs data"),
        ("      values: [{name: X, data: $nope}]", "no policy parameter nope"),
    ])
    func registryRuleErrorsNameTheLine(values: String, message: String) throws {
        let yaml =
            "name: t\ndescription: d\nrules:\n  - id: ok\n    registry: {hive: SYSTEM, key: CurrentControlSet\\Control\\X, values: [{name: A, data: 1}]}\n"
            + "  - id: bad\n    registry:\n      hive: SYSTEM\n      key: CurrentControlSet\\Control\\X\n" + values
            + "\n"
        do {
            _ = try PolicyLoader.parse(yaml, source: "t.yaml")
            Issue.record("accepted: \(values)")
        } catch let e as RemedyError {
            #expect(e.message.hasPrefix("t.yaml:6:"), "\(e.message)")
            #expect(e.message.contains(message), "\(e.message)")
        }
    }

    @Test func registryRulesSetCreateDeleteAndReport() throws {
        var w = try LocalWindows(PhonyWindows(release: .server2016, controlSetCount: 2))
        let p = try PolicyLoader.parse(
            """
            name: t
            description: d
            rules:
              - id: set-and-delete
                registry:
                  hive: SYSTEM
                  key: CurrentControlSet\\Control\\CrashControl
                  values:
                    - {name: CrashDumpEnabled, data: 2}
                    - {name: Overwrite, type: REG_DWORD, data: 1}
                    - {name: AutoReboot, absent: true}
              - id: only-existing
                registry:
                  hive: SYSTEM
                  key: CurrentControlSet\\Services\\NoSuchService
                  only-if-key-exists: true
                  values: [{name: Start, data: 4}]
              - id: binary-and-multi
                registry:
                  hive: SOFTWARE
                  key: Remedy\\Test
                  values:
                    - {name: Blob, type: REG_BINARY, data: "01 ff 00"}
                    - {name: List, data: [a, b]}
              - id: audit
                registry:
                  hive: SYSTEM
                  key: CurrentControlSet\\Control\\Terminal Server
                  report-only: true
                  values: [{name: fDenyTSConnections, data: 0}]
            """, source: "t.yaml")
        let plan = try w.plan(p)
        #expect(plan.actions.map(\.rule) == ["set-and-delete", "set-and-delete", "binary-and-multi"])
        #expect(plan.actions[0].changes.map(\.op) == [.setValue, .setValue, .deleteValue])
        #expect(plan.findings.map(\.id) == ["audit", "audit"])
        try w.apply(plan)
        #expect(try w.value(.system, "ControlSet002\\Control\\CrashControl", "AutoReboot") == nil)
        #expect(try w.value(.system, "ControlSet002\\Control\\CrashControl", "CrashDumpEnabled") == .dword(2))
        #expect(try w.value(.software, "Remedy\\Test", "Blob") == .binary([1, 255, 0]))
        #expect(try w.value(.software, "Remedy\\Test", "List") == .multiString(["a", "b"]))
        #expect(try w.plan(p).actions.isEmpty)
    }

    @Test func rulesThatDisagreeAreABlockingFinding() throws {
        let w = try LocalWindows(PhonyWindows(release: .server2016))
        let p = try PolicyLoader.parse(
            """
            name: t
            description: d
            rules:
              - id: crash-settings
              - {id: reboot, registry: {hive: SYSTEM, key: CurrentControlSet\\Control\\CrashControl, values: [{name: AutoReboot, data: 1}]}}
            """, source: "t.yaml")
        let plan = try w.plan(p)
        let conflict = try #require(plan.findings.first { $0.id == "policy-conflict" })
        #expect(conflict.severity == .blocker)
        #expect(conflict.measured == "crash-settings")
        // The later rule saw the earlier one's result: its `before` is crash-settings' `after`.
        #expect(
            plan.changes.filter { $0.name == "AutoReboot" }.map(\.before) == [
                .dword(1), .dword(1), .dword(0), .dword(0),
            ])
    }

    @Test func shippedPoliciesLoad() throws {
        for name in ["huawei-ims", "openstack-kvm", "azure"] {
            let p = try PolicyLoader.load(name)
            #expect(p.name == name)
            #expect(!p.description.isEmpty && !p.rules.isEmpty)
        }
        #expect(PolicyLoader.builtinNames() == ["azure", "huawei-ims", "openstack-kvm"])
        #expect(try PolicyLoader.load("openstack-kvm").extends == ["huawei-ims"])
    }
}

/// Policies come from users and sites: malformed, truncated or hostile YAML
/// gives a policy-invalid error, never a crash or a hang.
@Suite struct PolicyFuzzTests {
    @Test func mutatedPoliciesFailCleanly() throws {
        let sources = try ["huawei-ims", "openstack-kvm", "azure"].map {
            try String(contentsOfFile: PolicyLoader.locate($0), encoding: .utf8)
        }
        var rng = SystemRandomNumberGenerator()
        let deadline = Date().addingTimeInterval(
            Double(ProcessInfo.processInfo.environment["REMEDY_FUZZ_SECONDS"] ?? "") ?? 2)
        var rounds = 0, parsed = 0, rejected = 0
        let noise = Array(":-[]{}#&*!|>'\"%@`,?\n\t \\$".utf8)
        // At least 60 rounds (every mutation kind of every policy several times), however slow a loaded machine is.
        while Date() < deadline || rounds < 60 {
            rounds += 1
            var bytes = Array(sources[rounds % sources.count].utf8)
            switch rounds % 4 {
            case 0: bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
            case 1:
                for _ in 0..<Int.random(in: 1...6, using: &rng) {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = noise.randomElement(using: &rng)!
                }
            case 2:
                for _ in 0..<Int.random(in: 1...6, using: &rng) {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            default:
                bytes.insert(
                    contentsOf: noise.shuffled(using: &rng).prefix(5), at: Int.random(in: 0..<bytes.count, using: &rng))
            }
            do {
                _ = try PolicyLoader.parse(String(decoding: bytes, as: UTF8.self), source: "fuzz.yaml")
                parsed += 1
            } catch let e as RemedyError {
                #expect(e.code == .policyInvalid || e.code == .policyNotFound, "\(e)")
                rejected += 1
            }
        }
        // Deep nesting and huge scalars.
        for text in [
            String(repeating: "[", count: 5000),
            "name: " + String(repeating: "x", count: 2_000_000) + "\ndescription: d\n",
            "name: t\ndescription: d\nrules:\n" + String(repeating: "  - id: nic-dhcp\n", count: 5000),
        ] {
            do {
                _ = try PolicyLoader.parse(text, source: "fuzz.yaml")
                parsed += 1
            } catch is RemedyError { rejected += 1 }
        }
        #expect(rejected > 0, "\(rounds) rounds, \(parsed) parsed, \(rejected) rejected")
    }
}
