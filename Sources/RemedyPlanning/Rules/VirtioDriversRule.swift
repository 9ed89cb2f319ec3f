import Foundation
import RegistryFormat

/// `virtio-drivers`: VirtIO drivers from virtio-win, injected so Windows
/// boots from a VirtIO disk and installs the rest of the drivers itself at
/// first boot. Everything written is derived from the packages' INF files:
/// the directory matching the inspected Windows is chosen by
/// ``VirtioWin``, and the INF's `[Manufacturer]` models and `AddService`
/// directives give the hardware IDs and the service entries.
public struct VirtioDriversRule: Rule {
    /// The id a policy names this rule by, declared here once.
    public static let id = "virtio-drivers"
    public var id: String { Self.id }
    /// INF names (without `.inf`) to inject, from those the chosen directory has.
    public var drivers: [String]
    /// A missing `--virtio-win` blocks instead of warning.
    public var required: Bool
    /// Known problems of virtio-win releases on some Windows versions (from `Payloads/virtio-win/manifest.yaml`).
    public var knownIssues: [PayloadManifest.KnownIssue]

    public static let defaultDrivers = [
        "viostor", "vioscsi", "netkvm", "balloon", "vioser", "viorng", "pvpanic", "fwcfg", "qemufwcfg",
    ]

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: Self.id,
            summary:
                "Inject VirtIO drivers from virtio-win (--virtio-win ISO or tree), derived from their INF files: storage drivers "
                + "boot-start, the rest installed at first boot with pnputil.",
            checks:
                "The virtio-win directory for the inspected Windows (version, server/client, build, architecture: 2k8, 2k8R2, "
                + "2k12, 2k12R2, 2k16, 2k19, 2k22, 2k25, w7, w8, w8.1, w10, w11; amd64 or x86). For each package its INF: [Version] "
                + "class, [Manufacturer] models and hardware IDs for the architecture, AddService service entries. In the image: "
                + "the files under C:\\Windows\\Drivers\\VirtIO, the services in every control set, the CriticalDeviceDatabase "
                + "(before Windows 8) or the DriverDatabase (Windows 8 and later), DevicePath.",
            changes:
                "Every package's files into C:\\Windows\\Drivers\\VirtIO. For boot-critical storage packages (SCSIAdapter class, "
                + "boot-start service: viostor, vioscsi): the .sys into C:\\Windows\\System32\\drivers, the service key from the "
                + "INF's AddService (Type, Start, ErrorControl, Group, ImagePath) in every control set, and for every hardware ID "
                + "a CriticalDeviceDatabase entry (Service, ClassGUID) before Windows 8, or DriverDatabase entries (DriverInfFiles, "
                + "DeviceIds, DriverPackages with Configurations and Descriptors) on Windows 8 and later, with the package "
                + "staged in System32\\DriverStore\\FileRepository and published as C:\\Windows\\INF\\oemN.inf, as DISM's offline "
                + "/Add-Driver does. DevicePath gets %SystemRoot%\\Drivers\\VirtIO. A first-boot step runs pnputil -i -a for every "
                + "INF.",
            why: "Without a boot-start storage driver bound to the VirtIO disk's hardware ID, Windows stops with 0x7B "
                + "INACCESSIBLE_BOOT_DEVICE on a VirtIO disk. Windows before 8 binds boot devices through the "
                + "CriticalDeviceDatabase; Windows 8 and later ignore it and match boot devices against the DriverDatabase. "
                + "Non-storage drivers are not needed to boot and install cleanly with pnputil once Windows runs.",
            parameters: [
                (
                    "drivers",
                    "INF names to inject (default: \(defaultDrivers.joined(separator: ", ")); those the directory lacks are skipped)"
                ),
                (
                    "required",
                    "true: a missing --virtio-win is a blocker (default false: a warning; the image still boots from IDE)"
                ),
            ]),
        manifests: ["virtio-win"],
        make: { p, inputs in
            try p.only(["drivers", "required"], rule: Self.id)
            return VirtioDriversRule(
                drivers: try p.strings("drivers", default: defaultDrivers).map { $0.lowercased() },
                required: try p.bool("required", default: false),
                knownIssues: inputs.manifests["virtio-win"]?.knownIssues ?? [])
        })

    // MARK: where things go

    static func storeDirectory(_ os: OSFacts) -> String { os.systemRoot + "/Drivers/VirtIO" }
    static func driversDirectory(_ os: OSFacts) -> String { os.systemRoot + "/System32/drivers" }
    static func infDirectory(_ os: OSFacts) -> String { os.systemRoot + "/INF" }
    static func fileRepository(_ os: OSFacts) -> String { os.systemRoot + "/System32/DriverStore/FileRepository" }
    static let driverDatabase = RegistryPath("DriverDatabase")
    static let currentVersion = RegistryPath("Microsoft\\Windows\\CurrentVersion")
    static let cbsPackages = RegistryPath("Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\Packages")
    static let firstBootStep = "20-virtio-drivers.cmd"

    /// The packages of the chosen directory this rule injects.
    func packages(_ payloads: PayloadFacts) -> [DriverPackage] {
        (payloads.virtio?.packages ?? []).filter { drivers.contains(String($0.inf.name.dropLast(4))) }
    }

    /// The DriverStore label of a package: `<inf>_<arch>_<16 hex digits of the INF's SHA-256>`, the shape Windows uses.
    static func label(_ p: DriverPackage, _ os: OSFacts) -> String {
        "\(p.inf.name)_\(os.arch.windowsName)_\(p.infSHA256.prefix(16))"
    }

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        requirements(for: os, payloads: PayloadFacts())
    }

    public func requirements(for os: OSFacts, payloads: PayloadFacts) -> [RegistryRequirement] {
        var out = WindowsKeys.servicesRequirements(os) + [RegistryRequirement(.software, Self.currentVersion, depth: 0)]
        for p in packages(payloads) where p.bootCritical {
            for svc in p.inf.services {
                // The service key with its StartOverride, Parameters\PnpInterface (service AddReg), and its event source.
                for cs in os.orderedControlSets {
                    out.append(RegistryRequirement(.system, WindowsKeys.service(cs.name, svc.name), depth: 3))
                    if let log = svc.eventLog {
                        out.append(RegistryRequirement(.system, Self.eventSource(cs.name, log), depth: 1))
                    }
                }
            }
        }
        if os.isWindows8OrLater {
            out.append(RegistryRequirement(.system, Self.driverDatabase, depth: 0))
            out.append(
                RegistryRequirement(
                    .system,
                    Self.driverDatabase.appending("DeviceIds").appending(DriverClassGUID.scsiAdapter.lowercased()),
                    depth: 0))
            out.append(RegistryRequirement(.system, Self.driverDatabase.appending("DriverInfFiles"), depth: 1))
            for p in packages(payloads) where p.bootCritical {
                out.append(
                    RegistryRequirement(
                        .system, Self.driverDatabase.appending("DriverPackages").appending(Self.label(p, os)), depth: 4)
                )
                for id in p.inf.hardwareIDs + p.inf.compatibleIDs {
                    out.append(
                        RegistryRequirement(.system, Self.driverDatabase.appending("DeviceIds").appending(id), depth: 0)
                    )
                }
                out.append(
                    RegistryRequirement(
                        .system, Self.driverDatabase.appending("DeviceIds").appending(p.inf.classGUID.lowercased()),
                        depth: 0))
            }
        } else {
            out += os.orderedControlSets.map { RegistryRequirement(.system, IdeBootRule.cdd($0.name), depth: 1) }
        }
        if knownIssues.contains(where: { $0.windows.contains(os.version) && $0.unlessUpdates != nil }) {
            out.append(RegistryRequirement(.software, Self.cbsPackages, depth: 1))
        }
        return out
    }

    public func fileRequirements(for facts: ImageFacts) -> [FileRequirement] {
        let os = facts.os
        var out: [FileRequirement] = []
        for p in packages(facts.payloads) {
            for f in p.files { out.append(FileRequirement(Self.storeDirectory(os) + "/" + f.name)) }
            if p.bootCritical {
                if let target = Self.binaryTarget(p, os) { out.append(FileRequirement(target)) }
                // The file an existing service of the same name runs: a working driver the image has is kept.
                if let svc = p.inf.functionService {
                    for cs in os.orderedControlSets {
                        if let existing = Self.existingImageFile(facts, cs.name, svc) {
                            out.append(FileRequirement(existing))
                        }
                    }
                }
                if os.isWindows8OrLater {
                    for f in p.files {
                        out.append(FileRequirement(Self.fileRepository(os) + "/" + Self.label(p, os) + "/" + f.name))
                    }
                }
            }
        }
        if os.isWindows8OrLater {
            // Every oemN.inf number that could be taken: the ones the registry knows and a few beyond.
            for n in 0..<(Self.oemCandidates(facts) + 1) {
                out.append(FileRequirement(Self.infDirectory(os) + "/oem\(n).inf"))
            }
        }
        return out + [FileRequirement(FirstBoot.script(os, Self.firstBootStep))] + FirstBoot.requirements(os)
    }

    /// The file name of the package's function driver (`viostor.sys`), from its service's ImagePath.
    static func functionBinary(_ p: DriverPackage) -> String? {
        guard let image = p.inf.functionService?.imagePath else { return nil }
        let name = image.split(whereSeparator: { $0 == "\\" || $0 == "/" }).last.map { String($0).lowercased() }
        return name.flatMap { n in p.files.contains { $0.name == n } ? n : nil }
    }

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var result = RuleResult()
        let os = facts.os
        guard let virtio = facts.payloads.virtio else {
            let has =
                WindowsKeys.start(facts, os.currentControlSet, "viostor") == UInt64(ServiceStart.boot)
                || WindowsKeys.start(facts, os.currentControlSet, "vioscsi") == UInt64(ServiceStart.boot)
            if !has {
                result.findings.append(
                    Finding(
                        id: .virtioWinMissing, rule: id, severity: required ? .blocker : .warning,
                        message:
                            "the image has no VirtIO storage driver and no virtio-win was given (--virtio-win PATH or REMEDY_VIRTIO_WIN): "
                            + "it can only boot from an IDE disk (hw_disk_bus=ide), slowly; give the virtio-win ISO or tree to inject the drivers",
                        measured: "no viostor/vioscsi", requirement: "VirtIO storage driver"))
            }
            return result
        }
        let chosen = packages(facts.payloads)
        for issue in knownIssues where issue.windows.contains(os.version) {
            if let from = issue.fromDriverVersion, compareVersions(virtio.driverVersion, from) < 0 { continue }
            if let updates = issue.unlessUpdates {
                let installed = (facts.registry.key(.software, Self.cbsPackages)?.subkeys ?? []).map {
                    $0.name.uppercased()
                }
                if updates.contains(where: { kb in installed.contains { $0.contains(kb.uppercased()) } }) { continue }
            }
            result.findings.append(
                Finding(
                    id: .virtioWinKnownIssue, rule: id, severity: issue.severity == "blocker" ? .blocker : .warning,
                    message: issue.message + (issue.reference.map { " (\($0))" } ?? ""),
                    measured: "virtio-win \(virtio.selected) driver version \(virtio.driverVersion)",
                    requirement: issue.unlessUpdates?.joined(separator: " or ")))
        }
        var files = facts.files
        var installCommands: [String] = []
        let published = os.isWindows8OrLater ? publishedNames(facts) : [:]
        var extraActions: [Action] = []
        for p in chosen {
            // A package writes only its own services: a service the image already has must run the package's file.
            if p.bootCritical, let foreign = Self.foreignService(p, facts) {
                result.findings.append(
                    Finding(
                        id: "virtio-driver-foreign-service", rule: id, severity: .blocker,
                        message:
                            "\(p.inf.name) from virtio-win \(virtio.selected) cannot be injected: \(foreign); an INF may install only its own "
                            + "services, so the package is not used (is the virtio-win media tampered with?)",
                        measured: foreign, requirement: "services of \(p.inf.name) new or running its own file"))
                continue
            }
            var action = Action(
                rule: id,
                description:
                    "inject \(p.inf.name) \(p.inf.version) (\(p.inf.driverClass)) from virtio-win \(virtio.selected)",
                target: String(p.inf.name.dropLast(4)), changes: [])
            for f in p.files {
                if let c = FileChange.copy(Self.storeDirectory(os) + "/" + f.name, from: f, in: files) {
                    action.files.append(c)
                }
            }
            installCommands.append(p.inf.name)
            if p.bootCritical, let svc = p.inf.functionService, let keep = Self.workingService(facts, svc) {
                result.findings.append(
                    Finding(
                        id: "virtio-driver-kept", rule: id, severity: .info,
                        message:
                            "\(svc.name) is already installed and loads (\(keep)): remedy keeps it and only stages \(p.inf.name) for pnputil",
                        measured: keep, requirement: "\(p.inf.name) \(p.inf.version)"))
            } else if p.bootCritical {
                // The function driver where its ImagePath points (with %13% that is the driver store folder, copied below).
                let store = (Self.fileRepository(os) + "/" + Self.label(p, os) + "/").lowercased()
                if let sys = Self.functionBinary(p), let target = Self.binaryTarget(p, os),
                    !(os.isWindows8OrLater && target.lowercased().hasPrefix(store)),
                    let f = p.files.first(where: { $0.name == sys }),
                    let c = FileChange.copy(target, from: f, in: files)
                {
                    action.files.append(c)
                }
                let service = serviceChanges(p, facts)
                if !service.isEmpty, let svc = p.inf.functionService {
                    extraActions.append(
                        Action(rule: id, description: Self.serviceOrigin(svc, p), target: svc.name, changes: service))
                }
                action.changes +=
                    os.isWindows8OrLater
                    ? driverDatabaseChanges(p, facts, published: published) : criticalDeviceChanges(p, facts)
                if os.isWindows8OrLater {
                    for f in p.files {
                        if let c = FileChange.copy(
                            Self.fileRepository(os) + "/" + Self.label(p, os) + "/" + f.name, from: f, in: files)
                        {
                            action.files.append(c)
                        }
                    }
                    if let inf = p.files.first(where: { $0.name == p.inf.name }),
                        let name = published[p.inf.name],
                        let c = FileChange.copy(Self.infDirectory(os) + "/" + name, from: inf, in: files)
                    {
                        action.files.append(c)
                    }
                }
                extraActions += serviceAddRegActions(p, facts)
            }
            for c in action.files { files.apply(c) }
            if !action.changes.isEmpty || !action.files.isEmpty { result.actions.append(action) }
            result.actions += extraActions
            extraActions = []
        }
        if let map = oemInfMapAction(facts, published: published) { result.actions.append(map) }
        // DevicePath: Plug and Play searches it for drivers of new devices.
        if !chosen.isEmpty {
            let key = facts.registry.key(.software, Self.currentVersion)
            let entry = "%SystemRoot%\\Drivers\\VirtIO"
            let now: String =
                switch key?.value("DevicePath") {
                case .string(let s)?, .expandString(let s)?: s
                default: "%SystemRoot%\\inf"
                }
            if !now.lowercased().split(separator: ";").contains(where: {
                $0.trimmingCharacters(in: .whitespaces) == entry.lowercased()
            }) {
                var edit = KeyEdit(.software, Self.currentVersion, key)
                edit.set("DevicePath", .expandString(now + ";" + entry))
                result.actions.append(
                    Action(
                        rule: id, description: "add \(entry) to DevicePath so Plug and Play finds the VirtIO drivers",
                        target: "DevicePath", changes: edit.changes))
            }
            // The rest at first boot: pnputil adds every package to the driver store and installs it on matching devices.
            // pnputil exits 259 when no device needs the package yet and 3010 when a restart completes the install.
            let body =
                [
                    "@echo off",
                    "rem remedy: install the VirtIO drivers (virtio-win \(virtio.selected), \(virtio.driverVersion))",
                    "set \"FAILED=0\"", "set \"RESTART=0\"",
                ]
                + installCommands.flatMap { inf in
                    [
                        "pnputil -i -a \"%SystemRoot%\\Drivers\\VirtIO\\\(inf)\"",
                        "if %ERRORLEVEL%==3010 set \"RESTART=1\"",
                        "if not %ERRORLEVEL%==0 if not %ERRORLEVEL%==259 if not %ERRORLEVEL%==3010 set \"FAILED=1\"",
                    ]
                } + ["if %FAILED%==1 exit /b 1", "if %RESTART%==1 exit /b 3010", "exit /b 0", ""]
            let step = FirstBoot.step(os, name: Self.firstBootStep, body: body.joined(separator: "\n"), files: files)
            if !step.isEmpty {
                result.actions.append(
                    Action(
                        rule: id,
                        description: "first boot: pnputil installs \(installCommands.count) VirtIO driver package(s)",
                        target: "first-boot", changes: [], files: step))
            }
        }
        return result
    }

    /// The boot-critical service, as the INF's AddService describes it, in every control set. ImagePath is the
    /// ServiceBinary with its directory id resolved as Windows resolves it (``INFDirid``).
    func serviceChanges(_ p: DriverPackage, _ facts: ImageFacts) -> [Change] {
        guard let svc = p.inf.functionService, let image = svc.imagePath(storeFolder: Self.label(p, facts.os)) else {
            return []
        }
        var out: [Change] = []
        for cs in facts.os.orderedControlSets {
            let path = WindowsKeys.service(cs.name, svc.name)
            var edit = KeyEdit(.system, path, facts.registry.key(.system, path))
            edit.set("Type", .dword(svc.type))
            edit.set("Start", .dword(svc.start))
            edit.set("ErrorControl", .dword(svc.errorControl))
            if let g = svc.group { edit.set("Group", .string(g)) }
            edit.set("ImagePath", .expandString(image))
            if let d = svc.displayName { edit.set("DisplayName", .string(d)) }
            out += edit.changes
            // A StartOverride left from another platform would keep the new boot driver from loading.
            if let override = facts.registry.key(.system, path.appending("StartOverride")) {
                for v in override.values where (v.value.number ?? 0) != UInt64(svc.start) {
                    out.append(
                        Change(
                            op: .deleteValue, hive: .system, key: path.appending("StartOverride"), name: v.name,
                            before: v.value))
                }
            }
        }
        return out
    }

    /// Where a service's Type, Start, ErrorControl, ImagePath come from, for the plan: the INF, its AddService line
    /// and the service-install section's lines (`viostor: service from viostor.inf line 87 AddService = viostor in
    /// [scsi_inst.Services], [scsi_Service_Inst] lines 90, 91, 92, 93, 94`).
    static func serviceOrigin(_ svc: DriverINF.Service, _ p: DriverPackage) -> String {
        let add = svc.addServiceLine.map { " line \($0)" } ?? ""
        let lines = (svc.directiveLines ?? []).map(String.init).joined(separator: ", ")
        return
            "\(svc.name): service Type, Start, ErrorControl, ImagePath from \(p.inf.name)\(add) AddService = \(svc.name) in "
            + "[\(svc.servicesSection ?? "?")], [\(svc.section)]" + (lines.isEmpty ? "" : " lines \(lines)")
    }

    /// The first service of the package that is not its own in this image: one the image already has (in any
    /// control set) whose ImagePath runs another file than the package's ServiceBinary (`Tcpip` running tcpip.sys
    /// for an INF whose binary is viostor.sys). A new service, or one running a file of the same name (an older
    /// build of the same driver), is the package's. virtio-win's own INFs name some services apart from their
    /// files (VirtioSerial runs vioser.sys, VirtRng viorng.sys), so the name alone does not decide. Described, or nil.
    static func foreignService(_ p: DriverPackage, _ facts: ImageFacts) -> String? {
        for svc in p.inf.services {
            for cs in facts.os.orderedControlSets {
                guard let key = facts.registry.key(.system, WindowsKeys.service(cs.name, svc.name)) else { continue }
                let image: String =
                    switch key.value("ImagePath") {
                    case .string(let s)?, .expandString(let s)?: s
                    default: "System32\\drivers\\\(svc.name).sys"  // Windows' default for a driver without one
                    }
                let file =
                    image.split(whereSeparator: { $0 == "\\" || $0 == "/" }).last.map { String($0).lowercased() } ?? ""
                let runs = file.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
                if runs != svc.binaryFile {
                    return
                        "its AddService names the service \(svc.name), which \(cs.name) already has running \(image), not \(svc.binaryFile)"
                }
            }
        }
        return nil
    }

    /// The service-install section's AddReg (HKR = the service key) and the event-log install's (HKR =
    /// `Services\EventLog\<log>\<source>`), in every control set, one action per section so the plan names where
    /// each value comes from. Flags as Microsoft's "INF AddReg Directive" defines them: NOCLOBBER keeps an existing
    /// value, APPEND adds to a REG_MULTI_SZ, DELVAL deletes, KEYONLY creates the key, OVERWRITEONLY writes only over
    /// an existing value.
    func serviceAddRegActions(_ p: DriverPackage, _ facts: ImageFacts) -> [Action] {
        var out: [Action] = []
        for svc in p.inf.services {
            var groups: [(String, [INFRegistryWrite], (String) -> RegistryPath)] = [
                ("[\(svc.section)] AddReg", svc.addReg, { WindowsKeys.service($0, svc.name) })
            ]
            if let log = svc.eventLog {
                groups.append(
                    ("[\(log.section)] (event log \(log.log)\\\(log.name))", log.addReg, { Self.eventSource($0, log) }))
            }
            for (what, writes, base) in groups where !writes.isEmpty {
                var changes: [Change] = []
                for cs in facts.os.orderedControlSets {
                    var created = Set<String>()
                    for w in writes {
                        let root = base(cs.name)
                        var path = root
                        if w.root == .hklm {
                            // Checked at parse time: SYSTEM\CurrentControlSet\Services\<svc>[\...].
                            let rest = w.subkey.split(separator: "\\").dropFirst(4).joined(separator: "\\")
                            if !rest.isEmpty { path = path.appending(rest) }
                        } else if !w.subkey.isEmpty {
                            path = path.appending(w.subkey)
                        }
                        let key = facts.registry.key(.system, path)
                        var edit = KeyEdit(.system, path, key)
                        guard let name = w.valueName else {
                            if key == nil, created.insert(path.description.lowercased()).inserted {
                                changes.append(Change(op: .createKey, hive: .system, key: path))
                            }
                            continue
                        }
                        let now = key?.value(name)
                        guard let value = w.value else {
                            edit.delete(name)
                            changes += edit.changes
                            continue
                        }
                        if w.noClobber && now != nil { continue }
                        if w.overwriteOnly && now == nil { continue }
                        if w.appends, case .multiString(let add) = value {
                            let have: [String] = if case .multiString(let s)? = now { s } else { [] }
                            let merged = have + add.filter { a in !have.contains { $0.lowercased() == a.lowercased() } }
                            edit.set(name, .multiString(merged))
                        } else {
                            edit.set(name, value)
                        }
                        changes += edit.changes
                    }
                }
                if !changes.isEmpty {
                    let lines = writes.map(\.line).map(String.init).joined(separator: ", ")
                    var sections: [String] = []
                    for w in writes where !sections.contains(w.section) { sections.append(w.section) }
                    let from = sections.map { "[\($0)]" }.joined(separator: ", ")
                    out.append(
                        Action(
                            rule: id,
                            description: "\(svc.name): values from \(p.inf.name) \(what) = \(from), lines \(lines)",
                            target: svc.name, changes: changes))
                }
            }
        }
        return out
    }

    static func eventSource(_ cs: String, _ log: DriverINF.Service.EventLog) -> RegistryPath {
        RegistryPath("\(cs)\\Services\\EventLog\\\(log.log)\\\(log.name)")
    }

    /// Where the function driver's file goes for its ImagePath: the drivers directory for %12% (and System32 for
    /// %11%, the Windows directory for %10%); for %13% the package's driver store folder (copied with the package).
    static func binaryTarget(_ p: DriverPackage, _ os: OSFacts) -> String? {
        guard let svc = p.inf.functionService, let image = svc.imagePath(storeFolder: label(p, os)) else { return nil }
        return INFDirid.guestPath(imagePath: image, systemRoot: os.systemRoot)
    }

    /// The guest file an existing service of this name runs (its ImagePath, or Windows' default for a kernel driver).
    static func existingImageFile(_ facts: ImageFacts, _ cs: String, _ svc: DriverINF.Service) -> String? {
        guard let key = facts.registry.key(.system, WindowsKeys.service(cs, svc.name)) else { return nil }
        let image: String =
            switch key.value("ImagePath") {
            case .string(let s)?, .expandString(let s)?: s
            default: "System32\\drivers\\\(svc.name).sys"
            }
        return INFDirid.guestPath(imagePath: image, systemRoot: facts.os.systemRoot)
    }

    /// A working driver of the same name the image already has in its current control set: its file exists and its
    /// effective start is boot (0) or system (1). Described, or nil when there is none (remedy then installs its own).
    static func workingService(_ facts: ImageFacts, _ svc: DriverINF.Service) -> String? {
        let cs = facts.os.currentControlSet
        guard let start = WindowsKeys.effectiveStart(facts, cs, svc.name), start <= UInt64(ServiceStart.system),
            let file = existingImageFile(facts, cs, svc), facts.files.file(file) != nil
        else { return nil }
        return "\(cs) Start \(start), \(file)"
    }

    /// Windows before 8: `CriticalDeviceDatabase\<hardware id with # for \>` -> Service, ClassGUID, for every
    /// hardware and compatible ID of the INF and the vendor&device form of each, in every control set.
    func criticalDeviceChanges(_ p: DriverPackage, _ facts: ImageFacts) -> [Change] {
        guard let svc = p.inf.functionService else { return [] }
        var out: [Change] = []
        for cs in facts.os.orderedControlSets {
            for id in Self.criticalIDs(p.inf.hardwareIDs + p.inf.compatibleIDs) {
                let path = IdeBootRule.cdd(cs.name).appending(id.replacingOccurrences(of: "\\", with: "#"))
                var edit = KeyEdit(.system, path, facts.registry.key(.system, path))
                edit.set("Service", .string(svc.name))
                edit.set("ClassGUID", .string(p.inf.classGUID))
                out += edit.changes
            }
        }
        return out
    }

    /// The INF's hardware IDs, each followed by its `VEN_xxxx&DEV_xxxx` form (what every PCI device reports as its
    /// least specific hardware ID, whatever subsystem and revision the hypervisor gives it), lowercased as Windows stores them.
    static func criticalIDs(_ ids: [String]) -> [String] {
        var out: [String] = []
        var seen = Set<String>()
        for id in ids {
            let lower = id.lowercased()
            if seen.insert(lower).inserted { out.append(lower) }
            let parts = lower.split(separator: "&")
            if lower.hasPrefix("pci\\"), parts.count > 2 {
                let short = parts.prefix(2).joined(separator: "&")
                if seen.insert(short).inserted { out.append(short) }
            }
        }
        return out
    }

    /// The `oemN.inf` numbers in use: set in `DriverDatabase\OemInfMap` (a bitmap, most significant bit first: `ff f0`
    /// is oem0 to oem11), named under `DriverDatabase\DriverInfFiles`, or present as `C:\Windows\INF\oemN.inf`.
    static func usedOemNumbers(_ facts: ImageFacts) -> Set<Int> {
        var used = Set<Int>()
        if case .binary(let map)? = facts.registry.key(.system, driverDatabase)?.value("OemInfMap") {
            for (i, byte) in map.enumerated() {
                for bit in 0..<8 where byte & (0x80 >> UInt8(bit)) != 0 { used.insert(i * 8 + bit) }
            }
        }
        for k in facts.registry.key(.system, driverDatabase.appending("DriverInfFiles"))?.subkeys ?? [] {
            let n = k.name.lowercased()
            if n.hasPrefix("oem"), n.hasSuffix(".inf"), let i = Int(n.dropFirst(3).dropLast(4)) { used.insert(i) }
        }
        for n in 0..<(oemCandidates(facts) + 1) where facts.files.file(infDirectory(facts.os) + "/oem\(n).inf") != nil {
            used.insert(n)
        }
        return used
    }

    /// How many oemN numbers remedy looks at: beyond every number the registry knows, room for the packages it adds.
    static func oemCandidates(_ facts: ImageFacts) -> Int {
        var top = 0
        if case .binary(let map)? = facts.registry.key(.system, driverDatabase)?.value("OemInfMap") {
            top = map.count * 8
        }
        top = max(top, facts.registry.key(.system, driverDatabase.appending("DriverInfFiles"))?.subkeys.count ?? 0)
        return min(top, 4096) + 8
    }

    /// The `oemN.inf` name of every boot-critical package this rule publishes: the one already recorded for the package,
    /// else the lowest number nobody uses (see ``usedOemNumbers(_:)``), in package order.
    func publishedNames(_ facts: ImageFacts) -> [String: String] {
        let infFiles = facts.registry.key(.system, Self.driverDatabase.appending("DriverInfFiles"))?.subkeys ?? []
        var used = Self.usedOemNumbers(facts)
        var out: [String: String] = [:]
        for p in packages(facts.payloads) where p.bootCritical {
            if let svc = p.inf.functionService, Self.workingService(facts, svc) != nil { continue }
            let label = Self.label(p, facts.os)
            if let mine = infFiles.first(where: { $0.value("Active") == .string(label) }) {
                out[p.inf.name] = mine.name
                continue
            }
            var n = 0
            while used.contains(n) { n += 1 }
            used.insert(n)
            out[p.inf.name] = "oem\(n).inf"
        }
        return out
    }

    /// Marks the numbers remedy takes in `DriverDatabase\OemInfMap` (extended by whole bytes when needed).
    func oemInfMapAction(_ facts: ImageFacts, published: [String: String]) -> Action? {
        guard facts.os.isWindows8OrLater, !published.isEmpty else { return nil }
        let key = facts.registry.key(.system, Self.driverDatabase)
        var map: [UInt8] = if case .binary(let m)? = key?.value("OemInfMap") { m } else { [] }
        for name in published.values.sorted() {
            guard let n = Int(name.dropFirst(3).dropLast(4)) else { continue }
            while map.count <= n / 8 { map.append(0) }
            map[n / 8] |= 0x80 >> UInt8(n % 8)
        }
        var edit = KeyEdit(.system, Self.driverDatabase, key)
        edit.set("OemInfMap", .binary(map))
        guard !edit.changes.isEmpty else { return nil }
        return Action(
            rule: id,
            description:
                "mark \(published.values.sorted().joined(separator: ", ")) as used in DriverDatabase\\OemInfMap",
            target: "OemInfMap", changes: edit.changes)
    }

    /// Windows 8 and later: what Windows records in the DriverDatabase for an imported OEM package (compared with the
    /// real packages of a Windows 10 1709 SYSTEM hive, see the README): the package (`<inf>_<arch>_<hash>`) with
    /// its published name, Version, Catalog, InfName, Provider; a configuration per install section, named as the
    /// INF decorates it, with ConfigScope and Service; a descriptor per hardware and compatible ID naming it, with the
    /// INF's `%token%` description and manufacturer and a Strings key for them; each ID under DeviceIds pointing at
    /// the published INF (rank 01 for a hardware ID, 02 for a compatible ID); the INF under `DeviceIds\{class}`.
    func driverDatabaseChanges(_ p: DriverPackage, _ facts: ImageFacts, published names: [String: String]) -> [Change] {
        guard let svc = p.inf.functionService, let published = names[p.inf.name] else { return [] }
        let label = Self.label(p, facts.os)
        let ddb = Self.driverDatabase
        var out: [Change] = []
        func key(_ path: RegistryPath, _ body: (inout KeyEdit) -> Void) {
            var edit = KeyEdit(.system, path, facts.registry.key(.system, path))
            body(&edit)
            out += edit.changes
        }
        var configurations: [String] = []
        var seen = Set<String>()
        for m in p.inf.models where seen.insert(m.configuration.lowercased()).inserted {
            configurations.append(m.configuration)
        }
        key(ddb.appending("DriverInfFiles").appending(published)) {
            $0.set("", .multiString([label]))
            $0.set("Active", .string(label))
            $0.set("Configurations", .multiString(configurations))
        }
        let package = ddb.appending("DriverPackages").appending(label)
        key(package) {
            $0.set("", .string(published))
            $0.set(
                "Version",
                .binary(
                    Self.versionBlob(
                        classGUID: p.inf.classGUID, date: p.inf.date, version: p.inf.version, arch: facts.os.arch)))
            $0.set("Provider", .string(p.inf.provider))
            $0.set("InfName", .string(p.inf.name))
            if let cat = p.inf.catalog { $0.set("Catalog", .string(cat.lowercased())) }
            $0.set("OemPath", .string("C:\\" + Self.windowsPath(Self.storeDirectory(facts.os))))
        }
        for config in configurations {
            key(package.appending("Configurations").appending(config)) {
                $0.set("ConfigFlags", .dword(0))
                $0.set("ConfigScope", .dword(7))
                $0.set("Service", .string(svc.name))
            }
        }
        let manufacturer = p.inf.rawManufacturer.isEmpty ? p.inf.provider : p.inf.rawManufacturer
        for model in p.inf.models {
            let description = model.rawDescription.isEmpty ? model.description : model.rawDescription
            for (ids, rank) in [(model.hardwareIDs, UInt8(1)), (model.compatibleIDs, UInt8(2))] {
                for id in ids {
                    let (enumerator, rest) = Self.split(id)
                    key(package.appending("Descriptors").appending(enumerator).appending(rest)) {
                        $0.set("Configuration", .string(model.configuration))
                        $0.set("Description", .string(description))
                        $0.set("Manufacturer", .string(manufacturer))
                    }
                    key(ddb.appending("DeviceIds").appending(enumerator).appending(rest)) {
                        // A compatible ID that is also a hardware ID elsewhere keeps the hardware rank.
                        let hw = rank == 2 && p.inf.hardwareIDs.contains { $0.uppercased() == id.uppercased() }
                        $0.set(published, .binary([hw ? 1 : rank, 0xFF, 0x00, 0x00]))
                    }
                }
            }
        }
        if !p.inf.usedStrings.isEmpty {
            key(package.appending("Strings")) {
                for (token, text) in p.inf.usedStrings.sorted(by: { $0.key < $1.key }) { $0.set(token, .string(text)) }
            }
        }
        key(ddb.appending("DeviceIds").appending(p.inf.classGUID.lowercased())) {
            $0.set(published, .raw(type: 0, data: []))
        }
        return out
    }

    /// `/Windows/Drivers/VirtIO` -> `Windows\Drivers\VirtIO`.
    static func windowsPath(_ guest: String) -> String {
        guest.split(separator: "/").joined(separator: "\\")
    }

    static func split(_ id: String) -> (String, String) {
        guard let i = id.firstIndex(of: "\\") else { return (id, "") }
        return (String(id[..<i]), String(id[id.index(after: i)...]))
    }

    /// `DriverPackages\<label>\Version`, 48 bytes as real packages have it: `00 ff`, the architecture (9 amd64, 0 x86,
    /// as `DriverDatabase\Architecture`), `00`, four zero bytes, the setup class GUID (Windows' mixed-endian byte
    /// order), the DriverVer date as a FILETIME (midnight UTC), the DriverVer version as four 16-bit words (least
    /// significant first: a DWORDLONG `major<<48 | minor<<32 | build<<16 | revision`), eight zero bytes.
    static func versionBlob(classGUID: String, date: String, version: String, arch: Architecture) -> [UInt8] {
        var out: [UInt8] =
            [0x00, 0xFF, arch == .i386 ? 0x00 : 0x09, 0x00, 0x00, 0x00, 0x00, 0x00] + guidBytes(classGUID)
        out += le64(fileTime(date) ?? 0)
        let parts = version.split(separator: ".").map { UInt64($0) ?? 0 } + [0, 0, 0, 0]
        out += le64(parts[0] << 48 | (parts[1] & 0xFFFF) << 32 | (parts[2] & 0xFFFF) << 16 | (parts[3] & 0xFFFF))
        out += [UInt8](repeating: 0, count: 8)
        return out
    }

    static func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

    /// `MM/DD/YYYY` -> 100-ns intervals since 1601-01-01 UTC at midnight of that day.
    static func fileTime(_ date: String) -> UInt64? {
        let p = date.split(separator: "/").compactMap { Int($0) }
        guard p.count == 3, (1...12).contains(p[0]), (1...31).contains(p[1]), (1601...30827).contains(p[2]) else {
            return nil
        }
        // Days from 1601-01-01 (civil-from-days arithmetic, proleptic Gregorian).
        func days(_ y: Int, _ m: Int, _ d: Int) -> Int {
            let y2 = m <= 2 ? y - 1 : y
            let era = (y2 >= 0 ? y2 : y2 - 399) / 400
            let yoe = y2 - era * 400
            let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
            return era * 146097 + doe
        }
        let n = days(p[2], p[0], p[1]) - days(1601, 1, 1)
        return UInt64(n) * 86_400 * 10_000_000
    }

    static func guidBytes(_ guid: String) -> [UInt8] { WindowsGUID.bytes(guid) ?? [UInt8](repeating: 0, count: 16) }
}
