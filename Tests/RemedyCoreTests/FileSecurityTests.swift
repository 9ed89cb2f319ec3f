import Foundation
import Testing

@testable import RemedyCore
@testable import RemedyPlanning

@Suite struct FileSecurityTests {
    /// Bytes laid out by hand from [MS-DTYP] 2.4.6 (SECURITY_DESCRIPTOR, self-relative), 2.4.5 (ACL), 2.4.4.2
    /// (ACCESS_ALLOWED_ACE) and 2.4.2.2 (SID): control 0x9404 (SR, PD, DI... = self-relative, DACL protected,
    /// auto-inherited, present), owner at 0x48, group at 0x58, no SACL, DACL at 0x14 with two ACEs
    /// (OI|CI, 0x1F01FF) for S-1-5-18 and S-1-5-32-544; owner S-1-5-32-544, group S-1-5-18.
    @Test func thePrivateFolderDescriptorIsTheDocumentedLayout() {
        let hand =
            "01000494" + "48000000" + "58000000" + "00000000" + "14000000"
            + "02003400" + "0200" + "0000"
            + "00031400" + "ff011f00" + "010100000000000512000000"
            + "00031800" + "ff011f00" + "01020000000000052000000020020000"
            + "01020000000000052000000020020000" + "010100000000000512000000"
        let bytes = FileSecurity.privateState(directory: true).bytes
        #expect(bytes.map { String(format: "%02x", $0) }.joined() == hand)
    }

    @Test func eachPlaceGetsItsDescriptor() {
        let os = RunnerScriptTests.os
        #expect(
            FileSecurity.descriptor(for: "/Windows/remedy/backup/x/SYSTEM", directory: false, os: os)
                == FileSecurity.privateState(directory: false))
        let driver = FileSecurity.descriptor(for: "/Windows/System32/drivers/viostor.sys", directory: false, os: os)
        #expect(driver.owner == .trustedInstaller)
        #expect(
            driver.dacl.map(\.sid) == [
                .trustedInstaller, .administrators, .system, .users, .allApplicationPackages,
                .allRestrictedApplicationPackages,
            ])
        #expect(driver.dacl.dropFirst().allSatisfy { $0.mask == FileSecurity.Mask.readExecute })
        var win7 = os
        (win7.majorVersion, win7.minorVersion) = (6, 1)
        #expect(FileSecurity.descriptor(for: "/Windows/INF/oem3.inf", directory: false, os: win7).dacl.count == 4)
        let folder = FileSecurity.descriptor(for: "/Windows/Drivers/VirtIO", directory: true, os: os)
        #expect(folder.owner == .trustedInstaller && !folder.dacl.contains { $0.sid == .users && $0.mask & 0x2 != 0 })
        let gpo = FileSecurity.descriptor(for: "/Windows/System32/GroupPolicy/gpt.ini", directory: false, os: os)
        #expect(
            gpo.dacl.contains { $0.sid == .users && $0.mask == FileSecurity.Mask.readExecute }
                && gpo.owner == .administrators)
    }

    /// The shell text apply sends to the appliance: every path single-quoted under /sysroot, the bytes as hex; a
    /// path with a quote cannot end the quoting (run through sh here, the argument comes back unchanged).
    @Test func theSetfattrCommandQuotesPathsAndCarriesTheBytes() throws {
        let path = "/Windows/remedy/it's a \"x\" $(id) `id` & y"
        let command = FileSecurity.setCommand(path, [0x01, 0x00, 0xff])
        #expect(command.hasPrefix("setfattr -h -n system.ntfs_acl -v 0x0100ff '/sysroot/Windows/remedy/it'\\''s a"))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "printf '%s' " + FileSecurity.shQuoted("/sysroot" + path)]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        #expect(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) == "/sysroot" + path)
        #expect(
            FileSecurity.descriptor(
                for: "/Windows/System32/config/SYSTEM.LOG1", directory: false, os: RunnerScriptTests.os
            ).dacl
                .allSatisfy { $0.sid == .system || $0.sid == .administrators })
    }

    /// The grouped commands, run by sh against a stand-in `setfattr` that records what each path got (and refuses the
    /// value 0x0bad, as ntfs-3g refuses a descriptor): every path ends with the bytes of its last assignment, or its
    /// fallback where the first bytes were refused; one process per descriptor, not per file.
    @Test func groupedCommandsGiveEachPathItsLastAssignment() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fs-group-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = dir.appendingPathComponent("log").path
        let fake = """
            #!/bin/sh
            [ "$5" = 0x0bad ] && exit 1
            echo call >> '\(log)'
            value=$5; shift 5
            for p in "$@"; do printf '%s\\t%s\\n' "$p" "$value" >> '\(log)'; done
            """
        try fake.write(toFile: dir.appendingPathComponent("setfattr").path, atomically: true, encoding: .utf8)
        chmod(dir.appendingPathComponent("setfattr").path, 0o755)

        let a: [UInt8] = [0x0a], b: [UInt8] = [0x0b], bad: [UInt8] = [0x0b, 0xad]
        typealias A = FileSecurity.Assignment
        var items = (1...40).map { A(path: "/d/f\($0) it's.sys", bytes: $0 % 4 == 0 ? b : a) }
        items.append(A(path: "/d/kept", bytes: bad, fallback: a))
        items.append(A(path: "/d/kept2", bytes: b, fallback: a))
        items.append(A(path: "/d/f1 it's.sys", bytes: b))  // assigned again: b wins
        items.append(A(path: "/d/late", bytes: a))
        let commands = FileSecurity.commands(items, limit: 400)
        #expect(commands.flatMap(\.paths).count == items.count)
        #expect(commands.allSatisfy { $0.text.utf8.count <= 400 || $0.paths.count == 1 })
        #expect(commands.count < items.count / 3)

        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", commands.map(\.text).joined(separator: " && ")]
        p.environment = ["PATH": dir.path + ":/usr/bin:/bin"]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        var got: [String: String] = [:], calls = 0
        for line in try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n") {
            if line == "call" {
                calls += 1
                continue
            }
            let f = line.split(separator: "\t")
            got[String(f[0])] = String(f[1])
        }
        var want: [String: String] = [:]
        for item in items {
            want["/sysroot" + item.path] = FileSecurity.hex(item.bytes == bad ? item.fallback! : item.bytes)
        }
        #expect(got == want)
        #expect(calls == commands.count)
    }
}
