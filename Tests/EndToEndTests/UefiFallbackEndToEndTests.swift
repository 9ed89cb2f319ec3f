import Foundation
import RemedyCore
import RemedyFixtures
import Testing

/// `uefi-fallback` on a phony Server 2022 UEFI image whose `\EFI\Boot\bootx64.efi` is not the boot manager: apply
/// makes it a copy of `bootmgfw.efi`, rollback puts the old one back. The ESP is read back with guestfish, not remedy.
@Suite struct UefiFallbackEndToEndTests {
    /// Runs guestfish read-only with `images` attached and, for each, mounts its ESP (partition 1 of the phony GPT
    /// layout), runs `commands` and unmounts it: one launch for all. Returns the output lines per image.
    func guestfish(_ images: [String], _ commands: [String]) throws -> [[String]] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/guestfish")
        var script: [String] = ["run"]
        for i in images.indices {
            let device = "/dev/sd" + String(UnicodeScalar(UInt8(ascii: "a") + UInt8(i)))
            script += ["echo ==\(i)", "mount-ro \(device)1 /"] + commands + ["umount-all"]
        }
        p.arguments = ["--ro"] + images.flatMap { ["-a", $0] }
        var env = ProcessInfo.processInfo.environment
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
        p.environment = env
        let input = Pipe(), out = Pipe()
        p.standardInput = input
        p.standardOutput = out
        try p.run()
        input.fileHandleForWriting.write(Data((script.joined(separator: "\n") + "\n").utf8))
        try input.fileHandleForWriting.close()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "guestfish \(script)")
        var lines: [[String]] = []
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init) {
            if line.hasPrefix("==") { lines.append([]) } else if !lines.isEmpty { lines[lines.count - 1].append(line) }
        }
        return lines
    }

    /// The ESP is read back with guestfish from host-side copies taken before and after apply and from the image
    /// after rollback, in one launch at the end.
    @Test func aStaleFallbackLoaderBecomesTheBootManagerAndRollbackPutsItBack() throws {
        let f = try Fixtures.get()
        let image = f.uefiStale  // this test's alone (it writes it)
        let beforeCopy = f.dir + "/u2022-before.raw", afterCopy = f.dir + "/u2022-after.raw"
        try sparseCopy(image, to: beforeCopy)

        let applied = try remedy(["apply", image, "--policy", "huawei-ims"])
        // 0, or 2 when blocking findings remain (this phony disk is smaller than the cloud's 40 GB minimum).
        #expect(applied.status == 0 || applied.status == 2, "\(applied.stderr)")
        #expect(applied.stdout.contains("esp:\\EFI\\Boot\\bootx64.efi  replace"), "\(applied.stdout)")
        #expect(!applied.stdout.contains("policy-conflict"), "\(applied.stdout)")
        try sparseCopy(image, to: afterCopy)

        let rolled = try remedy(["rollback", image])
        #expect(rolled.status == 0, "\(rolled.stderr)")

        let sums = ["checksum sha256 /EFI/Boot/bootx64.efi", "checksum sha256 /EFI/Microsoft/Boot/bootmgfw.efi"]
        let read = try guestfish([beforeCopy, afterCopy, image], sums)
        try #require(read.count == 3, "\(read)")
        let (before, after, back) = (read[0], read[1], read[2])
        #expect(
            before.count == 2 && before[0] != before[1],
            "the fixture's bootx64.efi should differ from bootmgfw.efi: \(before)")
        #expect(
            after.count == 2 && after[0] == after[1] && after[1] == before[1],
            "after apply: \(after), before: \(before)")
        #expect(back == before, "rollback should put the original bootx64.efi back")
    }
}
