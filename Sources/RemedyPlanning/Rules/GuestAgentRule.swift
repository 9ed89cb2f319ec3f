/// `guest-agent`: the QEMU guest agent and the VirtIO balloon service from
/// virtio-win, installed by first-boot steps. The agent's MSI for the
/// image's architecture (`guest-agent/qemu-ga-x86_64.msi` or
/// `qemu-ga-i386.msi`) is staged in `C:\Windows\remedy\payloads\guest-agent\`
/// and installed with msiexec; `blnsvr.exe` of the Balloon directory chosen
/// for this Windows (`Balloon/2k16/amd64/`) goes beside the VirtIO drivers
/// in `C:\Windows\Drivers\VirtIO\` (the service runs from where it was
/// installed) and installs itself as `BalloonService` with `blnsvr.exe -i`.
/// A program the image already has as a service is left alone.
public struct GuestAgentRule: Rule {
    /// The id a policy names this rule by, declared here once.
    public static let id = "guest-agent"
    public var id: String { Self.id }
    /// Install the QEMU guest agent.
    public var agent: Bool
    /// Install the balloon service.
    public var balloon: Bool
    /// Something wanted that cannot be installed (no virtio-win, or virtio-win without the file) blocks instead of warning.
    public var required: Bool

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: Self.id,
            summary:
                "Install the QEMU guest agent (qemu-ga MSI) and the VirtIO balloon service (blnsvr.exe) from virtio-win "
                + "(--virtio-win ISO or tree) at first boot.",
            checks:
                "Whether the image has the services already (QEMU-GA, BalloonService in the current control set); in "
                + "virtio-win the guest agent MSI for the image's architecture (guest-agent/qemu-ga-x86_64.msi, or "
                + "qemu-ga-i386.msi for 32-bit Windows) and blnsvr.exe in the Balloon directory for the inspected Windows "
                + "(Balloon/<os>/<arch>, or drivers/by-driver/Balloon/<os>/<arch> in the packaged tree), regular files only.",
            changes:
                "Agent not installed: the MSI staged as C:\\Windows\\remedy\\payloads\\guest-agent\\qemu-ga-<arch>.msi and "
                + "a first-boot step (\(agentStep)) that runs msiexec /i <msi> /norestart /qn /l+*vx <install.log> unless "
                + "the QEMU-GA service exists by then. Balloon service not installed: blnsvr.exe copied to "
                + "C:\\Windows\\Drivers\\VirtIO\\blnsvr.exe and a first-boot step (\(balloonStep)) that runs blnsvr.exe -i "
                + "(it registers BalloonService, which runs from that file) unless the service exists by then. The plan's "
                + "properties carry hw_qemu_guest_agent=yes when the agent is installed or will be.",
            why:
                "The guest agent lets the hypervisor quiesce file systems for snapshots, shut the guest down cleanly, set "
                + "passwords and read guest information; the balloon service reports memory statistics for the balloon "
                + "driver. virt-v2v installs both when it converts a Windows guest. On OpenStack the agent's channel exists "
                + "only for images with hw_qemu_guest_agent=yes.",
            parameters: [
                ("agent", "install the QEMU guest agent (default true)"),
                ("balloon", "install the balloon service (default true)"),
                (
                    "required",
                    "true: a missing --virtio-win, guest agent MSI or blnsvr.exe is a blocker (default false: a warning)"
                ),
            ]),
        make: { p, _ in
            try p.only(["agent", "balloon", "required"], rule: Self.id)
            return GuestAgentRule(
                agent: try p.bool("agent", default: true), balloon: try p.bool("balloon", default: true),
                required: try p.bool("required", default: false))
        })

    /// The programs this rule takes from virtio-win.
    public var tools: Set<VirtioWin.Tool> {
        Set((agent ? [.guestAgent] : []) + (balloon ? [.balloonService] : []))
    }

    // MARK: where things go

    static let agentStep = "40-qemu-guest-agent.cmd"
    static let balloonStep = "41-balloon-service.cmd"
    /// The services the programs install (service names are case-insensitive; the registry lookup is too).
    static let agentService = "QEMU-GA"
    static let balloonServiceName = "BalloonService"

    static func stageDirectory(_ os: OSFacts) -> String { os.systemRoot + "/remedy/payloads/guest-agent" }
    /// The staged MSI: remedy's own name for the architecture, whatever the source spelled it.
    static func stagedMSI(_ os: OSFacts) -> String {
        stageDirectory(os) + "/" + (os.arch == .i386 ? "qemu-ga-i386.msi" : "qemu-ga-x86_64.msi")
    }
    static func installLog(_ os: OSFacts) -> String { stageDirectory(os) + "/install.log" }
    /// Beside the VirtIO drivers: the service keeps running from this file.
    static func balloonTarget(_ os: OSFacts) -> String { VirtioDriversRule.storeDirectory(os) + "/blnsvr.exe" }

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        agent || balloon ? WindowsKeys.servicesRequirements(os) : []
    }

    public func fileRequirements(for facts: ImageFacts) -> [FileRequirement] {
        let os = facts.os
        var out: [FileRequirement] = []
        if agent {
            out += [FileRequirement(Self.stagedMSI(os)), FileRequirement(FirstBoot.script(os, Self.agentStep))]
        }
        if balloon {
            out += [FileRequirement(Self.balloonTarget(os)), FileRequirement(FirstBoot.script(os, Self.balloonStep))]
        }
        return out.isEmpty ? [] : out + FirstBoot.requirements(os)
    }

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var result = RuleResult()
        let os = facts.os, cs = os.currentControlSet
        let agentInstalled = WindowsKeys.start(facts, cs, Self.agentService) != nil
        let balloonInstalled = WindowsKeys.start(facts, cs, Self.balloonServiceName) != nil
        if agent && agentInstalled { result.properties["hw_qemu_guest_agent"] = "yes" }
        let wantAgent = agent && !agentInstalled, wantBalloon = balloon && !balloonInstalled
        guard wantAgent || wantBalloon else { return result }
        let severity: Finding.Severity = required ? .blocker : .warning
        let missing = [wantAgent ? "the QEMU guest agent" : nil, wantBalloon ? "the VirtIO balloon service" : nil]
            .compactMap { $0 }
        guard let virtio = facts.payloads.virtio else {
            result.findings.append(
                Finding(
                    id: "guest-agent-no-virtio-win", rule: id, severity: severity,
                    message:
                        "\(missing.joined(separator: " and ")) \(missing.count == 1 ? "is" : "are") not installed in the image and no "
                        + "virtio-win was given (--virtio-win PATH or REMEDY_VIRTIO_WIN): remedy installs \(missing.count == 1 ? "it" : "them") "
                        + "from virtio-win at first boot; give the ISO or tree",
                    measured: "not installed", requirement: missing.joined(separator: ", ")))
            return result
        }
        var files = facts.files
        /// One program: its file copied to `target`, and a first-boot step that runs `commands` unless `service` exists.
        func install(
            _ file: PayloadFile, to target: String, _ description: String, actionTarget: String, step: String,
            service: String, what: String, commands: [String]
        ) -> Action {
            var action = Action(rule: id, description: description, target: actionTarget, changes: [])
            if let c = FileChange.copy(target, from: file, in: files) { action.files.append(c) }
            for c in action.files { files.apply(c) }
            let body =
                [
                    "@echo off", "setlocal EnableExtensions DisableDelayedExpansion",
                    "rem remedy: install \(what) from \(file.source) (SHA-256 \(file.sha256))",
                    "sc query \(service) >nul 2>&1",
                    "if not errorlevel 1 exit /b 0",
                ] + commands + [""]
            let changes = FirstBoot.step(os, name: step, body: body.joined(separator: "\n"), files: files)
            for c in changes { files.apply(c) }
            action.files += changes
            return action
        }
        if wantAgent {
            if let msi = virtio.guestAgent {
                let staged = Self.stagedMSI(os)
                if let quotedMSI = Cmd.quoted(GuestPath.windows(staged)),
                    let quotedLog = Cmd.quoted(GuestPath.windows(Self.installLog(os)))
                {
                    // msiexec's own exit code goes to the runner: 3010 and 1641 restart Windows, another failure is retried.
                    let action = install(
                        msi, to: staged,
                        "stage \(msi.name) from virtio-win and install the QEMU guest agent at first boot",
                        actionTarget: "qemu-guest-agent", step: Self.agentStep, service: Self.agentService,
                        what: "the QEMU guest agent",
                        commands: [
                            "msiexec /i \(quotedMSI) /norestart /qn /l+*vx \(quotedLog)",
                            "exit /b %ERRORLEVEL%",
                        ])
                    if !action.isEmpty { result.actions.append(action) }
                    result.properties["hw_qemu_guest_agent"] = "yes"
                } else {
                    result.findings.append(unquotable(staged))
                }
            } else {
                result.findings.append(
                    Finding(
                        id: "guest-agent-msi-missing", rule: id, severity: severity,
                        message: "the virtio-win at \(virtio.source) has no QEMU guest agent installer for \(os.arch) "
                            + "(guest-agent/\(VirtioWin.guestAgentNames(os.arch).joined(separator: " or "))): the agent is not installed; "
                            + "use a virtio-win release that ships it, or install it later",
                        measured: "no guest-agent MSI", requirement: VirtioWin.guestAgentNames(os.arch)[0]))
            }
        }
        if wantBalloon {
            if let exe = virtio.balloonService {
                let target = Self.balloonTarget(os)
                if let quotedExe = Cmd.quoted(GuestPath.windows(target)) {
                    // blnsvr.exe -i registers BalloonService to run from the file it was started from.
                    let action = install(
                        exe, to: target,
                        "copy blnsvr.exe from virtio-win \(virtio.selected) and install the balloon service at first boot",
                        actionTarget: "balloon-service", step: Self.balloonStep, service: Self.balloonServiceName,
                        what: "the VirtIO balloon service",
                        commands: [
                            "\(quotedExe) -i",
                            "set \"RC=%ERRORLEVEL%\"",
                            "if not \"%RC%\"==\"0\" exit /b %RC%",
                            "sc start \(Self.balloonServiceName) >nul 2>&1",
                            "exit /b 0",
                        ])
                    if !action.isEmpty { result.actions.append(action) }
                } else {
                    result.findings.append(unquotable(target))
                }
            } else {
                result.findings.append(
                    Finding(
                        id: "balloon-service-missing", rule: id, severity: severity,
                        message:
                            "the virtio-win at \(virtio.source) has no blnsvr.exe in its Balloon directory for \(virtio.selected): "
                            + "the balloon service is not installed",
                        measured: "no Balloon/\(virtio.selected)/blnsvr.exe", requirement: "blnsvr.exe"))
            }
        }
        return result
    }

    /// A Windows directory whose path cmd cannot keep literal: nothing is written for it.
    func unquotable(_ path: String) -> Finding {
        Finding(
            id: "guest-agent-path-unsafe", rule: id, severity: .blocker,
            message:
                "\(GuestPath.windows(path)) cannot be written into a cmd script safely (% ! \" or a control character): "
                + "nothing is installed from it",
            measured: GuestPath.windows(path), requirement: "a path cmd keeps literal")
    }
}
