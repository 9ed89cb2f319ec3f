import Foundation
import RemedyFixtures
import Testing

@testable import RemedyCore
@testable import RemedyPlanning

/// The cmd rules every generated script keeps, checked on the text: each rule is a bug cmd really has.
enum CmdLint {
    /// Problems found in a script (empty when it keeps every rule).
    static func problems(_ script: String, name: String) -> [String] {
        var out: [String] = []
        let lines = script.components(separatedBy: "\r\n")
        // Variables: Windows' own and those the script sets.
        var known = windows
        for m in script.matches(of: /set (?:\/[ap] )?"?([A-Za-z]+)[+]?=/) { known.insert(String(m.1).uppercased()) }
        if script.replacingOccurrences(of: "\r\n", with: "").contains("\n") {
            out.append("\(name): a line ends without CRLF")
        }
        for (n, raw) in lines.enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            let at = "\(name):\(n + 1): \(line)"
            if line.lowercased().hasPrefix("rem ") {
                // cmd expands % even in a comment; %~x there is a fatal syntax error.
                if line.contains("%") || line.contains("!") { out.append("\(at): % or ! in a comment") }
                continue
            }
            if line.lowercased().contains("enabledelayedexpansion") {
                out.append("\(at): delayed expansion makes ! special")
            }
            if line.contains("!") { out.append("\(at): ! in a command") }
            // `set NAME=1 & ...` stores "1 " (with the space): every assignment is `set "NAME=value"`.
            var rest = Substring(line)
            while let r = rest.range(of: #"(^|[\s(&|])set\s+"#, options: [.regularExpression, .caseInsensitive]) {
                let after = rest[r.upperBound...]
                if !(after.hasPrefix("\"") || after.lowercased().hasPrefix("/a ")
                    || after.lowercased().hasPrefix("/p \""))
                {
                    out.append("\(at): unquoted set")
                }
                rest = after
            }
            // `echo text 0>>log` redirects handle 0: a redirection of an echo goes before it.
            if let e = line.range(of: #"(^|[\s(&])echo\s"#, options: [.regularExpression, .caseInsensitive]),
                line[e.upperBound...].range(of: #"[0-9%]>"#, options: .regularExpression) != nil
            {
                out.append("\(at): a digit or variable before > after echo")
            }
            // Every %...% is a variable the script knows or a batch/for parameter.
            var s = Substring(line)
            while let p = s.firstIndex(of: "%") {
                let tail = s[s.index(after: p)...]
                if tail.hasPrefix("%") {
                    s = tail.dropFirst(2)
                    continue
                }  // %%S
                if tail.hasPrefix("~") || tail.first?.isNumber == true {  // %~dp0 %~n1 %1
                    s = tail.drop { $0 != " " && $0 != "\"" && $0 != "\\" && $0 != "." }
                    continue
                }
                guard let close = tail.firstIndex(of: "%") else {
                    out.append("\(at): a lone %")
                    break
                }
                let variable = String(tail[..<close]).uppercased()
                if !known.contains(variable) {
                    out.append("\(at): %\(variable)% is not a variable the script sets or Windows defines")
                }
                s = tail[tail.index(after: close)...]
            }
        }
        // Every variable compared with `if "%X%"==` is assigned only in the quoted form (or by set /a, set /p).
        for m in script.matches(of: /if (?:not )?"%([A-Za-z]+)%"==/) {
            let v = String(m.1)
            if script.range(of: "set \(v)=", options: .caseInsensitive) != nil {
                out.append("\(name): \(v) is compared but set unquoted")
            }
        }
        return out
    }

    static let windows: Set<String> = [
        "DATE", "TIME", "ERRORLEVEL", "SYSTEMROOT", "PROGRAMFILES", "WINDIR", "SYSTEMDRIVE",
    ]
}

/// Wine's cmd, when installed (`.ci/setup` installs wine64): a second implementation of cmd that runs the runner.
/// It is not Windows' cmd: Wine 8's `&&` ignores external programs' exit codes and its `set /p` reads past the first
/// line, so the runner avoids both (it does not need them); what the tests use behaves as in Windows.
struct WineCmd {
    static let binary = ["/usr/lib/wine/wine64", "/usr/bin/wine64", "/usr/bin/wine"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
    let prefix: String
    let driveC: String

    init() throws {
        prefix = NSTemporaryDirectory() + "/remedy-wine-\(UUID().uuidString)"
        driveC = prefix + "/drive_c"
        try run(["cmd", "/c", "exit 0"], in: NSTemporaryDirectory())
    }

    @discardableResult
    func run(_ args: [String], in dir: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary!)
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        var env = ProcessInfo.processInfo.environment
        env["WINEPREFIX"] = prefix
        env["WINEDEBUG"] = "-all"
        env["WINEDLLOVERRIDES"] = "mscoree,mshtml="
        env["DISPLAY"] = nil
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// Ends this prefix's wineserver (started by `run`) and removes the prefix.
    func close() {
        let server = ((Self.binary! as NSString).deletingLastPathComponent as NSString).appendingPathComponent(
            "wineserver")
        let k = Process()
        k.executableURL = URL(
            fileURLWithPath: FileManager.default.isExecutableFile(atPath: server) ? server : "/usr/bin/wineserver")
        k.arguments = ["-k"]
        k.environment = ["WINEPREFIX": prefix]
        try? k.run()
        k.waitUntilExit()
        try? FileManager.default.removeItem(atPath: prefix)
    }
}

@Suite struct RunnerScriptTests {
    static let os = OSFacts(
        root: "/dev/sda2", product: "Windows Server 2016", variant: "Server", majorVersion: 10, minorVersion: 0,
        build: "14393", arch: .x86_64, hostname: "T", systemRoot: "/Windows", currentControlSet: "ControlSet001",
        controlSets: [], firmware: .bios, partitionTable: .msdos)

    @Test func theLintFindsTheBugsItIsFor() {
        // The runner as it was: `set PENDING=1 & exit /b 0`, `echo ... %RC%>>"%LOG%"`.
        let old =
            "set PENDING=0\r\nif \"%RC%\"==\"3010\" (type nul>x & set PENDING=1 & exit /b 0)\r\necho %~1 exited with %RC%>>\"%LOG%\"\r\n"
            + "if \"%PENDING%\"==\"1\" goto reboot\r\nrem from CloudbaseInit%20.msi\r\nmsiexec /i \"C:\\a\" & whoami > C:\\pwned.txt & rem \".msi\"\r\n"
        let found = CmdLint.problems(old, name: "old")
        #expect(found.filter { $0.contains("unquoted set") }.count == 2, "\(found)")
        #expect(found.contains { $0.contains("before > after echo") })
        #expect(found.contains { $0.contains("PENDING is compared but set unquoted") })
        #expect(found.contains { $0.contains("% or ! in a comment") })
    }

    @Test func everyGeneratedScriptKeepsTheCmdRules() throws {
        #expect(CmdLint.problems(FirstBoot.crlf(FirstBoot.runnerScript(Self.os)), name: "run.cmd") == [])
        // Every first-boot step a policy generates: VirtIO drivers, Cloudbase-Init, old tools' uninstallers.
        var w = try LocalWindows(PhonyWindows(release: .server2012R2, states: [.vmwareTools, .parallelsTools]))
        w.payloads.virtio = try FakeTrees.resolve("iso", w.os)
        w.payloads.files["cloudbase-init"] = PayloadFile(
            name: "x.msi", source: "cloudbase-init:x.msi", size: 1, sha256: String(repeating: "a", count: 64))
        let policy = try PolicyLoader.parse(
            "name: t\ndescription: d\nextends: openstack-kvm\nparameters:\n  uninstall-old-tools: true\n",
            source: NSTemporaryDirectory() + "/t.yaml")
        let plan = try w.plan(policy)
        let scripts = plan.fileChanges.filter { $0.path.hasSuffix(".cmd") }
        #expect(scripts.count >= 6, "\(scripts.map(\.path))")
        // The guest agent's and the balloon service's steps are among them (openstack-kvm turns them on).
        for step in ["40-qemu-guest-agent.cmd", "41-balloon-service.cmd"] {
            #expect(
                scripts.contains { $0.path == "/Windows/remedy/firstboot/scripts/" + step },
                "\(step) not checked: \(scripts.map(\.path))")
        }
        for s in scripts {
            let found = CmdLint.problems(try #require(s.content), name: s.path)
            #expect(found.isEmpty, "\(found)")
        }
    }

    @Test(arguments: [
        "CloudbaseInit\" & whoami > C:\\pwned.txt & rem \".msi", "Cloudbase%20Init.msi", "a&b.msi", "a|b.msi",
        "a<b>.msi", "a^b.msi",
        "a%PATH%b.msi", "a\"b.msi", "a!b!.msi", "a(b).msi", "x)&calc&(.msi",
    ])
    func aHostilePayloadFileNameNeverEntersAScript(_ hostile: String) throws {
        var w = try LocalWindows(PhonyWindows(release: .server2016))
        w.payloads.files["cloudbase-init"] = PayloadFile(
            name: hostile, source: "cloudbase-init:\(hostile)", size: 1, sha256: String(repeating: "b", count: 64))
        let plan = try w.plan(try PolicyLoader.load("openstack-kvm"))
        let step = try #require(
            plan.fileChanges.first { $0.path == "/Windows/remedy/firstboot/scripts/50-cloudbase-init.cmd" }?.content)
        #expect(
            !step.contains(hostile) && !step.contains("whoami") && !step.contains("%20") && !step.contains("%PATH%"),
            "\(step)")
        #expect(
            step.contains("msiexec /i \"C:\\Windows\\remedy\\payloads\\cloudbase-init\\cloudbase-init.msi\" /qn"),
            "\(step)")
        // The file is staged under remedy's fixed name, copied from the user's file.
        let staged = try #require(
            plan.fileChanges.first { $0.path == "/Windows/remedy/payloads/cloudbase-init/cloudbase-init.msi" })
        #expect(staged.source == "cloudbase-init:\(hostile)")
        #expect(!plan.fileChanges.contains { $0.path.contains(hostile) })
        #expect(CmdLint.problems(step, name: hostile) == [])
    }

    @Test func commentsAndQuotingKeepValuesInert() {
        #expect(
            Cmd.comment("VMware Tools %~x & del /q C:\\ (1.0) \"q\" ^!")
                == "VMware Tools __x _ del /q C:\\ _1.0_ _q_ __")
        for bad in ["a%b", "a!b", "a\"b", "a\nb", "a\rb"] { #expect(Cmd.quoted(bad) == nil, "\(bad)") }
        for good in ["C:\\Program Files (x86)\\A & B", "x|y<z>^w"] { #expect(Cmd.quoted(good) == "\"\(good)\"") }
        // A DisplayName with % goes through FirstBoot.step as a harmless comment.
        let step = FirstBoot.step(
            Self.os, name: "30-x.cmd", body: "@echo off\nrem uninstall Tools %~x & calc\nexit /b 0\n",
            files: FileSnapshot())
        let text = step.first { $0.path.hasSuffix("30-x.cmd") }?.content ?? ""
        #expect(text == "@echo off\r\nrem uninstall Tools __x _ calc\r\nexit /b 0\r\n", "\(text)")
    }

    /// The guest agent's and the balloon service's steps as the rule writes them, run as the runner runs a step
    /// (`cmd /d /c`) by Wine's cmd: msiexec gets the staged MSI and writes its log where the step says, a failing
    /// installer's exit code is the step's (the runner retries it), and once the services exist the steps end with 0
    /// without running an installer. (The runner's own handling of exit codes is the test below.)
    @Test(
        .enabled(
            if: WineCmd.binary != nil || ProcessInfo.processInfo.environment["CI"] != nil,
            "needs wine64 (.ci/setup installs it)"))
    func theGuestAgentStepsRunTheInstallersUntilTheServicesExist() throws {
        try #require(WineCmd.binary != nil, "wine64 is not installed: .ci/setup installs it")
        let w = try LocalWindows(PhonyWindows(release: .server2016, states: [.noAutoReboot]))
        var facts = try w.facts(Planner.requirements(policy: try PolicyLoader.load("openstack-kvm"), os: w.os))
        facts.os.systemRoot = "/RemedyTest"
        facts.payloads.virtio = try FakeTrees.resolve("iso", facts.os)
        let result = GuestAgentRule(agent: true, balloon: true, required: false).evaluate(facts)
        #expect(result.actions.map(\.target) == ["qemu-guest-agent", "balloon-service"])

        let wine = try WineCmd()
        defer { wine.close() }
        let fm = FileManager.default
        // Written as apply writes them: generated files from their content, copies from the (fake) virtio-win tree.
        for c in result.actions.flatMap(\.files) {
            let path = wine.driveC + c.path
            try fm.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            if let bytes = c.contentBytes {
                try Data(bytes).write(to: URL(fileURLWithPath: path))
            } else {
                let rel = try #require(
                    c.source.flatMap { $0.hasPrefix("virtio-win:") ? String($0.dropFirst("virtio-win:".count)) : nil })
                try fm.copyItem(atPath: FakeTrees.root + "/iso/" + rel, toPath: path)
            }
        }
        let staged = wine.driveC + "/RemedyTest/remedy/payloads/guest-agent"
        #expect(
            fm.fileExists(atPath: staged + "/qemu-ga-x86_64.msi")
                && fm.fileExists(atPath: wine.driveC + "/RemedyTest/Drivers/VirtIO/blnsvr.exe"))
        // Each step as the runner starts it, its exit code printed after it.
        let steps = "C:\\RemedyTest\\remedy\\firstboot\\scripts\\"
        try FirstBoot.crlf(
            """
            @echo off
            cmd /d /c ""\(steps)40-qemu-guest-agent.cmd""
            echo step 40 exited with %ERRORLEVEL%
            cmd /d /c ""\(steps)41-balloon-service.cmd""
            echo step 41 exited with %ERRORLEVEL%

            """
        ).write(toFile: wine.driveC + "/RemedyTest/boot.cmd", atomically: true, encoding: .utf8)
        func boot() throws -> String { try wine.run(["cmd", "/c", "C:\\RemedyTest\\boot.cmd"], in: wine.driveC) }
        func code(_ out: String, _ step: Int) -> Int? {
            out.split(whereSeparator: \.isNewline).first { $0.hasPrefix("step \(step) exited with ") }
                .flatMap {
                    Int($0.dropFirst("step \(step) exited with ".count).trimmingCharacters(in: .whitespacesAndNewlines))
                }
        }

        // The fake MSI and the fake blnsvr.exe fail: each step exits with its installer's failure.
        let first = try boot()
        #expect(fm.fileExists(atPath: staged + "/install.log"), "msiexec wrote no log where the step said:\n\(first)")
        #expect(code(first, 40).map { $0 != 0 } == true && code(first, 41).map { $0 != 0 } == true, "\(first)")

        // The services exist now (as if installed by hand): both steps end with 0, and msiexec does not run (no new log).
        try fm.removeItem(atPath: staged + "/install.log")
        for svc in ["QEMU-GA", "BalloonService"] {
            try wine.run(["sc", "create", svc, "binPath=", "C:\\windows\\system32\\cmd.exe"], in: wine.driveC)
        }
        let second = try boot()
        #expect(code(second, 40) == 0 && code(second, 41) == 0, "\(second)")
        #expect(!fm.fileExists(atPath: staged + "/install.log"), "msiexec ran again:\n\(second)")
    }

    /// The runner's control flow, run by Wine's cmd: a step that asks for a restart (3010) restarts Windows before the
    /// next step, which runs after the restart; a failing step is tried on three boots and given up; when every step is
    /// done the Group Policy files are put back and the scripts removed. The runner as it was (`set PENDING=1 &`) fails
    /// the first boot's checks: step 30 ran in the same boot and no restart was asked for.
    @Test(
        .enabled(
            if: WineCmd.binary != nil || ProcessInfo.processInfo.environment["CI"] != nil,
            "needs wine64 (.ci/setup installs it)"))
    func theRunnerRestartsAfterAStepAsksForItAndGoesOnAfterTheRestart() throws {
        try #require(WineCmd.binary != nil, "wine64 is not installed: .ci/setup installs it")
        let wine = try WineCmd()
        defer { wine.close() }
        // systemRoot C:\RemedyTest, so the Group Policy files the runner puts back are in the test's own folder.
        var os = Self.os
        os.systemRoot = "/RemedyTest"
        let root = wine.driveC + "/RemedyTest"
        let fb = root + "/remedy/firstboot"
        let fm = FileManager.default
        for d in ["scripts", "restore"] {
            try fm.createDirectory(atPath: "\(fb)/\(d)", withIntermediateDirectories: true)
        }
        try fm.createDirectory(
            atPath: root + "/System32/GroupPolicy/Machine/Scripts", withIntermediateDirectories: true)
        func write(_ path: String, _ text: String) throws {
            try FirstBoot.crlf(text).write(toFile: path, atomically: true, encoding: .utf8)
        }
        try write(fb + "/run.cmd", FirstBoot.runnerScript(os))
        try write(fb + "/scripts/10-first.cmd", "@echo off\necho first ran\nexit /b 0\n")
        try write(fb + "/scripts/20-restart.cmd", "@echo off\necho restart ran\nexit /b 3010\n")
        try write(fb + "/scripts/30-after.cmd", "@echo off\necho after ran\nexit /b 0\n")
        try write(fb + "/scripts/40-fails.cmd", "@echo off\necho fails ran\nexit /b 1\n")
        try write(fb + "/restore/gpt.ini", "[General]\nVersion=3\n")
        try write(fb + "/restore/scripts.ini", "[Startup]\n")
        try write(root + "/System32/GroupPolicy/gpt.ini", "[General]\nVersion=2\n")
        try write(
            root + "/System32/GroupPolicy/Machine/Scripts/scripts.ini",
            "[Startup]\n0CmdLine=C:\\RemedyTest\\remedy\\firstboot\\run.cmd\n")
        func exists(_ rel: String) -> Bool { fm.fileExists(atPath: "\(fb)/\(rel)") }
        func read(_ rel: String) -> String { (try? String(contentsOfFile: "\(fb)/\(rel)", encoding: .utf8)) ?? "" }
        // Windows' shutdown must not run in the test; wine's own shutdown.exe would end the wine session.
        try? fm.removeItem(atPath: wine.driveC + "/windows/system32/shutdown.exe")
        func boot() throws { try wine.run(["cmd", "/c", "C:\\RemedyTest\\remedy\\firstboot\\run.cmd"], in: root) }

        try boot()
        #expect(exists("state/10-first.done") && exists("state/20-restart.done"))
        #expect(
            !exists("state/30-after.done") && !read("firstboot.log").contains("after ran"),
            "step 30 ran before the restart:\n\(read("firstboot.log"))")
        #expect(read("state/reboots").trimmingCharacters(in: .whitespacesAndNewlines) == "1")
        #expect(read("firstboot.log").contains("restarting Windows to continue"))
        #expect(read("firstboot.log").contains("20-restart.cmd exited with 3010"), "\(read("firstboot.log"))")

        try boot()
        #expect(exists("state/30-after.done") && read("firstboot.log").contains("after ran"))
        #expect(
            read("state/40-fails.tries").trimmingCharacters(in: .whitespacesAndNewlines) == "1"
                && !exists("state/40-fails.done"))
        #expect(read("firstboot.log").contains("40-fails.cmd exited with 1\r\n"))
        #expect(read("firstboot.log").contains("some steps will be retried at the next boot"))
        #expect(exists("scripts/10-first.cmd"))

        try boot()
        #expect(
            read("state/40-fails.tries").trimmingCharacters(in: .whitespacesAndNewlines) == "2"
                && !exists("state/40-fails.done"))
        try boot()
        #expect(exists("state/40-fails.failed") && exists("state/40-fails.done") && exists("state/complete"))
        #expect(read("firstboot.log").contains("40-fails.cmd failed 3 times: giving up"))
        #expect(!exists("scripts"), "the scripts are removed when every step is done")
        let gpt = (try? String(contentsOfFile: root + "/System32/GroupPolicy/gpt.ini", encoding: .utf8)) ?? ""
        #expect(gpt == "[General]\r\nVersion=3\r\n", "\(gpt)")
        let ini =
            (try? String(contentsOfFile: root + "/System32/GroupPolicy/Machine/Scripts/scripts.ini", encoding: .utf8))
            ?? ""
        #expect(ini == "[Startup]\r\n", "\(ini)")
        let log = read("firstboot.log")
        #expect(
            log.components(separatedBy: "first ran").count == 2
                && log.components(separatedBy: "restart ran").count == 2, "every step runs once:\n\(log)")
        // Done: the next boot does nothing.
        try boot()
        #expect(read("firstboot.log") == log)
    }
}
