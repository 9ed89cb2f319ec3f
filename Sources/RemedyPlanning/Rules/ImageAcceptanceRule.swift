/// `image-acceptance`: the cloud's published requirements for a private
/// image made from an external Windows image file, as findings with stable
/// ids, the measured value and the requirement. Nothing here changes the image.
public struct ImageAcceptanceRule: Rule {
    /// The id a policy names this rule by, declared here once.
    public static let id = "image-acceptance"
    public var id: String { Self.id }

    public var formats: [String]
    public var maxImageGB: Int
    public var fastImportMaxGB: Int
    public var minDiskGB: Int
    public var maxDiskGB: Int
    /// Lowest NT version the cloud boots with UEFI.
    public var uefiMinimum: String

    static let gb: Int64 = 1_000_000_000
    static let gib: Int64 = 1_073_741_824

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: Self.id,
            summary:
                "The cloud's image-file rules for a Windows private image: format, file size, system disk size, boot layout, boot mode, an enabled administrator.",
            checks:
                "Image format (from content) against the accepted list; image file size (over max-image-gb only RAW with the cloud's "
                + "bitmap file, or ZVHD2, via fast import up to fast-import-max-gb); the disk's virtual size within [min-disk-gb, "
                + "max-disk-gb]; the boot manager on this disk (bootmgr + \\Boot\\BCD on MBR, \\EFI\\Microsoft\\Boot\\bootmgfw.efi on "
                + "the EFI system partition on GPT); boot mode (GPT+ESP = UEFI, MBR = BIOS) and whether the Windows version boots "
                + "with UEFI on the cloud; the SAM hive's built-in Administrator (RID 500) and other local accounts: at least one enabled; "
                + "other data partitions on the system disk.",
            changes:
                "Nothing: each failed requirement is a finding (image-format, image-size, system-disk-size, boot-partition, "
                + "boot-mode, admin-account, data-partition; password-complexity is always an info finding because it cannot be "
                + "read offline). remedy convert --to raw|qcow2 changes the format; the fast-import bitmap (.mf) is made by the "
                + "cloud's own tool, whose format is unpublished, so remedy never makes one.",
            why:
                "The cloud rejects the image at registration, or the instance does not boot, when one of these fails; checking them "
                + "before an upload of tens of gigabytes saves the round trip. Limits from the cloud's published image-file "
                + "requirements for Windows private images.",
            parameters: [
                ("formats", "accepted formats (default vmdk, vhd, qcow2, raw, vhdx, qed, vdi, qcow, zvhd2, zvhd)"),
                ("max-image-gb", "largest image file for a normal import (default 128)"),
                ("fast-import-max-gb", "largest image for fast import (default 1024)"),
                ("min-disk-gb", "smallest system disk (default 40)"),
                ("max-disk-gb", "largest system disk (default 1024)"),
                ("uefi-minimum", "lowest NT version that boots with UEFI on the cloud (default 6.2: Server 2012)"),
            ]),
        make: { p, _ in
            try p.only(
                ["formats", "max-image-gb", "fast-import-max-gb", "min-disk-gb", "max-disk-gb", "uefi-minimum"],
                rule: Self.id)
            return ImageAcceptanceRule(
                formats: try p.strings(
                    "formats", default: ["vmdk", "vhd", "qcow2", "raw", "vhdx", "qed", "vdi", "qcow", "zvhd2", "zvhd"]
                ).map { $0.lowercased() },
                maxImageGB: try p.int("max-image-gb", default: 128, in: 1...1_000_000),
                fastImportMaxGB: try p.int("fast-import-max-gb", default: 1024, in: 1...1_000_000),
                minDiskGB: try p.int("min-disk-gb", default: 40, in: 0...1_000_000),
                maxDiskGB: try p.int("max-disk-gb", default: 1024, in: 1...1_000_000),
                uefiMinimum: try p.string("uefi-minimum", default: "6.2"))
        })

    static let users = RegistryPath("SAM\\Domains\\Account\\Users")

    public func requirements(for os: OSFacts) -> [RegistryRequirement] {
        [RegistryRequirement(.sam, Self.users, depth: 1)]
    }

    static func size(_ bytes: Int64) -> String {
        let g = Double(bytes) / Double(gib)
        return g >= 10
            ? "\(Int(g.rounded())) GiB" : g >= 1 ? "\((g * 10).rounded() / 10) GiB" : "\(bytes / 1_048_576) MiB"
    }

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        var f: [Finding] = []
        func add(
            _ id: FindingID, _ severity: Finding.Severity, _ message: String, _ measured: String?,
            _ requirement: String?
        ) {
            f.append(
                Finding(
                    id: id, rule: self.id, severity: severity, message: message, measured: measured,
                    requirement: requirement))
        }
        let image = facts.image
        if !formats.contains(image.format.rawValue) {
            add(
                "image-format", .blocker,
                "the image format \(image.format) is not one the cloud imports; convert it (remedy convert --to qcow2)",
                image.format.rawValue, formats.joined(separator: ", "))
        }
        let fileLimit = Int64(maxImageGB) * Self.gb
        if image.fileSize > fileLimit {
            let fast = Int64(fastImportMaxGB) * Self.gb
            if image.fileSize > fast || (image.virtualSize ?? 0) > fast {
                add(
                    "image-size", .blocker, "the image is larger than fast import accepts (\(fastImportMaxGB) GB)",
                    Self.size(image.fileSize), "<= \(fastImportMaxGB) GB")
            } else if image.format == .raw {
                add(
                    "image-size", .warning,
                    "the image file is over \(maxImageGB) GB: only fast import takes it, and a RAW file needs the bitmap "
                        + "file (.mf) made by the cloud's own image tool (its format is not published; remedy does not make one), or convert it to ZVHD2",
                    Self.size(image.fileSize), "<= \(maxImageGB) GB, or fast import")
            } else {
                add(
                    "image-size", .blocker,
                    "the image file is over \(maxImageGB) GB and \(image.format) is not a fast-import format: convert it to RAW "
                        + "(remedy convert --to raw) and register it by fast import with the cloud's bitmap file",
                    Self.size(image.fileSize), "<= \(maxImageGB) GB")
            }
        }
        if let v = image.virtualSize {
            // The cloud counts whole GB; qemu-made VHDs may be a little over a whole GiB.
            let gbs = Double(v) / Double(Self.gib)
            if gbs < Double(minDiskGB) || gbs > Double(maxDiskGB) + 0.01 {
                add(
                    "system-disk-size", .blocker,
                    "the system disk is \(Self.size(v)); the cloud registers system disks of \(minDiskGB) to \(maxDiskGB) GB"
                        + (gbs < Double(minDiskGB)
                            ? " (grow it: qemu-img resize, then extend the volume in Windows)" : ""),
                    Self.size(v), "\(minDiskGB)-\(maxDiskGB) GB")
            }
        }
        let volume = facts.volume
        if volume.inspected {
            if volume.bootManager == nil {
                let what =
                    facts.os.firmware == .uefi
                    ? "no EFI system partition with \\EFI\\Microsoft\\Boot\\bootmgfw.efi"
                    : "no partition with \\bootmgr and \\Boot\\BCD"
                add(
                    "boot-partition", .blocker,
                    "the boot partition is not on this disk (\(what)): boot and system partitions must be on the same disk",
                    "absent", "boot manager on the system disk")
            }
            let data = volume.filesystems.filter {
                !$0.windows && ["ntfs", "ReFS", "exfat"].contains($0.type)
                    && !(volume.bootManager?.hasPrefix($0.device + ":") ?? false)
            }
            if !data.isEmpty {
                add(
                    "data-partition", .warning,
                    "the system disk also holds data partitions (\(data.map(\.device).joined(separator: ", "))): the image "
                        + "must be the system disk only; move data to a data disk",
                    data.map { "\($0.device) \($0.type)" }.joined(separator: ", "), "system partitions only")
            }
        }
        switch facts.os.firmware {
        case .uefi:
            if facts.os.version.compare(uefiMinimum, options: .numeric) == .orderedAscending {
                add(
                    "boot-mode", .blocker,
                    "the image boots with UEFI, which the cloud supports for Windows \(uefiMinimum) (Server 2012) and later only",
                    "uefi, NT \(facts.os.version)", "bios, or NT >= \(uefiMinimum)")
            } else {
                add(
                    "boot-mode", .info, "the image boots with UEFI: register it with hw_firmware_type=uefi", "uefi", nil
                )
            }
        case .bios: break
        case .unknown:
            add(
                "boot-mode", .warning, "the boot mode could not be told from the partition table",
                facts.os.partitionTable.rawValue, "gpt or msdos")
        }
        f += accounts(facts)
        return RuleResult(findings: f)
    }

    /// Local accounts from the SAM hive: each `Users\<RID>` key's `F` value
    /// holds the account control flags at offset 0x38 (bit 0x0001: disabled).
    func accounts(_ facts: ImageFacts) -> [Finding] {
        var out: [Finding] = []
        guard facts.volume.inspected || facts.registry.covers(.sam, Self.users) else { return out }
        guard let users = facts.registry.key(.sam, Self.users) else {
            return [
                Finding(
                    id: "admin-account", rule: id, severity: .warning,
                    message:
                        "the SAM hive could not be read: remedy cannot tell whether an enabled administrator exists",
                    measured: "SAM unreadable", requirement: "an enabled administrator")
            ]
        }
        // RIDs of accounts Windows creates disabled or for itself: Guest, DefaultAccount, WDAGUtilityAccount.
        let system: Set<UInt32> = [0x1F5, 0x1F7, 0x1F8]
        var admin: Bool?
        var enabledOthers: [String] = []
        for u in users.subkeys {
            guard let rid = UInt32(u.name, radix: 16), case .binary(let fv)? = u.value("F"), fv.count >= 0x3A else {
                continue
            }
            let disabled = (UInt16(fv[0x38]) | UInt16(fv[0x39]) << 8) & 0x0001 != 0
            if rid == 0x1F4 {
                admin = !disabled
            } else if !system.contains(rid) && !disabled {
                enabledOthers.append(String(format: "RID %d", rid))
            }
        }
        switch admin {
        case true?: break
        case false?:
            out.append(
                Finding(
                    id: "admin-account", rule: id, severity: enabledOthers.isEmpty ? .blocker : .warning,
                    message: "the built-in Administrator is disabled"
                        + (enabledOthers.isEmpty
                            ? " and no other local account is enabled: nobody can log on"
                            : "; other enabled local accounts (\(enabledOthers.joined(separator: ", "))) must be in Administrators (membership is not read offline)"),
                    measured: "Administrator disabled", requirement: "an enabled administrator"))
        case nil:
            out.append(
                Finding(
                    id: "admin-account", rule: id, severity: .blocker,
                    message: "the SAM hive has no built-in Administrator account (RID 500)",
                    measured: "absent", requirement: "an enabled administrator"))
        }
        out.append(
            Finding(
                id: "password-complexity", rule: id, severity: .info,
                message:
                    "the administrator password's complexity cannot be read offline (only its hash is stored): check it meets the cloud's rules before registering",
                measured: nil, requirement: "upper, lower, digit and special characters"))
        return out
    }
}
