import Foundation
import RegistryFormat

/// `virtio-drivers`: VirtIO drivers from virtio-win, injected so Windows
/// boots from a VirtIO disk and installs the rest of the drivers itself at
/// first boot. Everything written is derived from the packages' INF files:
/// the directory matching the inspected Windows is chosen by
/// ``VirtioWin``, and the INF's `[Manufacturer]` models and `AddService`
/// directives give the hardware IDs and the service entries.
public struct VirtioDriversRule: Rule {
    public let id = "virtio-drivers"
    /// INF names (without `.inf`) to inject, from those the chosen directory has.
    public var drivers: [String]
    /// A missing `--virtio-win` blocks instead of warning.
    public var required: Bool
    /// Known problems of virtio-win releases on some Windows versions (from `Payloads/virtio-win/manifest.yaml`).
    public var knownIssues: [PayloadManifest.KnownIssue]

    public static let defaultDrivers = ["viostor", "vioscsi", "netkvm", "balloon", "vioser", "viorng", "pvpanic", "fwcfg", "qemufwcfg"]

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: "virtio-drivers",
            summary: "Inject VirtIO drivers from virtio-win (--virtio-win ISO or tree), derived from their INF files: storage drivers "
                + "boot-start, the rest installed at first boot with pnputil.",
            checks: "The virtio-win directory for the inspected Windows (version, server/client, build, architecture: 2k8, 2k8R2, "
                + "2k12, 2k12R2, 2k16, 2k19, 2k22, 2k25, w7, w8, w8.1, w10, w11; amd64 or x86). For each package its INF: [Version] "
                + "class, [Manufacturer] models and hardware IDs for the architecture, AddService service entries. In the image: "
                + "the files under C:\\Windows\\Drivers\\VirtIO, the services in every control set, the CriticalDeviceDatabase "
                + "(before Windows 8) or the DriverDatabase (Windows 8 and later), DevicePath.",
            changes: "Every package's files into C:\\Windows\\Drivers\\VirtIO. For boot-critical storage packages (SCSIAdapter class, "
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
                ("drivers", "INF names to inject (default: \(defaultDrivers.joined(separator: ", ")); those the directory lacks are skipped)"),
                ("required", "true: a missing --virtio-win is a blocker (default false: a warning; the image still boots from IDE)"),
            ]),
        make: { p in
            try p.only(["drivers", "required"], rule: "virtio-drivers")
            return VirtioDriversRule(drivers: try p.strings("drivers", default: defaultDrivers).map { $0.lowercased() },
                                     required: try p.bool("required", default: false),
                                     knownIssues: PayloadManifest.named("virtio-win")?.knownIssues ?? [])
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
        "\(p.inf.name)_\(os.arch == "i386" ? "x86" : "amd64")_\(p.infSHA256.prefix(16))"
    }

    public func requirements(for os: OSFacts) -> [RegistryRequirement] { requirements(for: os, payloads: PayloadFacts()) }

    public func requirements(for os: OSFacts, payloads: PayloadFacts) -> [RegistryRequirement] {
        var out = WindowsKeys.servicesRequirements(os) + [RegistryRequirement(.software, Self.currentVersion, depth: 0)]
        if os.isWindows8OrLater {
            out.append(RegistryRequirement(.system, Self.driverDatabase.appending("DriverInfFiles"), depth: 1))
            for p in packages(payloads) where p.bootCritical {
                out.append(RegistryRequirement(.system, Self.driverDatabase.appending("DriverPackages").appending(Self.label(p, os)), depth: 4))
                for id in p.inf.hardwareIDs {
                    out.append(RegistryRequirement(.system, Self.driverDatabase.appending("DeviceIds").appending(id), depth: 0))
                }
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
                if let sys = Self.functionBinary(p) { out.append(FileRequirement(Self.driversDirectory(os) + "/" + sys)) }
                if os.isWindows8OrLater {
                    for f in p.files { out.append(FileRequirement(Self.fileRepository(os) + "/" + Self.label(p, os) + "/" + f.name)) }
                    if let published = publishedName(p, facts) { out.append(FileRequirement(Self.infDirectory(os) + "/" + published)) }
                }
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
            let has = WindowsKeys.start(facts, os.currentControlSet, "viostor") == UInt64(ServiceStart.boot)
                || WindowsKeys.start(facts, os.currentControlSet, "vioscsi") == UInt64(ServiceStart.boot)
            if !has {
                result.findings.append(Finding(
                    id: "virtio-win-missing", rule: id, severity: required ? .blocker : .warning,
                    message: "the image has no VirtIO storage driver and no virtio-win was given (--virtio-win PATH or REMEDY_VIRTIO_WIN): "
                        + "it can only boot from an IDE disk (hw_disk_bus=ide), slowly; give the virtio-win ISO or tree to inject the drivers",
                    measured: "no viostor/vioscsi", requirement: "VirtIO storage driver"))
            }
            return result
        }
        let chosen = packages(facts.payloads)
        for issue in knownIssues where issue.windows.contains(os.version) {
            if let from = issue.fromDriverVersion, compareVersions(virtio.driverVersion, from) < 0 { continue }
            if let updates = issue.unlessUpdates {
                let installed = (facts.registry.key(.software, Self.cbsPackages)?.subkeys ?? []).map { $0.name.uppercased() }
                if updates.contains(where: { kb in installed.contains { $0.contains(kb.uppercased()) } }) { continue }
            }
            result.findings.append(Finding(
                id: "virtio-win-known-issue", rule: id, severity: issue.severity == "blocker" ? .blocker : .warning,
                message: issue.message + (issue.reference.map { " (\($0))" } ?? ""),
                measured: "virtio-win \(virtio.selected) driver version \(virtio.driverVersion)", requirement: issue.unlessUpdates?.joined(separator: " or ")))
        }
        var files = facts.files
        var installCommands: [String] = []
        for p in chosen {
            var action = Action(rule: id, description: "inject \(p.inf.name) \(p.inf.version) (\(p.inf.driverClass)) from virtio-win \(virtio.selected)",
                                target: String(p.inf.name.dropLast(4)), changes: [])
            for f in p.files {
                if let c = FileChange.copy(Self.storeDirectory(os) + "/" + f.name, from: f, in: files) { action.files.append(c) }
            }
            installCommands.append(p.inf.name)
            if p.bootCritical {
                if let sys = Self.functionBinary(p), let f = p.files.first(where: { $0.name == sys }),
                   let c = FileChange.copy(Self.driversDirectory(os) + "/" + sys, from: f, in: files) {
                    action.files.append(c)
                }
                action.changes += serviceChanges(p, facts)
                action.changes += os.isWindows8OrLater ? driverDatabaseChanges(p, facts) : criticalDeviceChanges(p, facts)
                if os.isWindows8OrLater {
                    for f in p.files {
                        if let c = FileChange.copy(Self.fileRepository(os) + "/" + Self.label(p, os) + "/" + f.name, from: f, in: files) { action.files.append(c) }
                    }
                    if let inf = p.files.first(where: { $0.name == p.inf.name }),
                       let published = publishedName(p, facts),
                       let c = FileChange.copy(Self.infDirectory(os) + "/" + published, from: inf, in: files) {
                        action.files.append(c)
                    }
                }
            }
            for c in action.files { files.apply(c) }
            if !action.changes.isEmpty || !action.files.isEmpty { result.actions.append(action) }
        }
        // DevicePath: Plug and Play searches it for drivers of new devices.
        if !chosen.isEmpty {
            let key = facts.registry.key(.software, Self.currentVersion)
            let entry = "%SystemRoot%\\Drivers\\VirtIO"
            let now: String = switch key?.value("DevicePath") {
            case .string(let s)?, .expandString(let s)?: s
            default: "%SystemRoot%\\inf"
            }
            if !now.lowercased().split(separator: ";").contains(where: { $0.trimmingCharacters(in: .whitespaces) == entry.lowercased() }) {
                var edit = KeyEdit(.software, Self.currentVersion, key)
                edit.set("DevicePath", .expandString(now + ";" + entry))
                result.actions.append(Action(rule: id, description: "add \(entry) to DevicePath so Plug and Play finds the VirtIO drivers",
                                             target: "DevicePath", changes: edit.changes))
            }
            // The rest at first boot: pnputil adds every package to the driver store and installs it on matching devices.
            // pnputil exits 259 when no device needs the package yet and 3010 when a restart completes the install.
            let body = ["@echo off", "rem remedy: install the VirtIO drivers (virtio-win \(virtio.selected), \(virtio.driverVersion))",
                        "set \"FAILED=0\"", "set \"RESTART=0\""]
                + installCommands.flatMap { inf in [
                    "pnputil -i -a \"%SystemRoot%\\Drivers\\VirtIO\\\(inf)\"",
                    "if %ERRORLEVEL%==3010 set \"RESTART=1\"",
                    "if not %ERRORLEVEL%==0 if not %ERRORLEVEL%==259 if not %ERRORLEVEL%==3010 set \"FAILED=1\"",
                ] } + ["if %FAILED%==1 exit /b 1", "if %RESTART%==1 exit /b 3010", "exit /b 0", ""]
            let step = FirstBoot.step(os, name: Self.firstBootStep, body: body.joined(separator: "\n"), files: files)
            if !step.isEmpty {
                result.actions.append(Action(rule: id, description: "first boot: pnputil installs \(installCommands.count) VirtIO driver package(s)",
                                             target: "first-boot", changes: [], files: step))
            }
        }
        return result
    }

    /// The boot-critical service, as the INF's AddService describes it, in every control set.
    func serviceChanges(_ p: DriverPackage, _ facts: ImageFacts) -> [Change] {
        guard let svc = p.inf.functionService else { return [] }
        var out: [Change] = []
        for cs in facts.os.orderedControlSets {
            let path = WindowsKeys.service(cs.name, svc.name)
            var edit = KeyEdit(.system, path, facts.registry.key(.system, path))
            edit.set("Type", .dword(svc.type))
            edit.set("Start", .dword(svc.start))
            edit.set("ErrorControl", .dword(svc.errorControl))
            if let g = svc.group { edit.set("Group", .string(g)) }
            edit.set("ImagePath", .expandString(svc.imagePath))
            if let d = svc.displayName { edit.set("DisplayName", .string(d)) }
            out += edit.changes
        }
        return out
    }

    /// Windows before 8: `CriticalDeviceDatabase\<hardware id with # for \>` -> Service, ClassGUID, for every
    /// hardware ID of the INF and the vendor&device form of each, in every control set.
    func criticalDeviceChanges(_ p: DriverPackage, _ facts: ImageFacts) -> [Change] {
        guard let svc = p.inf.functionService else { return [] }
        var out: [Change] = []
        for cs in facts.os.orderedControlSets {
            for id in Self.criticalIDs(p.inf.hardwareIDs) {
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
        for id in ids {
            let lower = id.lowercased()
            if !out.contains(lower) { out.append(lower) }
            let parts = lower.split(separator: "&")
            if lower.hasPrefix("pci\\"), parts.count > 2 {
                let short = parts.prefix(2).joined(separator: "&")
                if !out.contains(short) { out.append(short) }
            }
        }
        return out
    }

    /// The `oemN.inf` name the package is published under: the one already recorded for this package, else the
    /// first free number in `DriverDatabase\DriverInfFiles`.
    func publishedName(_ p: DriverPackage, _ facts: ImageFacts) -> String? {
        let label = Self.label(p, facts.os)
        let infFiles = facts.registry.key(.system, Self.driverDatabase.appending("DriverInfFiles"))?.subkeys ?? []
        if let mine = infFiles.first(where: { $0.value("Active") == .string(label) }) { return mine.name }
        let used = Set(infFiles.compactMap { k -> Int? in
            let n = k.name.lowercased()
            guard n.hasPrefix("oem"), n.hasSuffix(".inf") else { return nil }
            return Int(n.dropFirst(3).dropLast(4))
        })
        // Packages this plan publishes before this one take their numbers too.
        let earlier = packages(facts.payloads).filter(\.bootCritical).prefix { $0.inf.name != p.inf.name }.count
        var n = 0, skip = earlier
        while true {
            if !used.contains(n) {
                if skip == 0 { return "oem\(n).inf" }
                skip -= 1
            }
            n += 1
        }
    }

    /// Windows 8 and later: what DISM's offline /Add-Driver records so a boot device finds its driver. The package
    /// (`<inf>_<arch>_<hash>`) gets a configuration per install section, a descriptor per hardware ID naming it, and
    /// each hardware ID under DeviceIds points at the published INF.
    func driverDatabaseChanges(_ p: DriverPackage, _ facts: ImageFacts) -> [Change] {
        guard let svc = p.inf.functionService, let published = publishedName(p, facts) else { return [] }
        let label = Self.label(p, facts.os)
        let ddb = Self.driverDatabase
        var out: [Change] = []
        func key(_ path: RegistryPath, _ body: (inout KeyEdit) -> Void) {
            var edit = KeyEdit(.system, path, facts.registry.key(.system, path))
            body(&edit)
            out += edit.changes
        }
        let configurations = p.inf.models.map(\.installSection).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        key(ddb.appending("DriverInfFiles").appending(published)) {
            $0.set("", .multiString([label]))
            $0.set("Active", .string(label))
            $0.set("Configurations", .multiString(configurations))
        }
        let package = ddb.appending("DriverPackages").appending(label)
        key(package) {
            $0.set("", .string(published))
            $0.set("Version", .binary(Self.versionBlob(classGUID: p.inf.classGUID)))
            $0.set("Provider", .string(p.inf.provider))
            $0.set("InfName", .string(p.inf.name))
        }
        for config in configurations {
            key(package.appending("Configurations").appending(config)) {
                $0.set("ConfigFlags", .dword(0))
                $0.set("Service", .string(svc.name))
            }
        }
        for model in p.inf.models {
            for id in model.hardwareIDs {
                let (enumerator, rest) = Self.split(id)
                key(package.appending("Descriptors").appending(enumerator).appending(rest)) {
                    $0.set("Configuration", .string(model.installSection))
                    $0.set("Description", .string(model.description))
                    $0.set("Manufacturer", .string(p.inf.provider))
                }
                key(ddb.appending("DeviceIds").appending(enumerator).appending(rest)) {
                    $0.set(published, .binary([0x01, 0xFF, 0x00, 0x00]))
                }
            }
        }
        return out
    }

    static func split(_ id: String) -> (String, String) {
        guard let i = id.firstIndex(of: "\\") else { return (id, "") }
        return (String(id[..<i]), String(id[id.index(after: i)...]))
    }

    /// `DriverPackages\<label>\Version`: a header, the setup class GUID (Windows' mixed-endian byte order), then
    /// the driver date and version fields left zero (the layout known to work offline; Windows fills them when
    /// pnputil installs the package at first boot).
    static func versionBlob(classGUID: String) -> [UInt8] {
        [0x00, 0xFF, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00] + guidBytes(classGUID) + [UInt8](repeating: 0, count: 24)
    }

    static func guidBytes(_ guid: String) -> [UInt8] { WindowsGUID.bytes(guid) ?? [UInt8](repeating: 0, count: 16) }
}
