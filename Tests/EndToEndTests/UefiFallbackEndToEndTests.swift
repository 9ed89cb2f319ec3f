import Foundation
import RemedyCore
import RemedyFixtures
import Testing

/// `uefi-fallback` on a phony Server 2022 UEFI image whose `\EFI\Boot\bootx64.efi` is not the boot manager: apply
/// makes it a copy of `bootmgfw.efi`, rollback puts the old one back. The ESP is read back with guestfish, not remedy.
@Suite struct UefiFallbackEndToEndTests {
    /// Runs guestfish read-only on the ESP (`/dev/sda1` of the phony GPT layout) and returns its output lines.
    func guestfish(_ image: String, _ commands: [String]) throws -> [String] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/guestfish")
        p.arguments = ["--ro", "-a", image, "-m", "/dev/sda1"] + commands.flatMap { $0.split(separator: " ").map(String.init) + [":"] }.dropLast()
        var env = ProcessInfo.processInfo.environment
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "guestfish \(commands)")
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    @Test func aStaleFallbackLoaderBecomesTheBootManagerAndRollbackPutsItBack() throws {
        let dir = NSTemporaryDirectory() + "/remedy-uefi-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let image = dir + "/u2022.raw"
        try ImageFactory.build([ImageRequest(.windows(PhonyWindows(release: .server2022, firmware: .uefi, states: [.staleUefiFallback])), path: image)],
                               options: Fixtures.options)
        let sums = ["checksum sha256 /EFI/Boot/bootx64.efi", "checksum sha256 /EFI/Microsoft/Boot/bootmgfw.efi"]
        let before = try guestfish(image, sums)
        #expect(before.count == 2 && before[0] != before[1], "the fixture's bootx64.efi should differ from bootmgfw.efi: \(before)")

        let applied = try remedy(["apply", image, "--policy", "huawei-ims"])
        // 0, or 2 when blocking findings remain (this phony disk is smaller than the cloud's 40 GB minimum).
        #expect(applied.status == 0 || applied.status == 2, "\(applied.stderr)")
        #expect(applied.stdout.contains("esp:\\EFI\\Boot\\bootx64.efi  replace"), "\(applied.stdout)")
        #expect(!applied.stdout.contains("policy-conflict"), "\(applied.stdout)")
        let after = try guestfish(image, sums)
        #expect(after.count == 2 && after[0] == after[1] && after[1] == before[1], "after apply: \(after), before: \(before)")

        let rolled = try remedy(["rollback", image])
        #expect(rolled.status == 0, "\(rolled.stderr)")
        #expect(try guestfish(image, sums) == before, "rollback should put the original bootx64.efi back")
    }
}
