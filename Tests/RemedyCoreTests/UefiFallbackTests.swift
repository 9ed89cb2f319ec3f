import Foundation
import Testing

@testable import RemedyCore
@testable import RemedyPlanning

/// `uefi-fallback` on facts: the fallback loader of the ESP becomes a copy of bootmgfw.efi when missing or different.
@Suite struct UefiFallbackTests {
    static let manager = GuestFile(
        path: "/EFI/Microsoft/Boot/bootmgfw.efi", size: 1024, sha256: String(repeating: "a", count: 64))

    func uefiFacts(
        arch: Architecture = .x86_64, firmware: Firmware = .uefi, fallback: GuestFile?,
        manager: GuestFile? = UefiFallbackTests.manager
    ) -> ImageFacts {
        var f = facts(["ControlSet001": []], arch: arch)
        f.os.firmware = firmware
        var files: [String: GuestFile] = [:]
        if let manager { files[manager.path.lowercased()] = manager }
        if let fallback { files[fallback.path.lowercased()] = fallback }
        f.volume = VolumeFacts(
            bootManager: "/dev/sda1:/EFI/Microsoft/Boot/bootmgfw.efi", inspected: true,
            esp: ESPFacts(device: "/dev/sda1", files: files))
        return f
    }

    @Test func aMissingFallbackIsACopyOfTheBootManager() throws {
        let r = UefiFallbackRule().evaluate(uefiFacts(fallback: nil))
        let files = r.actions.flatMap(\.files)
        #expect(
            files == [
                FileChange(
                    path: "/EFI/Boot/bootx64.efi", source: "image:esp:/EFI/Microsoft/Boot/bootmgfw.efi", size: 1024,
                    sha256: Self.manager.sha256, before: nil, volume: "esp")
            ])
        #expect(r.findings.map(\.id) == ["uefi-fallback"])
    }

    @Test func aDifferentFallbackIsReplacedWithItsStoredCase() throws {
        let old = GuestFile(path: "/EFI/BOOT/BOOTX64.EFI", size: 900, sha256: String(repeating: "b", count: 64))
        let files = UefiFallbackRule().evaluate(uefiFacts(fallback: old)).actions.flatMap(\.files)
        #expect(files.count == 1)
        #expect(files.first?.path == "/EFI/BOOT/BOOTX64.EFI")
        #expect(files.first?.before == old.sha256)
        #expect(files.first?.sha256 == Self.manager.sha256)
    }

    @Test func thirtyTwoBitWindowsGetsBootia32() throws {
        let files = UefiFallbackRule().evaluate(uefiFacts(arch: .i386, fallback: nil)).actions.flatMap(\.files)
        #expect(files.map(\.path) == ["/EFI/Boot/bootia32.efi"])
    }

    @Test func nothingWhenTheFallbackIsTheBootManagerOrOnBiosOrWithoutAnESP() throws {
        let same = GuestFile(path: "/EFI/Boot/bootx64.efi", size: 1024, sha256: Self.manager.sha256)
        #expect(UefiFallbackRule().evaluate(uefiFacts(fallback: same)) == RuleResult())
        #expect(UefiFallbackRule().evaluate(uefiFacts(firmware: .bios, fallback: nil)) == RuleResult())
        #expect(UefiFallbackRule().evaluate(uefiFacts(fallback: nil, manager: nil)) == RuleResult())
        var f = facts(["ControlSet001": []])
        f.os.firmware = .uefi
        #expect(UefiFallbackRule().evaluate(f) == RuleResult())
    }

    @Test func theShippedPoliciesRunItAndThePlanSettles() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("Policies").path
        for name in ["huawei-ims", "openstack-kvm"] {
            let text = try String(contentsOfFile: "\(dir)/\(name).yaml", encoding: .utf8)
            #expect(text.contains("uefi-fallback") || name == "openstack-kvm", "\(name)")
        }
        let p = try policy(
            """
            name: t
            description: test
            applies-to:
              versions: ["10.0"]
              arch: [x86_64, i386]
            rules:
              - id: uefi-fallback
            """)
        let plan = Planner.plan(facts: uefiFacts(fallback: nil), policy: p)
        #expect(plan.fileChanges.count == 1)
        #expect(!plan.findings.contains { $0.id == "policy-conflict" })
    }

    @Test func aFileChangeWithoutVolumeEncodesAsBefore() throws {
        let c = FileChange(path: "/Windows/x.sys", source: "virtio-win:x.sys", size: 1, sha256: "c", before: nil)
        let json = String(decoding: try JSONEncoder().encode(c), as: UTF8.self)
        #expect(!json.contains("volume"))
        let esp = FileChange(
            path: "/EFI/Boot/bootx64.efi", source: "image:esp:/EFI/Microsoft/Boot/bootmgfw.efi", size: 1, sha256: "c",
            before: nil, volume: "esp")
        let back = try JSONDecoder().decode(FileChange.self, from: try JSONEncoder().encode(esp))
        #expect(back == esp)
        #expect(try JSONDecoder().decode(FileChange.self, from: try JSONEncoder().encode(c)) == c)
    }
}
