/// `multi-queue`: NIC multi-queue on a KVM cloud. The cloud turns it on
/// per image (`hw_vif_multiqueue_enabled=true`, one queue per vCPU); inside
/// Windows it needs a paravirtual NIC driver that spreads queues over CPUs
/// (netkvm, or the cloud's own) and receive-side scaling not switched off.
public struct MultiQueueRule: Rule {
    /// The id a policy names this rule by, declared here once.
    public static let id = "multi-queue"
    public var id: String { Self.id }
    /// Windows releases the cloud supports multi-queue on: `6.1`, `6.3`, or `10.0.<build>`.
    public var supported: [String]
    /// Service names of paravirtual NIC drivers that do multi-queue.
    public var drivers: [String]

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: Self.id,
            summary:
                "NIC multi-queue: check a paravirtual NIC driver is there (netkvm, injected by virtio-drivers), keep receive-side "
                + "scaling on, and report hw_vif_multiqueue_enabled in the image properties on a supported Windows.",
            checks:
                "Windows version against the supported list (Huawei Cloud: Windows Server 2008 R2, 2012 R2 and 2016 on KVM). A "
                + "paravirtual NIC driver: the netkvm service in the current control set, or netkvm.inf being injected from virtio-win. "
                + "Receive-side scaling: Services\\Tcpip\\Parameters EnableRSS (Windows' global RSS switch, netsh int tcp set global "
                + "rss), Services\\NDIS\\Parameters RSS, and each netkvm adapter's *RSS advanced property under the network class key.",
            changes:
                "EnableRSS, NDIS RSS and a netkvm adapter's *RSS set back to enabled (1) where they are 0, in every control set. "
                + "The image property hw_vif_multiqueue_enabled=true when the version is supported and the driver is there.",
            why:
                "The cloud enables multi-queue from the image property, but Windows only uses the extra queues through a driver "
                + "that supports them and with RSS on; an image with RSS switched off (a common tuning step on VMware) gets one "
                + "queue whatever the flavor.",
            parameters: [
                ("supported", "Windows versions multi-queue is offered for (default 6.1, 6.3, 10.0.14393)"),
                ("drivers", "paravirtual NIC services that support it (default netkvm)"),
            ]),
        make: { p, _ in
            try p.only(["supported", "drivers"], rule: Self.id)
            return MultiQueueRule(
                supported: try p.strings("supported", default: ["6.1", "6.3", "10.0.14393"]),
                drivers: try p.strings("drivers", default: ["netkvm"]).map { $0.lowercased() })
        })

    static let netClass = "{4D36E972-E325-11CE-BFC1-08002BE10318}"
    static func tcpip(_ cs: String) -> RegistryPath { RegistryPath("\(cs)\\Services\\Tcpip\\Parameters") }
    static func ndis(_ cs: String) -> RegistryPath { RegistryPath("\(cs)\\Services\\NDIS\\Parameters") }

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        WindowsKeys.servicesRequirements(os)
            + os.orderedControlSets.flatMap {
                [
                    RegistryRequirement(.system, Self.tcpip($0.name), depth: 0),
                    RegistryRequirement(.system, Self.ndis($0.name), depth: 0),
                    RegistryRequirement(.system, WindowsKeys.classKey($0.name, Self.netClass), depth: 1),
                ]
            }
    }

    public func fileRequirements(for facts: ImageFacts) -> [FileRequirement] {
        drivers.map { FileRequirement(VirtioDriversRule.storeDirectory(facts.os) + "/\($0).inf") }
    }

    /// Whether the cloud offers multi-queue for this Windows.
    func isSupported(_ os: OSFacts) -> Bool {
        guard os.variant.lowercased() != "client" else { return false }
        return supported.contains { v in
            let parts = v.split(separator: ".")
            guard parts.count >= 2, Int(parts[0]) == os.majorVersion, Int(parts[1]) == os.minorVersion else {
                return false
            }
            return parts.count < 3 || String(parts[2]) == os.build
        }
    }

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var result = RuleResult()
        let os = facts.os
        guard isSupported(os) else {
            result.findings.append(
                Finding(
                    id: "multi-queue-unsupported", rule: id, severity: .info,
                    message:
                        "NIC multi-queue is not offered for \(os.product) (the cloud supports it on \(supported.joined(separator: ", "))): "
                        + "the image is registered without hw_vif_multiqueue_enabled",
                    measured: os.version + (os.build.map { ".\($0)" } ?? ""),
                    requirement: supported.joined(separator: ", ")))
            return result
        }
        let installed = drivers.first { WindowsKeys.start(facts, os.currentControlSet, $0) != nil }
        let injected = drivers.first { facts.files.file(VirtioDriversRule.storeDirectory(os) + "/\($0).inf") != nil }
        guard let driver = installed ?? injected else {
            result.findings.append(
                Finding(
                    id: "multi-queue-no-driver", rule: id, severity: .warning,
                    message:
                        "no paravirtual NIC driver that supports multi-queue (\(drivers.joined(separator: ", "))) is in the image or being "
                        + "injected: give --virtio-win so netkvm is injected, or install the cloud's NIC driver",
                    measured: "none", requirement: drivers.joined(separator: " or ")))
            return result
        }
        for cs in os.orderedControlSets {
            for (path, name) in [(Self.tcpip(cs.name), "EnableRSS"), (Self.ndis(cs.name), "RSS")] {
                let key = facts.registry.key(.system, path)
                guard let v = key?.value(name), v.number == 0 else { continue }
                var edit = KeyEdit(.system, path, key)
                edit.set(name, .dword(1))
                result.actions.append(
                    Action(
                        rule: id, description: "turn receive-side scaling back on (\(name)) in \(cs.label)",
                        target: name, changes: edit.changes))
            }
            for adapter in facts.registry.key(.system, WindowsKeys.classKey(cs.name, Self.netClass))?.subkeys ?? [] {
                guard let svc = adapter.value("Service")?.strings.first ?? adapter.value("ComponentId")?.strings.first,
                    drivers.contains(where: { svc.lowercased().contains($0) }),
                    case .string(let rss)? = adapter.value("*RSS"), rss == "0"
                else { continue }
                let path = WindowsKeys.classKey(cs.name, Self.netClass).appending(adapter.name)
                var edit = KeyEdit(.system, path, adapter)
                edit.set("*RSS", .string("1"))
                result.actions.append(
                    Action(
                        rule: id,
                        description:
                            "turn receive-side scaling back on for \(svc) adapter \(adapter.name) in \(cs.label)",
                        target: adapter.name, changes: edit.changes))
            }
        }
        result.properties["hw_vif_multiqueue_enabled"] = "true"
        _ = driver
        return result
    }
}
