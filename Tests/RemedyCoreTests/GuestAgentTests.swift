import Foundation
import RemedyFixtures
import Testing

@testable import RemedyCore
@testable import RemedyPlanning

/// The QEMU guest agent and the balloon service from virtio-win (issue 10): found in both layouts for the image's
/// architecture and OS directory, staged and installed by first-boot steps when the policy turns the option on.
@Suite struct GuestAgentTests {
    static let msiPath = "/Windows/remedy/payloads/guest-agent/qemu-ga-x86_64.msi"
    static let agentStep = "/Windows/remedy/firstboot/scripts/40-qemu-guest-agent.cmd"
    static let balloonStep = "/Windows/remedy/firstboot/scripts/41-balloon-service.cmd"
    static let blnsvr = "/Windows/Drivers/VirtIO/blnsvr.exe"
    static let both = Set(VirtioWin.Tool.allCases)

    /// The SHA-256 of a file of the fake tree, read from the tree itself (not from what remedy resolved).
    static func sha(_ layout: String, _ rel: String) throws -> String {
        try SHA256Hex.ofFile(FakeTrees.root + "/\(layout)/\(rel)").sha256
    }

    func windows(
        _ release: WindowsRelease, arch: Architecture? = nil, extraSystem: [String: [String: RegistryValue]] = [:]
    ) throws -> LocalWindows {
        var w = try LocalWindows(
            PhonyWindows(release: release, arch: arch, states: [.noAutoReboot], extraSystem: extraSystem))
        w.payloads.virtio = try FakeTrees.resolve("iso", w.os)
        return w
    }

    func policy(_ yaml: String) throws -> Policy {
        try PolicyLoader.parse(yaml, source: NSTemporaryDirectory() + "/guest-agent-\(UUID().uuidString).yaml")
    }

    // MARK: resolution

    @Test(arguments: [
        ("iso", WindowsRelease.server2016, "guest-agent/qemu-ga-x86_64.msi", "Balloon/2k16/amd64/blnsvr.exe"),
        ("packaged", .server2016, "guest-agent/qemu-ga-x86_64.msi", "drivers/by-driver/Balloon/2k16/amd64/blnsvr.exe"),
        ("iso", .server2008, "guest-agent/qemu-ga-i386.msi", "Balloon/2k8/x86/blnsvr.exe"),
        ("packaged", .server2008, "guest-agent/qemu-ga-i386.msi", "drivers/by-driver/Balloon/2k8/x86/blnsvr.exe"),
        ("iso", .server2022, "guest-agent/qemu-ga-x86_64.msi", "Balloon/2k22/amd64/blnsvr.exe"),
    ])
    func theMSIOfTheArchitectureAndTheBalloonServiceOfTheOSDirectoryAreFound(
        layout: String, release: WindowsRelease, msi: String, exe: String
    ) throws {
        let w = try LocalWindows(PhonyWindows(release: release))
        let v = try FakeTrees.resolve(layout, w.os)
        let agent = try #require(v.guestAgent, "\(layout) \(release)")
        #expect(agent.source == "virtio-win:\(msi)" && agent.name == (msi as NSString).lastPathComponent)
        #expect(agent.sha256 == (try Self.sha(layout, msi)))
        let balloon = try #require(v.balloonService, "\(layout) \(release)")
        #expect(balloon.source == "virtio-win:\(exe)" && balloon.name == "blnsvr.exe")
        #expect(balloon.sha256 == (try Self.sha(layout, exe)))
        // The fake files name what they are: the bytes are those of this OS directory's Balloon build.
        let text = String(
            decoding: try Data(contentsOf: URL(fileURLWithPath: FakeTrees.root + "/\(layout)/\(exe)")), as: UTF8.self)
        #expect(text.contains("blnsvr.exe of Balloon for \(v.selected)"), "\(text)")
        #expect(
            balloon.size
                == Int64(try Data(contentsOf: URL(fileURLWithPath: FakeTrees.root + "/\(layout)/\(exe)")).count))
    }

    @Test func onlyTheToolsAskedForAreFetched() throws {
        let os = try LocalWindows(PhonyWindows(release: .server2016)).os
        func resolve(_ tools: Set<VirtioWin.Tool>) throws -> (VirtioFacts, [String]) {
            try FakeTrees.resolveFetching(os, drivers: ["viostor"], tools: tools)
        }
        let (none, fetchedNone) = try resolve([])
        #expect(none.guestAgent == nil && none.balloonService == nil)
        #expect(!fetchedNone.contains { $0.hasPrefix("guest-agent/") || $0.hasSuffix("blnsvr.exe") }, "\(fetchedNone)")
        let (agent, fetchedAgent) = try resolve([.guestAgent])
        #expect(agent.guestAgent?.source == "virtio-win:guest-agent/qemu-ga-x86_64.msi" && agent.balloonService == nil)
        #expect(
            fetchedAgent.contains("guest-agent/qemu-ga-x86_64.msi")
                && !fetchedAgent.contains { $0.hasSuffix("blnsvr.exe") }, "\(fetchedAgent)")
        let (both, fetchedBoth) = try resolve([.guestAgent, .balloonService])
        #expect(both.balloonService?.source == "virtio-win:Balloon/2k16/amd64/blnsvr.exe")
        #expect(
            fetchedBoth.filter { $0.hasSuffix("blnsvr.exe") } == ["Balloon/2k16/amd64/blnsvr.exe"], "\(fetchedBoth)")
    }

    /// Issue 12 item 10: a policy without `virtio-drivers` (here: the guest agent only) fetches and parses no INF at
    /// all (it used to read every driver of the directory); the guest agent and the balloon service still get theirs.
    @Test func aPolicyWithoutVirtioDriversReadsNoINF() throws {
        let p = try policy(
            """
            name: t
            description: d
            rules:
              - id: guest-agent
            """)
        #expect(p.rule("virtio-drivers") == nil)
        let (drivers, tools) = SessionPayloads.virtioSelection(p)
        #expect(drivers.isEmpty && tools == Self.both)
        var w = try LocalWindows(PhonyWindows(release: .server2016, states: [.noAutoReboot]))
        let (v, fetched) = try FakeTrees.resolveFetching(w.os, drivers: drivers, tools: tools)
        #expect(v.packages.isEmpty)
        #expect(Set(fetched) == ["guest-agent/qemu-ga-x86_64.msi", "Balloon/2k16/amd64/blnsvr.exe"], "\(fetched)")
        w.payloads.virtio = v
        let plan = try w.plan(p)
        #expect(
            plan.fileChanges.contains { $0.path == Self.msiPath }
                && plan.fileChanges.contains { $0.path == Self.blnsvr },
            "\(plan.fileChanges.map(\.path))")
        // With the rule, only its drivers.
        let withDrivers = try policy(
            """
            name: t
            description: d
            rules:
              - id: virtio-drivers
                with: {drivers: [viostor]}
            """)
        #expect(
            SessionPayloads.virtioSelection(withDrivers).drivers == ["viostor"]
                && SessionPayloads.virtioSelection(withDrivers).tools.isEmpty)
    }

    @Test func theToolsAreTakenOnlyAsRegularFilesWithPlainNames() throws {
        let (tree, secret, marker) = try HostileInputTests.treeAndSecret()
        defer { try? FileManager.default.removeItem(atPath: (tree as NSString).deletingLastPathComponent) }
        let os = HostileInputTests.os2016()
        // The MSI, then blnsvr.exe, replaced by a link to the host file: refused by name, the host file never read.
        for victim in ["guest-agent/qemu-ga-x86_64.msi", "Balloon/2k16/amd64/blnsvr.exe"] {
            let path = "\(tree)/\(victim)"
            let saved = try Data(contentsOf: URL(fileURLWithPath: path))
            try FileManager.default.removeItem(atPath: path)
            try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: secret)
            let error = #expect(throws: RemedyError.self) {
                _ = try PayloadResolver.tree(tree, os: os, drivers: ["viostor"], tools: Self.both, image: "img.qcow2")
            }
            #expect(error?.code == .virtioWinInvalid)
            #expect(
                error?.message.contains(victim) == true && error?.message.contains("symbolic link") == true,
                "\(error?.message ?? "")")
            #expect(error.map { !"\($0)".contains(marker) } ?? true)
            try FileManager.default.removeItem(atPath: path)
            #expect(FileManager.default.createFile(atPath: path, contents: saved))
        }
        // A FIFO in place of the MSI fails at once instead of blocking the read.
        let fifo = "\(tree)/guest-agent/qemu-ga-x86_64.msi"
        let saved = try Data(contentsOf: URL(fileURLWithPath: fifo))
        try FileManager.default.removeItem(atPath: fifo)
        #expect(mkfifo(fifo, 0o644) == 0)
        let outcome = HostileInputTests.withDeadline(60) {
            try PayloadResolver.tree(tree, os: os, drivers: ["viostor"], tools: Self.both, image: "img.qcow2")
        }
        guard case .failure(let e)? = outcome, let error = e as? RemedyError else {
            Issue.record("a FIFO MSI was taken or hung: \(String(describing: outcome))")
            return
        }
        #expect(error.code == .virtioWinInvalid && error.message.contains("FIFO"), "\(error.message)")
        try FileManager.default.removeItem(atPath: fifo)
        // A guest-agent directory that is a link is not descended into; one with a name outside [A-Za-z0-9._-] is not used.
        let hostDir = (secret as NSString).deletingLastPathComponent + "/host-guest-agent"
        try FileManager.default.createDirectory(atPath: hostDir, withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: hostDir + "/qemu-ga-x86_64.msi", contents: Data(marker.utf8)))
        try FileManager.default.removeItem(atPath: "\(tree)/guest-agent")
        try FileManager.default.createSymbolicLink(atPath: "\(tree)/guest-agent", withDestinationPath: hostDir)
        #expect(
            try PayloadResolver.tree(tree, os: os, drivers: ["viostor"], tools: Self.both, image: "img.qcow2")
                .guestAgent == nil)
        try FileManager.default.removeItem(atPath: "\(tree)/guest-agent")
        for odd in ["guest agent&x", "a%b"] {
            try FileManager.default.createDirectory(
                atPath: "\(tree)/\(odd)/guest-agent", withIntermediateDirectories: true)
            #expect(
                FileManager.default.createFile(atPath: "\(tree)/\(odd)/guest-agent/qemu-ga-x86_64.msi", contents: saved)
            )
        }
        #expect(
            try PayloadResolver.tree(tree, os: os, drivers: ["viostor"], tools: Self.both, image: "img.qcow2")
                .guestAgent == nil)
        #expect(
            VirtioWin.toolPath(
                .guestAgent, in: ["x/../guest-agent/qemu-ga-x86_64.msi", "guest-agent/qemu-ga-x86_64.msi.lnk"],
                key: "2k16/amd64") == nil)
        // The current name wins over the older spelling; the shallowest directory wins.
        #expect(
            VirtioWin.toolPath(
                .guestAgent,
                in: [
                    "guest-agent/qemu-ga-x64.msi", "a/guest-agent/qemu-ga-x86_64.msi", "guest-agent/qemu-ga-x86_64.msi",
                ],
                key: "2k16/amd64") == "guest-agent/qemu-ga-x86_64.msi")
        #expect(
            VirtioWin.toolPath(
                .guestAgent, in: ["guest-agent/qemu-ga-x86_64.msi", "guest-agent/qemu-ga-x86.msi"], key: "2k8/x86")
                == "guest-agent/qemu-ga-x86.msi")
        // The Balloon directory of the OS and architecture, before a combined one; never another OS's.
        #expect(
            VirtioWin.toolPath(
                .balloonService,
                in: [
                    "drivers/by-os/amd64/2k16/blnsvr.exe", "drivers/by-driver/Balloon/2k16/amd64/blnsvr.exe",
                    "Balloon/2k19/amd64/blnsvr.exe", "Balloon/2k16/x86/blnsvr.exe",
                ], key: "2k16/amd64")
                == "drivers/by-driver/Balloon/2k16/amd64/blnsvr.exe")
        #expect(VirtioWin.toolPath(.balloonService, in: ["Balloon/2k19/amd64/blnsvr.exe"], key: "2k16/amd64") == nil)
    }

    @Test func aVirtioWinWithoutTheGuestAgentResolvesWithoutIt() throws {
        let dir = NSTemporaryDirectory() + "/remedy-no-ga-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FakeVirtioWin.write(at: dir, layout: .isoTree, osDirectories: ["2k16"])
        try FileManager.default.removeItem(atPath: dir + "/guest-agent")
        let v = try PayloadResolver.tree(dir, os: HostileInputTests.os2016(), tools: Self.both, image: "img.qcow2")
        #expect(v.guestAgent == nil)
        #expect(v.balloonService?.source == "virtio-win:Balloon/2k16/amd64/blnsvr.exe")
        #expect(v.package("viostor.inf") != nil)
    }

    // MARK: the rule

    @Test func offInHuaweiIMSAndAzure() throws {
        let w = try windows(.server2016)
        for name in ["huawei-ims", "azure"] {
            let policy = try PolicyLoader.load(name)
            let plan = try w.plan(policy)
            #expect(!plan.actions.contains { $0.rule == "guest-agent" }, "\(name)")
            #expect(!plan.findings.contains { $0.rule == "guest-agent" }, "\(name)")
            #expect(
                !plan.fileChanges.contains {
                    $0.path.contains("/guest-agent/") || $0.path.hasPrefix("/Windows/remedy/firstboot/scripts/4")
                }, "\(name)")
            #expect(plan.properties["hw_qemu_guest_agent"] == nil, "\(name)")
            // Nothing is asked of virtio-win for it either.
            #expect((policy.rule("guest-agent") as? GuestAgentRule)?.tools ?? [] == [], "\(name)")
        }
        // The option's value in each shipped policy.
        #expect(try PolicyLoader.load("huawei-ims").parameters["guest-agent"] == .bool(false))
        #expect(try PolicyLoader.load("openstack-kvm").parameters["guest-agent"] == .bool(true))
        #expect(
            (try PolicyLoader.load("openstack-kvm").rule("guest-agent") as? GuestAgentRule)?.tools == [
                .guestAgent, .balloonService,
            ])
    }

    @Test func onInOpenStackTheMSIAndBlnsvrAreStagedAndInstalledAtFirstBoot() throws {
        var w = try windows(.server2016)
        let policy = try PolicyLoader.load("openstack-kvm")
        let plan = try w.plan(policy)
        let mine = plan.actions.filter { $0.rule == "guest-agent" }
        #expect(mine.map(\.target) == ["qemu-guest-agent", "balloon-service"], "\(mine.map(\.description))")
        // The MSI, copied from the tree's guest-agent directory under remedy's name.
        let msi = try #require(plan.fileChanges.first { $0.path == Self.msiPath })
        #expect(msi.source == "virtio-win:guest-agent/qemu-ga-x86_64.msi" && msi.before == nil)
        #expect(msi.sha256 == (try Self.sha("iso", "guest-agent/qemu-ga-x86_64.msi")))
        // blnsvr.exe of Balloon/2k16/amd64 beside the drivers, written once (the drivers rule has the same file).
        let exes = plan.fileChanges.filter { $0.path.lowercased() == Self.blnsvr.lowercased() }
        let exeSHA = try Self.sha("iso", "Balloon/2k16/amd64/blnsvr.exe")
        #expect(exes.count == 1 && exes.first?.sha256 == exeSHA, "\(exes)")
        // The steps, as cmd will read them.
        let agent = try #require(plan.fileChanges.first { $0.path == Self.agentStep }?.content)
        #expect(
            agent.contains(
                "\r\nmsiexec /i \"C:\\Windows\\remedy\\payloads\\guest-agent\\qemu-ga-x86_64.msi\" /norestart /qn "
                    + "/l+*vx \"C:\\Windows\\remedy\\payloads\\guest-agent\\install.log\"\r\nexit /b %ERRORLEVEL%\r\n"),
            "\(agent)")
        #expect(
            agent.contains("\r\nsc query QEMU-GA >nul 2>&1\r\nif not errorlevel 1 exit /b 0\r\nmsiexec"), "\(agent)")
        let balloon = try #require(plan.fileChanges.first { $0.path == Self.balloonStep }?.content)
        #expect(
            balloon.contains(
                "\r\nsc query BalloonService >nul 2>&1\r\nif not errorlevel 1 exit /b 0\r\n\"C:\\Windows\\Drivers\\VirtIO\\blnsvr.exe\" -i\r\n"
            ),
            "\(balloon)")
        for (name, text) in [("agent", agent), ("balloon", balloon)] {
            #expect(CmdLint.problems(text, name: name) == [])
        }
        // The runner is registered (once, by the first rule that needs it).
        #expect(plan.fileChanges.filter { $0.path == "/Windows/remedy/firstboot/run.cmd" }.count == 1)
        #expect(plan.properties["hw_qemu_guest_agent"] == "yes")
        #expect(!plan.findings.contains { $0.rule == "guest-agent" }, "\(plan.findings)")
        #expect(!plan.findings.contains { $0.id == "policy-conflict" })
        // Applied (each file against what the plan expected there), the next plan has nothing to do and keeps the property.
        try w.apply(plan)
        #expect(w.files.file(Self.msiPath)?.sha256 == msi.sha256)
        let again = try w.plan(policy)
        #expect(again.actions.isEmpty, "\(again.actions.map(\.description))")
        #expect(again.properties["hw_qemu_guest_agent"] == "yes")
    }

    @Test func a32BitWindowsGetsTheI386MSIAndTheX86Balloon() throws {
        let w = try windows(.server2008)
        #expect(w.os.arch == .i386)
        let plan = try w.plan(try PolicyLoader.load("openstack-kvm"))
        let msi = try #require(
            plan.fileChanges.first { $0.path == "/Windows/remedy/payloads/guest-agent/qemu-ga-i386.msi" })
        let (i386, x64) = (
            try Self.sha("iso", "guest-agent/qemu-ga-i386.msi"), try Self.sha("iso", "guest-agent/qemu-ga-x86_64.msi")
        )
        #expect(msi.sha256 == i386 && i386 != x64)
        #expect(!plan.fileChanges.contains { $0.path.hasSuffix("qemu-ga-x86_64.msi") })
        let exe = try #require(plan.fileChanges.first { $0.path == Self.blnsvr })
        let (x86, amd64) = (
            try Self.sha("iso", "Balloon/2k8/x86/blnsvr.exe"), try Self.sha("iso", "Balloon/2k8/amd64/blnsvr.exe")
        )
        #expect(exe.sha256 == x86 && x86 != amd64)
        let agent = try #require(plan.fileChanges.first { $0.path == Self.agentStep }?.content)
        #expect(
            agent.contains(
                "msiexec /i \"C:\\Windows\\remedy\\payloads\\guest-agent\\qemu-ga-i386.msi\" /norestart /qn"),
            "\(agent)")
    }

    @Test func theRuleStagesBlnsvrItselfWhenTheDriversRuleLeavesBalloonOut() throws {
        let w = try windows(.server2019)
        let plan = try w.plan(
            try policy(
                """
                name: t
                description: d
                extends: openstack-kvm
                rules:
                  - id: virtio-drivers
                    with: {drivers: [viostor, vioscsi, netkvm]}
                """))
        let exe = try #require(
            plan.actions.first { $0.target == "balloon-service" }?.files.first { $0.path == Self.blnsvr })
        let expected = try Self.sha("iso", "Balloon/2k19/amd64/blnsvr.exe")
        #expect(exe.source == "virtio-win:Balloon/2k19/amd64/blnsvr.exe" && exe.sha256 == expected)
        #expect(!plan.fileChanges.contains { $0.path == "/Windows/Drivers/VirtIO/balloon.sys" })
    }

    @Test func whatTheImageHasIsNotInstalledAgain() throws {
        let service: [String: RegistryValue] = [
            "Start": .dword(2), "Type": .dword(0x10), "ImagePath": .expandString("C:\\x.exe"),
        ]
        let both = try windows(
            .server2016, extraSystem: ["{cs}\\Services\\QEMU-GA": service, "{cs}\\Services\\BalloonService": service])
        let plan = try both.plan(try PolicyLoader.load("openstack-kvm"))
        #expect(!plan.actions.contains { $0.rule == "guest-agent" }, "\(plan.actions.map(\.description))")
        #expect(
            !plan.fileChanges.contains {
                $0.path.contains("/guest-agent/") || $0.path == Self.agentStep || $0.path == Self.balloonStep
            })
        #expect(!plan.findings.contains { $0.rule == "guest-agent" })
        #expect(plan.properties["hw_qemu_guest_agent"] == "yes")
        // The agent alone, spelled as its MSI registers it in lowercase: only the balloon service is planned.
        let agentOnly = try windows(.server2016, extraSystem: ["{cs}\\Services\\qemu-ga": service])
        let plan2 = try agentOnly.plan(try PolicyLoader.load("openstack-kvm"))
        #expect(plan2.actions.filter { $0.rule == "guest-agent" }.map(\.target) == ["balloon-service"])
        #expect(!plan2.fileChanges.contains { $0.path == Self.msiPath || $0.path == Self.agentStep })
        #expect(plan2.fileChanges.contains { $0.path == Self.balloonStep })
    }

    @Test func aMissingMSIIsAWarningAndTheBalloonServiceStillComes() throws {
        var w = try windows(.server2016)
        w.payloads.virtio?.guestAgent = nil
        let plan = try w.plan(try PolicyLoader.load("openstack-kvm"))
        let finding = try #require(plan.findings.first { $0.id == "guest-agent-msi-missing" })
        #expect(finding.severity == .warning && finding.rule == "guest-agent")
        #expect(finding.message.contains("qemu-ga-x86_64.msi"), "\(finding.message)")
        #expect(!plan.fileChanges.contains { $0.path == Self.msiPath || $0.path == Self.agentStep })
        #expect(plan.fileChanges.contains { $0.path == Self.balloonStep })
        #expect(plan.properties["hw_qemu_guest_agent"] == nil)
        // No blnsvr.exe either: a second warning, nothing planned.
        w.payloads.virtio?.balloonService = nil
        let none = try w.plan(
            try policy(
                "name: t\ndescription: d\nextends: openstack-kvm\nrules:\n  - id: virtio-drivers\n    with: {drivers: [viostor]}\n"
            ))
        #expect(
            none.findings.filter { $0.rule == "guest-agent" }.map(\.id).sorted() == [
                "balloon-service-missing", "guest-agent-msi-missing",
            ])
        #expect(!none.actions.contains { $0.rule == "guest-agent" })
        #expect(!none.fileChanges.contains { $0.path == Self.blnsvr })
    }

    @Test func withoutVirtioWinItIsReportedLikeTheDrivers() throws {
        let w = try LocalWindows(PhonyWindows(release: .server2016, states: [.noAutoReboot]))
        let plan = try w.plan(try PolicyLoader.load("openstack-kvm"))
        let finding = try #require(plan.findings.first { $0.rule == "guest-agent" })
        #expect(finding.id == "guest-agent-no-virtio-win" && finding.severity == .warning)
        #expect(finding.message.contains("--virtio-win"), "\(finding.message)")
        #expect(plan.findings.contains { $0.id == "virtio-win-missing" })
        #expect(!plan.actions.contains { $0.rule == "guest-agent" })
        // required: true blocks, as it does for the drivers.
        let strict = try w.plan(
            try policy(
                "name: t\ndescription: d\nextends: openstack-kvm\nrules:\n  - id: guest-agent\n    with: {required: true}\n"
            ))
        #expect(strict.findings.first { $0.id == "guest-agent-no-virtio-win" }?.severity == .blocker)
        // Only the balloon service asked for: the finding names only it.
        let balloon = try w.plan(
            try policy(
                "name: t\ndescription: d\nextends: openstack-kvm\nrules:\n  - id: guest-agent\n    with: {agent: false}\n"
            ))
        let b = try #require(balloon.findings.first { $0.id == "guest-agent-no-virtio-win" })
        #expect(b.message.hasPrefix("the VirtIO balloon service is not installed"), "\(b.message)")
    }

    @Test func aTypoInTheOptionIsAPolicyError() throws {
        let error = #expect(throws: RemedyError.self) {
            _ = try policy("name: t\ndescription: d\nrules:\n  - id: guest-agent\n    with: {agnet: true}\n")
        }
        #expect(error?.code == .policyInvalid)
        #expect(
            try policy("name: t\ndescription: d\nrules:\n  - id: guest-agent\n").rule("guest-agent") is GuestAgentRule)
    }
}
