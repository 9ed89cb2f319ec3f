/// `image-metadata`: the cloud image properties this image supports once
/// the plan is applied, for the pipeline to pass to the image registration
/// call. It changes nothing in the image; the planner evaluates it on the
/// registry as the plan leaves it.
public struct ImageMetadataRule: Rule {
    /// The id a policy names this rule by, declared here once.
    public static let id = "image-metadata"
    public var id: String { Self.id }

    public enum Style: String, Sendable { case openstack, huawei }
    public var style: Style
    public var describesResult: Bool { true }

    /// Windows versions for which the clouds document NIC multi-queue on KVM
    /// (2008 R2, 2012 R2, 2016), as `major.minor` and build.
    static let multiqueueVersions: [(version: String, build: String?)] = [
        ("6.1", nil), ("6.3", nil), ("10.0", "14393"),
    ]

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: Self.id,
            summary:
                "Report the cloud image properties the image supports after the plan (os_type, hw_firmware_type, hw_disk_bus, ...).",
            checks:
                "The inspected boot mode (GPT + EFI system partition = uefi, MBR = bios), the architecture and version, and the "
                + "drivers Windows would load at boot in the current control set as the plan leaves it (Start=0 and no "
                + "StartOverride demoting it): viostor / vioscsi "
                + "(VirtIO block / SCSI), the IDE path (intelide or pciide, and atapi), netkvm (VirtIO network).",
            changes:
                "Nothing in the image. The plan and apply report carry `properties`: os_type=windows, os_distro=windows, "
                + "hw_firmware_type, hw_disk_bus (virtio, scsi with hw_scsi_model=virtio-scsi, or ide), hw_vif_model, and "
                + "hw_vif_multiqueue_enabled=true when netkvm is present on 2008 R2, 2012 R2 or 2016. With style: huawei also "
                + "__os_type, __os_bit, __platform, __os_version (from the product name: check it against the cloud's "
                + "GET /v1/cloudimages/os_version list), __support_kvm and virtual_env_type=FusionCompute.",
            why:
                "The cloud decides the virtual hardware from these properties: a disk bus the image has no boot driver for is "
                + "a 0x7B at first boot, multi-queue without a paravirtual NIC driver does nothing. Deriving them from the image "
                + "itself, after remediation, keeps the registration call honest.",
            parameters: [("style", "openstack (default) or huawei: which property names to emit")]),
        make: { p, _ in
            try p.only(["style"], rule: Self.id)
            return ImageMetadataRule(
                style: Style(rawValue: try p.string("style", default: "openstack", oneOf: ["openstack", "huawei"]))!)
        })

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        [RegistryRequirement(.system, WindowsKeys.services(os.currentControlSet), depth: 1)]
            + WindowsKeys.startOverrideRequirements(os, [os.currentControlSet], services: Self.bootDrivers)
    }

    /// The disk drivers hw_disk_bus is derived from.
    static let bootDrivers = ["viostor", "vioscsi", "intelide", "pciide", "atapi"]

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        let os = facts.os
        let cs = os.currentControlSet
        // A boot driver demoted by StartOverride (Windows 8+) does not load, whatever its Start says.
        func loadsAtBoot(_ name: String) -> Bool { WindowsKeys.loadsAtBoot(facts, cs, name) }
        func installed(_ name: String) -> Bool {
            guard let s = WindowsKeys.start(facts, cs, name) else { return false }
            return s != UInt64(ServiceStart.disabled)
        }
        var p: [String: String] = ["os_type": "windows", "os_distro": "windows"]
        if os.firmware != .unknown { p["hw_firmware_type"] = os.firmware.rawValue }
        if loadsAtBoot("viostor") {
            p["hw_disk_bus"] = "virtio"
        } else if loadsAtBoot("vioscsi") {
            p["hw_disk_bus"] = "scsi"
            p["hw_scsi_model"] = "virtio-scsi"
        } else if (loadsAtBoot("intelide") || loadsAtBoot("pciide")) && loadsAtBoot("atapi") {
            p["hw_disk_bus"] = "ide"
        }
        let netkvm = installed("netkvm")
        if netkvm { p["hw_vif_model"] = "virtio" }
        let mq = Self.multiqueueVersions.contains {
            $0.version == os.version && ($0.build == nil || $0.build == os.build)
        }
        if netkvm && mq { p["hw_vif_multiqueue_enabled"] = "true" }
        if style == .huawei {
            p["__os_type"] = "Windows"
            p["__platform"] = "Windows"
            p["__os_bit"] = "\(os.bits)"
            p["__os_version"] = "\(os.product) \(os.bits)bit"
            p["__support_kvm"] = "true"
            p["virtual_env_type"] = "FusionCompute"
        }
        var findings: [Finding] = []
        if p["hw_disk_bus"] == nil {
            findings.append(
                Finding(
                    id: "no-boot-disk-driver", rule: id, severity: .blocker,
                    message:
                        "no disk controller driver of a KVM guest loads at boot in \(cs) (neither viostor, vioscsi nor the IDE path): the first boot would stop with 0x7B",
                    measured: "viostor/vioscsi/intelide/pciide not boot-start (Start, StartOverride)",
                    requirement: "one of them with Start=0 and no StartOverride demoting it"))
        }
        return RuleResult(findings: findings, properties: p)
    }
}
