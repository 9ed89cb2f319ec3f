/// `uefi-fallback`: the removable-media boot loader on the EFI system partition is the Windows Boot Manager.
///
/// A new VM starts with an empty UEFI variable store (NVRAM): there is no `Windows Boot Manager` boot entry, so
/// the firmware starts the fallback loader `\EFI\Boot\bootx64.efi` (`bootia32.efi` on 32-bit UEFI) of the ESP
/// (UEFI specification, "Removable Media Boot Behavior"). When that file is missing or is not Windows' boot
/// manager, the instance does not boot, or boots something else. The fix is a copy of
/// `\EFI\Microsoft\Boot\bootmgfw.efi` onto it, on the ESP (virt-v2v does the same for Windows guests).
public struct UefiFallbackRule: Rule {
    /// The id a policy names this rule by, declared here once.
    public static let id = "uefi-fallback"
    public var id: String { Self.id }

    public static let builtin = BuiltinRule(
        documentation: RuleDocumentation(
            id: Self.id,
            summary:
                "Make the ESP's fallback boot loader (\\EFI\\Boot\\bootx64.efi, bootia32.efi on 32-bit) a copy of the Windows Boot Manager.",
            checks:
                "UEFI images only: on the EFI system partition, the SHA-256 of \\EFI\\Microsoft\\Boot\\bootmgfw.efi and of "
                + "\\EFI\\Boot\\bootx64.efi (bootia32.efi for 32-bit Windows).",
            changes:
                "When the fallback loader is missing or differs from bootmgfw.efi: a copy of bootmgfw.efi is written to it on the ESP "
                + "(a file change on volume esp, source image:esp:/EFI/Microsoft/Boot/bootmgfw.efi). A replaced loader is backed up "
                + "under C:\\Windows\\remedy\\backup\\<run>\\esp and put back by remedy rollback. BIOS images: nothing.",
            why:
                "A new VM has an empty UEFI variable store (no Windows Boot Manager entry), so its firmware starts the removable-media "
                + "fallback loader \\EFI\\Boot\\bootx64.efi (UEFI specification, Removable Media Boot Behavior). Windows setup "
                + "puts a copy of bootmgfw.efi there, but images made by other tools or repaired by hand may lack it or carry an "
                + "older or foreign loader; the instance then does not boot. virt-v2v copies bootmgfw.efi there for the same reason.",
            parameters: []),
        make: { p, _ in
            try p.only([], rule: Self.id)
            return UefiFallbackRule()
        })

    public init() {}

    public func requirements(for os: OSFacts) -> [RegistryRequirement] { [] }

    /// The fallback loader this Windows' firmware starts.
    static func fallback(arch: Architecture) -> String { arch == .i386 ? ESPFacts.fallbackIA32 : ESPFacts.fallbackX64 }

    public func evaluate(_ facts: ImageFacts) -> RuleResult {
        guard facts.os.firmware == .uefi, let esp = facts.volume.esp, let manager = esp.file(ESPFacts.bootManager)
        else {
            // BIOS, or no ESP with the boot manager on this disk (image-acceptance reports boot-partition)
            return RuleResult()
        }
        let wanted = Self.fallback(arch: facts.os.arch)
        let now = esp.file(wanted)
        if now?.sha256 == manager.sha256 { return RuleResult() }
        let windows = "\\" + wanted.dropFirst().replacingOccurrences(of: "/", with: "\\")
        let change = FileChange(
            path: now?.path ?? wanted, source: "image:esp:" + manager.path, size: manager.size, sha256: manager.sha256,
            before: now?.sha256, volume: "esp")
        let why = now == nil ? "missing" : "not the Windows Boot Manager (SHA-256 \(now!.sha256.prefix(16)))"
        return RuleResult(
            actions: [
                Action(
                    rule: id,
                    description: "copy the Windows Boot Manager to the ESP's fallback loader \(windows) (\(why))",
                    target: "esp:" + wanted, changes: [], files: [change])
            ],
            findings: [
                Finding(
                    id: "uefi-fallback", rule: id, severity: .info,
                    message:
                        "the EFI system partition's fallback loader \(windows) is \(why): a new VM with an empty NVRAM would not start Windows",
                    measured: now.map { "sha256 \($0.sha256)" } ?? "absent",
                    requirement: "sha256 \(manager.sha256) (bootmgfw.efi)")
            ])
    }
}
