/// remedy's first-boot runner: a Windows batch file registered as a local
/// Group Policy computer **startup script**, so Windows itself runs it as
/// LocalSystem, before anyone can log on, on every boot until it removes
/// itself. It runs each script of `C:\Windows\remedy\firstboot\scripts\`
/// once, in name order, logging to `firstboot.log`; a step that exits 3010
/// or 1641, or a pending reboot (Component Based Servicing RebootPending,
/// Windows Update RebootRequired, Session Manager
/// PendingFileRenameOperations), restarts Windows and the runner goes on
/// after the restart. A failing step is retried on the next two boots, then
/// given up and marked `.failed`. When every step is done the runner puts
/// the original `scripts.ini` and a `gpt.ini` with a higher version back,
/// runs `gpupdate /target:computer /force` so Group Policy forgets it, and
/// deletes its scripts (the log stays).
///
/// Why a startup script: it needs no binary remedy cannot ship (virt-v2v's
/// runner needs the rhsrvany service wrapper; `cmd.exe` is not a service),
/// it is plain documented files (a scheduled task written offline needs the
/// undocumented binary Triggers/Actions/DynamicInfo blobs of the SOFTWARE
/// task cache, which differ between Windows versions), it runs before logon
/// as SYSTEM (HKLM RunOnce waits for an administrator to log on, which a
/// cloud image may never see), and on every image, sysprepped or not
/// (`SetupComplete.cmd` runs only at the end of Windows Setup).
enum FirstBoot {
    /// The Group Policy client-side extension that runs scripts, and its MMC snap-in (the pair gpedit writes).
    static let scriptsExtension = "[{42B5FAAE-6536-11D2-AE5A-0000F87571E3}{40B6664F-4972-11D1-A7CA-0000F87571E3}]"

    static func directory(_ os: OSFacts) -> String { os.systemRoot + "/remedy/firstboot" }
    static func runner(_ os: OSFacts) -> String { directory(os) + "/run.cmd" }
    static func script(_ os: OSFacts, _ name: String) -> String { directory(os) + "/scripts/" + name }
    static func gptIni(_ os: OSFacts) -> String { os.systemRoot + "/System32/GroupPolicy/gpt.ini" }
    static func scriptsIni(_ os: OSFacts) -> String {
        os.systemRoot + "/System32/GroupPolicy/Machine/Scripts/scripts.ini"
    }
    static func restoreDirectory(_ os: OSFacts) -> String { directory(os) + "/restore" }

    /// The runner's command line as Group Policy stores it.
    static func commandLine(_ os: OSFacts) -> String { GuestPath.windows(runner(os)) }

    static func requirements(_ os: OSFacts) -> [FileRequirement] {
        [
            FileRequirement(runner(os)), FileRequirement(gptIni(os), text: true),
            FileRequirement(scriptsIni(os), text: true),
            FileRequirement(restoreDirectory(os) + "/gpt.ini"), FileRequirement(restoreDirectory(os) + "/scripts.ini"),
            FileRequirement(restoreDirectory(os) + "/no-scripts.ini"),
        ]
    }

    /// A first-boot step, plus the runner and its registration when the image does not have them yet.
    /// Comment lines (`rem ...`) are made inert here for every rule: they may carry text from the image or
    /// virtio-win (a DisplayName, a DriverVer), and cmd expands `%` even in a comment (`%~x` aborts the script).
    static func step(_ os: OSFacts, name: String, body: String, files: FileSnapshot) -> [FileChange] {
        var out: [FileChange] = []
        let lines = crlf(body).components(separatedBy: "\r\n").map { line in
            line.lowercased().hasPrefix("rem ") ? "rem " + Cmd.comment(String(line.dropFirst(4))) : line
        }
        if let c = FileChange.text(script(os, name), lines.joined(separator: "\r\n"), in: files) { out.append(c) }
        return out + ensureRunner(os, files: files)
    }

    /// The runner file and its Group Policy registration, unless already in place.
    static func ensureRunner(_ os: OSFacts, files: FileSnapshot) -> [FileChange] {
        var out: [FileChange] = []
        if let c = FileChange.text(runner(os), crlf(runnerScript(os)), in: files) { out.append(c) }
        let scripts = files.file(scriptsIni(os))
        let current = scripts?.text ?? ""
        guard !current.lowercased().contains(commandLine(os).lowercased()) else { return out }
        // Registration: our entry added to scripts.ini, the scripts extension listed in gpt.ini, its version raised.
        let gpt = files.file(gptIni(os))
        let (newGpt, restoreGpt) = gptIniTexts(gpt?.text ?? "")
        if let c = FileChange.text(
            scriptsIni(os), addStartup(current, commandLine(os)), encoding: scripts?.encoding ?? .utf16le, in: files)
        {
            out.append(c)
        }
        if let c = FileChange.text(gptIni(os), newGpt, encoding: gpt?.encoding ?? .utf8, in: files) { out.append(c) }
        // What the runner puts back when it is done.
        let restore = restoreDirectory(os)
        if let c = FileChange.text(restore + "/gpt.ini", restoreGpt, encoding: gpt?.encoding ?? .utf8, in: files) {
            out.append(c)
        }
        if let s = scripts, let text = s.text {
            if let c = FileChange.text(restore + "/scripts.ini", text, encoding: s.encoding ?? .utf16le, in: files) {
                out.append(c)
            }
        } else if let c = FileChange.text(
            restore + "/no-scripts.ini", "scripts.ini did not exist before remedy\r\n", in: files)
        {
            out.append(c)
        }
        return out
    }

    /// `scripts.ini` with a `[Startup]` entry for `command` at the next free index.
    static func addStartup(_ text: String, _ command: String) -> String {
        var lines = text.replacingOccurrences(of: "\r\n", with: "\n").split(
            separator: "\n", omittingEmptySubsequences: false
        ).map(String.init)
        while lines.last == "" { lines.removeLast() }
        var section: String?
        var used = Set<Int>()
        var startupEnd: Int?
        for (i, l) in lines.enumerated() {
            let t = l.trimmingCharacters(in: .whitespaces)
            if t.hasPrefix("[") {
                section = t.lowercased()
                continue
            }
            if section == "[startup]" {
                startupEnd = i
                let digits = t.prefix { $0.isNumber }
                if let n = Int(digits), t.dropFirst(digits.count).lowercased().hasPrefix("cmdline") { used.insert(n) }
            }
        }
        var n = 0
        while used.contains(n) { n += 1 }
        let entry = ["\(n)CmdLine=\(command)", "\(n)Parameters="]
        if let header = lines.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces).lowercased() == "[startup]" })
        {
            lines.insert(contentsOf: entry, at: (startupEnd ?? header) + 1)
        } else {
            if !lines.isEmpty { lines.append("") }
            lines += ["[Startup]"] + entry
        }
        return lines.joined(separator: "\r\n") + "\r\n"
    }

    /// `gpt.ini` registering the scripts extension with the machine version
    /// raised by one, and the version the runner writes when it is done
    /// (raised again, so Group Policy re-reads the local policy without the script).
    static func gptIniTexts(_ text: String) -> (String, String) {
        var lines = text.replacingOccurrences(of: "\r\n", with: "\n").split(
            separator: "\n", omittingEmptySubsequences: false
        ).map(String.init)
        while lines.last == "" { lines.removeLast() }
        if !lines.contains(where: { $0.trimmingCharacters(in: .whitespaces).lowercased() == "[general]" }) {
            lines.insert("[General]", at: 0)
        }
        let general = lines.firstIndex { $0.trimmingCharacters(in: .whitespaces).lowercased() == "[general]" }!
        func find(_ key: String) -> Int? {
            lines.firstIndex { $0.lowercased().hasPrefix(key.lowercased() + "=") }
        }
        let version =
            find("Version").flatMap {
                UInt32(
                    lines[$0].split(separator: "=", maxSplits: 1).last.map(String.init)?.trimmingCharacters(
                        in: .whitespaces) ?? "")
            } ?? 0
        // The machine version is the low 16 bits, the user version the high 16.
        func with(_ machineDelta: UInt32) -> UInt32 {
            (version & 0xFFFF_0000) | (((version & 0xFFFF) + machineDelta) & 0xFFFF)
        }
        var ours = lines
        let extLine: String
        if let i = find("gPCMachineExtensionNames") {
            let value = String(lines[i].split(separator: "=", maxSplits: 1).last ?? "")
            extLine =
                value.uppercased().contains("42B5FAAE-6536-11D2-AE5A-0000F87571E3")
                ? lines[i]
                : "gPCMachineExtensionNames=" + mergeExtensions(value, scriptsExtension)
            ours[i] = extLine
        } else {
            ours.insert("gPCMachineExtensionNames=\(scriptsExtension)", at: general + 1)
        }
        var restore = lines
        if let i = find("Version") {
            ours[ours.firstIndex { $0.lowercased().hasPrefix("version=") }!] = "Version=\(with(1))"
            restore[i] = "Version=\(with(2))"
        } else {
            ours.append("Version=\(with(1))")
            restore.append("Version=\(with(2))")
        }
        return (ours.joined(separator: "\r\n") + "\r\n", restore.joined(separator: "\r\n") + "\r\n")
    }

    /// Adds a `[{CSE}{tool}]` pair to an extension list, kept sorted by extension GUID as Windows writes it.
    static func mergeExtensions(_ list: String, _ pair: String) -> String {
        var pairs: [String] = []
        var rest = Substring(list.trimmingCharacters(in: .whitespaces))
        while let open = rest.firstIndex(of: "["), let close = rest[open...].firstIndex(of: "]") {
            pairs.append(String(rest[open...close]))
            rest = rest[rest.index(after: close)...]
        }
        pairs.append(pair)
        return pairs.sorted { $0.uppercased() < $1.uppercased() }.joined()
    }

    static func crlf(_ s: String) -> String {
        s.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\n", with: "\r\n")
    }

    static func runnerScript(_ os: OSFacts) -> String {
        let gpt = GuestPath.windows(gptIni(os)), ini = GuestPath.windows(scriptsIni(os))
        // cmd rules kept throughout (each one a bug it avoids; RunnerScriptTests checks them):
        // - every assignment is `set "NAME=value"`: in `set NAME=1 & exit /b 0` the value is "1 ", with the space;
        // - a redirection goes first (`>>"%LOG%" echo ...`): in `echo exited with 0>>log`, "0>>" redirects handle 0;
        // - `reg query ...` then `if not errorlevel 1` (the same as `&&` in cmd, and also right in Wine's cmd, which the tests run);
        // - each step runs in its own `cmd /d /c`: its `exit`, `setlocal` or `goto` cannot end or change the runner, and
        //   its exit code is the process's (AutoRun commands from the registry are not run);
        // - no delayed expansion (`!` stays literal), every path in quotes, no value from the image or the user.
        return """
            @echo off
            rem remedy first-boot runner (a local Group Policy computer startup script).
            rem Runs every script in scripts\\ once, in name order, as SYSTEM, before logon;
            rem restarts Windows when a step or a pending reboot asks for it and goes on after;
            rem removes itself when every step is done. Log: firstboot.log beside this file.
            setlocal EnableExtensions DisableDelayedExpansion
            set "FB=%~dp0"
            set "LOG=%FB%firstboot.log"
            if exist "%FB%state\\complete" exit /b 0
            if not exist "%FB%state" mkdir "%FB%state"
            set "REBOOTS=0"
            if exist "%FB%state\\reboots" set /p "REBOOTS="<"%FB%state\\reboots"
            >>"%LOG%" echo %DATE% %TIME% runner started (restarts so far: %REBOOTS%)
            set "PENDING=0"
            for /f "delims=" %%S in ('dir /b /on "%FB%scripts\\*.cmd" 2^>nul') do call :step "%%S"
            if "%PENDING%"=="1" goto reboot
            for /f "delims=" %%S in ('dir /b /on "%FB%scripts\\*.cmd" 2^>nul') do if not exist "%FB%state\\%%~nS.done" goto later
            goto finish

            :step
            if "%PENDING%"=="1" exit /b 0
            if exist "%FB%state\\%~n1.done" exit /b 0
            call :pending
            if "%PENDING%"=="1" (>>"%LOG%" echo %DATE% %TIME% a reboot is pending before %~1& exit /b 0)
            set "TRIES=0"
            if exist "%FB%state\\%~n1.tries" set /p "TRIES="<"%FB%state\\%~n1.tries"
            set /a TRIES+=1
            >"%FB%state\\%~n1.tries" echo %TRIES%
            >>"%LOG%" echo %DATE% %TIME% running %~1 (attempt %TRIES%)
            cmd /d /c ""%FB%scripts\\%~1"" >>"%LOG%" 2>&1
            set "RC=%ERRORLEVEL%"
            >>"%LOG%" echo %DATE% %TIME% %~1 exited with %RC%
            if "%RC%"=="0" (type nul>"%FB%state\\%~n1.done"& exit /b 0)
            if "%RC%"=="3010" (type nul>"%FB%state\\%~n1.done"& set "PENDING=1"& exit /b 0)
            if "%RC%"=="1641" (type nul>"%FB%state\\%~n1.done"& set "PENDING=1"& exit /b 0)
            if %TRIES% GEQ 3 (>>"%LOG%" echo %DATE% %TIME% %~1 failed %TRIES% times: giving up& type nul>"%FB%state\\%~n1.failed"& type nul>"%FB%state\\%~n1.done")
            exit /b 0

            :pending
            rem A Windows that always reports a pending reboot must not restart for ever.
            if %REBOOTS% GEQ 5 exit /b 0
            reg query "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\RebootPending" >nul 2>&1
            if not errorlevel 1 set "PENDING=1"
            reg query "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\RebootRequired" >nul 2>&1
            if not errorlevel 1 set "PENDING=1"
            reg query "HKLM\\SYSTEM\\CurrentControlSet\\Control\\Session Manager" /v PendingFileRenameOperations >nul 2>&1
            if not errorlevel 1 set "PENDING=1"
            exit /b 0

            :reboot
            set /a REBOOTS+=1
            >"%FB%state\\reboots" echo %REBOOTS%
            >>"%LOG%" echo %DATE% %TIME% restarting Windows to continue
            shutdown /r /t 10 /c "remedy: first-boot setup continues after a restart"
            exit /b 0

            :later
            >>"%LOG%" echo %DATE% %TIME% some steps will be retried at the next boot
            exit /b 0

            :finish
            >>"%LOG%" echo %DATE% %TIME% every step is done: removing the runner
            if exist "%FB%restore\\scripts.ini" (copy /y "%FB%restore\\scripts.ini" "\(ini)" >nul) else (del /f /q "\(ini)" >nul 2>&1)
            copy /y "%FB%restore\\gpt.ini" "\(gpt)" >nul
            gpupdate /target:computer /force >>"%LOG%" 2>&1
            type nul>"%FB%state\\complete"
            rmdir /s /q "%FB%scripts"
            >>"%LOG%" echo %DATE% %TIME% runner finished

            """
    }
}

/// What may go into a generated cmd script. Inside double quotes cmd keeps `& | < > ^ ( )` literal, but still
/// expands `%` (and `!` when delayed expansion is on, which the registry can make the default), a `"` ends the
/// quotes, and a line break ends the command: a value with one of those cannot be quoted at all.
public enum Cmd {
    /// Characters no quoting makes literal in cmd.
    static func unquotable(_ c: Character) -> Bool {
        c == "%" || c == "!" || c == "\"" || c.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
    }

    /// Whether `value` can be given to cmd inside double quotes and stays exactly itself.
    public static func canQuote(_ value: String) -> Bool { !value.contains(where: unquotable) }

    /// `"value"`, or nil when cmd cannot keep the value literal.
    public static func quoted(_ value: String) -> String? { canQuote(value) ? "\"" + value + "\"" : nil }

    /// Text safe in a `rem` comment: only letters, digits, spaces and `. , : / \\ - _ + = @ # [ ] { }` are kept, the rest become `_`.
    public static func comment(_ text: String) -> String {
        String(
            text.map { c in
                c.isASCII && (c.isLetter || c.isNumber || " .,:/\\-_+=@#[]{}".contains(c)) ? c : "_"
            })
    }
}
