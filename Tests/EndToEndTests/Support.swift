import Foundation
import RemedyCore
import RemedyFixtures

/// Phony images shared by the end-to-end tests, built once, in one appliance launch.
struct Fixtures: Sendable {
    let dir: String
    let win2016Static: String  // 2 static NICs in ControlSet001 and ControlSet002 (qcow2)
    let win2019Dhcp: String  // DHCP only (raw, UEFI), otherwise clean under huawei-ims
    let win2008r2Broken: String  // every broken state remedy knows, static NICs in both control sets (vmdk)
    let truncatedHive: String  // SYSTEM hive cut short (raw)
    let dataDisk: String  // NTFS, no OS (raw)
    let linux: String  // Debian root (raw)
    let garbage: String  // not a disk at all
    /// A directory for `remedy batch`: two images to fix, a clean one, a truncated hive, Linux, junk, a text file.
    let batchDir: String
    /// Images for a batch apply (written by it).
    let applyDir: String
    /// One image per acceptance rule and integrity state (plan only).
    let acceptDir: String
    /// Dirty, unrecoverable, hibernated and encrypted images for apply.
    let integrityDir: String
    /// Images of 2008 (x86), 2008 R2, 2012 R2, 2016 and 2022 for driver and payload injection (written by it).
    let driversDir: String
    /// A Server 2016 image for the wrong-virtio-win and missing-virtio-win cases (never written).
    let driversWrongOS: String
    /// A fake virtio-win: unpacked ISO tree, the ISO built from it, the packaged tree, and a tree with only 2k19.
    let virtioTree: String
    let virtioISO: String
    let virtioPackaged: String
    let virtioOnly2k19: String
    /// A stand-in for the Cloudbase-Init MSI (placeholder bytes).
    let cloudbaseMSI: String
    /// Images built around real Windows SYSTEM hives (regipy): 7 (two static NICs), 8.1, 10 1709 (written by their test).
    let realDir: String
    static let realImages: [(hive: RealSystemHive, file: String)] = [
        (.windows7, "real-w7.qcow2"), (.windows81, "real-w81.qcow2"), (.windows10v1709, "real-w10-1709.qcow2"),
    ]
    /// release -> image, for the inspection matrix (several formats).
    let matrix: [(release: WindowsRelease, arch: Architecture, firmware: Firmware, path: String, format: DiskFormat)]
    /// Images of the suites that work on images of their own, built here rather than in a launch each:
    /// Server 2016, a static NIC (10.1.2.3), VMware Tools, 41 GiB: CrashSafetyTests and SafetyPathTests copy it.
    let ownBase2016: String
    /// A hibernated Server 2016 (SafetyPathTests; never written).
    let ownHibernated: String
    /// RollbackPathTests' two images (written by it): a 2016 with a startup script, a 2012 R2 with Xen PV drivers.
    let rollbackA: String
    let rollbackB: String
    /// A Server 2022 UEFI image whose `\EFI\Boot\bootx64.efi` is stale (UefiFallbackEndToEndTests writes it).
    let uefiStale: String
    /// Three small Server 2016 images for HostileBatchEndToEndTests' hanging call (`a`, `b`, `c`.qcow2).
    let hangDir: String

    static let brokenStates: Set<PhonyState> = [
        .vmwareTools, .xenPV, .parallelsTools, .virtualBoxAdditions, .ideDisabled, .deviceInstallRestricted,
    ]
    /// What the plans of tests that give no virtio-win and no Cloudbase-Init MSI also say (warnings about those inputs).
    static let noInputFindings: Set<FindingID> = [
        "virtio-win-missing", "payload-missing", "multi-queue-no-driver", "multi-queue-unsupported",
        "virtio-win-known-issue",
    ]
    static let guidA = "{3F2504E0-4F89-41D3-9A0C-0305E82C3301}"
    static let guidB = "{6B29FC40-CA47-1067-B31D-00DD010662DA}"

    /// Tests pin the accelerator to TCG (it works everywhere); the fallback test exercises `auto`.
    static var options: ApplianceOptions {
        var o = ApplianceOptions(acceleration: .tcg)
        o.cacheFile = NSTemporaryDirectory() + "/remedy-tests-accel.json"
        return o
    }

    static let shared: Result<Fixtures, any Error> = Result { try build() }

    static func get() throws -> Fixtures { try shared.get() }

    static func build() throws -> Fixtures {
        let dir = NSTemporaryDirectory() + "/remedy-e2e-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let matrix: [(WindowsRelease, Architecture, Firmware, String, DiskFormat)] = [
            (.server2008, .i386, .bios, "\(dir)/m-2008-x86.vhd", .vhd),
            (.server2008R2, .x86_64, .bios, "\(dir)/m-2008r2.vmdk", .vmdk),
            (.server2012R2, .x86_64, .bios, "\(dir)/m-2012r2.qcow2", .qcow2),
            (.server2016, .x86_64, .uefi, "\(dir)/m-2016.raw", .raw),
            (.server2019, .x86_64, .uefi, "\(dir)/m-2019.vdi", .vdi),
            (.server2022, .x86_64, .uefi, "\(dir)/m-2022.vhdx", .vhdx),
        ]
        let f = Fixtures(
            dir: dir,
            win2016Static: "\(dir)/win2016-static.qcow2",
            win2019Dhcp: "\(dir)/win2019-dhcp.raw",
            win2008r2Broken: "\(dir)/win2008r2-broken.vmdk",
            truncatedHive: "\(dir)/win2012r2-truncated.raw",
            dataDisk: "\(dir)/data.raw",
            linux: "\(dir)/linux.raw",
            garbage: "\(dir)/garbage.vmdk",
            batchDir: "\(dir)/batch",
            applyDir: "\(dir)/batch-apply",
            acceptDir: "\(dir)/accept",
            integrityDir: "\(dir)/integrity",
            driversDir: "\(dir)/drivers",
            driversWrongOS: "\(dir)/drivers-wrong-os.qcow2",
            virtioTree: "\(dir)/virtio-win",
            virtioISO: "\(dir)/virtio-win.iso",
            virtioPackaged: "\(dir)/virtio-win-packaged",
            virtioOnly2k19: "\(dir)/virtio-win-2k19",
            cloudbaseMSI: "\(dir)/CloudbaseInitSetup_x64.msi",
            realDir: "\(dir)/real",
            matrix: matrix.map { (release: $0.0, arch: $0.1, firmware: $0.2, path: $0.3, format: $0.4) },
            ownBase2016: "\(dir)/own/base-2016.qcow2",
            ownHibernated: "\(dir)/own/hibernated-2016.qcow2",
            rollbackA: "\(dir)/own/rollback-a.qcow2",
            rollbackB: "\(dir)/own/rollback-b.qcow2",
            uefiStale: "\(dir)/own/u2022.raw",
            hangDir: "\(dir)/own/hang")
        var requests = [
            ImageRequest(
                .windows(
                    PhonyWindows(
                        release: .server2016,
                        nics: [
                            .staticIP(guidA, "10.1.2.10", gateway: "10.1.2.1"),
                            .staticIP(guidB, "172.16.5.20", mask: "255.255.0.0"),
                        ])), path: f.win2016Static, format: .qcow2),
            ImageRequest(
                .windows(
                    PhonyWindows(
                        release: .server2019, firmware: .uefi, nics: [.dhcp(guidA, dns: ["9.9.9.9"])],
                        states: [.noAutoReboot])),
                path: f.win2019Dhcp, format: .raw),
            ImageRequest(
                .windows(
                    PhonyWindows(
                        release: .server2008R2, hostname: "WIN-BROKEN",
                        nics: [
                            .staticIP(guidA, "10.1.2.10", gateway: "10.1.2.1"), .dhcp(guidB),
                        ], states: brokenStates)), path: f.win2008r2Broken, format: .vmdk),
            ImageRequest(
                .windows(
                    PhonyWindows(
                        release: .server2012R2, nics: [.staticIP(guidA, "10.0.0.1")], damage: .truncateSystemHive(6000))
                ),
                path: f.truncatedHive, format: .raw),
            ImageRequest(.dataDisk, path: f.dataDisk),
            ImageRequest(.linux, path: f.linux),
        ]
        let big = 41 * 1024  // MiB: a system disk the cloud accepts (40-1024 GB); sparse, so cheap
        let staticWindows = PhonyWindows(
            release: .server2012R2, nics: [.staticIP(guidA, "10.4.4.4")], states: [.xenPV], diskMiB: big)
        func win(
            _ release: WindowsRelease = .server2016, firmware: Firmware = .bios, states: Set<PhonyState> = [],
            damage: PhonyDamage? = nil, mib: Int = big
        ) -> PhonyDisk {
            .windows(
                PhonyWindows(
                    release: release, firmware: firmware, states: states.union([.noAutoReboot]), damage: damage,
                    diskMiB: mib))
        }
        requests += [
            ImageRequest(win(), path: "\(f.acceptDir)/pass.qcow2", format: .qcow2),
            ImageRequest(win(mib: 128), path: "\(f.acceptDir)/small.qcow2", format: .qcow2),
            ImageRequest(win(mib: 130 * 1024), path: "\(f.acceptDir)/huge.raw", format: .raw),
            ImageRequest(win(states: [.bootOnOtherDisk]), path: "\(f.acceptDir)/noboot.qcow2", format: .qcow2),
            ImageRequest(win(.server2008R2, firmware: .uefi), path: "\(f.acceptDir)/uefi2008r2.qcow2", format: .qcow2),
            ImageRequest(win(states: [.adminDisabled]), path: "\(f.acceptDir)/noadmin.qcow2", format: .qcow2),
            ImageRequest(
                win(damage: .bitLockerDataVolume), path: "\(f.acceptDir)/bitlocker-data.qcow2", format: .qcow2),
            ImageRequest(win(damage: .hibernated), path: "\(f.acceptDir)/hibernated.qcow2", format: .qcow2),
            ImageRequest(win(states: [.dataPartition]), path: "\(f.acceptDir)/data.qcow2", format: .qcow2),
            ImageRequest(
                .windows(
                    PhonyWindows(
                        release: .server2012R2, nics: [.staticIP(guidA, "10.5.5.5")], damage: .dirtySystemHive,
                        diskMiB: big)),
                path: "\(f.integrityDir)/dirty.qcow2", format: .qcow2),
            ImageRequest(
                win(damage: .dirtySystemHiveWithoutLogs, mib: 128), path: "\(f.integrityDir)/unrecoverable.qcow2",
                format: .qcow2),
            ImageRequest(
                .windows(PhonyWindows(release: .server2016, damage: .hibernated)),
                path: "\(f.integrityDir)/hibernated.qcow2", format: .qcow2),
            ImageRequest(
                win(damage: .bitLockerSystemVolume, mib: 128), path: "\(f.integrityDir)/bitlocker-system.qcow2",
                format: .qcow2),
        ]
        requests += [
            ImageRequest(.windows(staticWindows), path: "\(f.batchDir)/a/win-a.qcow2", format: .qcow2),
            ImageRequest(.windows(staticWindows), path: "\(f.batchDir)/win-b.vhdx", format: .vhdx),
            ImageRequest(
                .windows(PhonyWindows(release: .server2016, states: [.noAutoReboot], diskMiB: big)),
                path: "\(f.batchDir)/win-clean.qcow2", format: .qcow2),
            ImageRequest(.windows(staticWindows), path: "\(f.applyDir)/apply-1.qcow2", format: .qcow2),
            ImageRequest(.windows(staticWindows), path: "\(f.applyDir)/apply-2.qcow2", format: .qcow2),
            ImageRequest(.windows(staticWindows), path: "\(f.applyDir)/apply-3.qcow2", format: .qcow2),
        ]
        requests += [
            ImageRequest(
                .windows(
                    PhonyWindows(
                        release: .server2008, arch: .i386, hostname: "D-2008", nics: [.staticIP(guidA, "10.8.0.8")],
                        states: [.vmwareTools], diskMiB: big)),
                path: "\(f.driversDir)/w2008-x86.qcow2", format: .qcow2),
            ImageRequest(
                .windows(
                    PhonyWindows(
                        release: .server2008R2, hostname: "D-2008R2", nics: [.staticIP(guidA, "10.8.1.8")],
                        states: [.rssDisabled], diskMiB: big)),
                path: "\(f.driversDir)/w2008r2.vmdk", format: .vmdk),
            ImageRequest(
                .windows(
                    PhonyWindows(
                        release: .server2012R2, hostname: "D-2012R2", states: [.cloudbaseInitInstalled, .xenPV],
                        diskMiB: big)),
                path: "\(f.driversDir)/w2012r2.qcow2", format: .qcow2),
            ImageRequest(
                .windows(PhonyWindows(release: .server2016, hostname: "D-2016", states: [.rssDisabled], diskMiB: big)),
                path: "\(f.driversDir)/w2016.qcow2", format: .qcow2),
            ImageRequest(
                .windows(PhonyWindows(release: .server2022, firmware: .uefi, hostname: "D-2022", diskMiB: big)),
                path: "\(f.driversDir)/w2022.qcow2", format: .qcow2),
            ImageRequest(.windows(PhonyWindows(release: .server2016)), path: f.driversWrongOS, format: .qcow2),
            // Intake: every format and an OVA are made from this one image (IntakeEndToEndTests).
            ImageRequest(
                .windows(
                    PhonyWindows(
                        release: .server2016, hostname: "INTAKE", nics: [.staticIP(guidA, "10.6.6.6")],
                        states: [.noAutoReboot])),
                path: "\(dir)/intake-base.qcow2", format: .qcow2),
        ]
        for (hive, file) in realImages {
            var w = PhonyWindows.real(hive)
            w.diskMiB = big
            requests.append(ImageRequest(.windows(w), path: "\(f.realDir)/\(file)", format: .qcow2))
        }
        try FakeVirtioWin.write(at: f.virtioTree, layout: .isoTree)
        try FakeVirtioWin.makeISO(from: f.virtioTree, to: f.virtioISO)
        try FakeVirtioWin.write(at: f.virtioPackaged, layout: .packaged)
        try FakeVirtioWin.write(at: f.virtioOnly2k19, layout: .isoTree, osDirectories: ["2k19"])
        try Data("placeholder for CloudbaseInitSetup_x64.msi\r\n".utf8).write(to: URL(fileURLWithPath: f.cloudbaseMSI))
        for m in f.matrix {
            requests.append(
                ImageRequest(
                    .windows(
                        PhonyWindows(
                            release: m.release, arch: m.arch, firmware: m.firmware,
                            hostname: "M-\(m.release.rawValue.uppercased())",
                            nics: [.staticIP(guidB, "192.168.9.9")])),
                    path: m.path, format: m.format))
        }
        // Last, so that every image above keeps its index (its disk signature and GUIDs).
        requests +=
            [
                ImageRequest(
                    .windows(
                        PhonyWindows(
                            release: .server2016, nics: [.staticIP(guidA, "10.1.2.3")],
                            states: [.vmwareTools, .noAutoReboot], diskMiB: big)),
                    path: f.ownBase2016, format: .qcow2),
                ImageRequest(
                    .windows(
                        PhonyWindows(release: .server2016, states: [.noAutoReboot], damage: .hibernated, diskMiB: big)),
                    path: f.ownHibernated, format: .qcow2),
                ImageRequest(
                    .windows(
                        PhonyWindows(
                            release: .server2016, nics: [.staticIP(guidA, "10.7.7.7")],
                            states: [.vmwareTools, .startupScript])),
                    path: f.rollbackA, format: .qcow2),
                ImageRequest(
                    .windows(
                        PhonyWindows(release: .server2012R2, nics: [.staticIP(guidA, "10.8.8.8")], states: [.xenPV])),
                    path: f.rollbackB, format: .qcow2),
                ImageRequest(
                    .windows(PhonyWindows(release: .server2022, firmware: .uefi, states: [.staleUefiFallback])),
                    path: f.uefiStale),
            ]
            + ["a", "b", "c"].map {
                ImageRequest(
                    .windows(PhonyWindows(release: .server2016, states: [.noAutoReboot])),
                    path: "\(f.hangDir)/\($0).qcow2", format: .qcow2)
            }
        // Two appliances at once: every end-to-end suite waits for these images, and TCG runs one appliance per core.
        try ImageFactory.build(requests, options: options, appliances: 2)
        try Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }).write(
            to: URL(fileURLWithPath: f.garbage))
        for (from, to) in [(f.garbage, "junk.vmdk"), (f.linux, "linux.img"), (f.truncatedHive, "a/truncated.raw")] {
            try FileManager.default.copyItem(atPath: from, toPath: "\(f.batchDir)/\(to)")
        }
        try "not an image\n".write(toFile: "\(f.batchDir)/README.txt", atomically: true, encoding: .utf8)
        return f
    }
}

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs the built `remedy` executable.
func remedy(_ args: [String], environment: [String: String] = [:]) throws -> CommandResult {
    var env = ProcessInfo.processInfo.environment
    env["REMEDY_ACCEL"] = "tcg"
    env["REMEDY_ACCEL_CACHE"] = NSTemporaryDirectory() + "/remedy-tests-accel.json"
    for (k, v) in environment { env[k] = v }
    return try runProgram(remedyExecutable(), args, environment: env)
}

/// Runs the built `remedy-dev` executable (the developer tools: phony images, a fake virtio-win).
func remedyDev(_ args: [String], environment: [String: String] = [:]) throws -> CommandResult {
    var env = ProcessInfo.processInfo.environment
    env["REMEDY_ACCEL"] = "tcg"
    env["REMEDY_ACCEL_CACHE"] = NSTemporaryDirectory() + "/remedy-tests-accel.json"
    for (k, v) in environment { env[k] = v }
    return try runProgram(remedyDevExecutable(), args, environment: env)
}

/// Runs a program with exactly `environment`, in `directory` (default: the current one), and collects its output.
func runProgram(
    _ executable: String, _ args: [String], environment: [String: String], directory: String? = nil
) throws -> CommandResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    p.environment = environment
    if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // Read both pipes while the process runs, so a large output cannot block it.
    var outData = Data(), errData = Data()
    let group = DispatchGroup()
    let queue = DispatchQueue(label: "pipes", attributes: .concurrent)
    nonisolated(unsafe) var o = Data(), e = Data()
    group.enter()
    queue.async {
        o = out.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    group.enter()
    queue.async {
        e = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    group.wait()
    p.waitUntilExit()
    outData = o
    errData = e
    return CommandResult(
        status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self))
}

func remedyExecutable() -> String { builtExecutable("remedy") }

/// The developer tools, built beside `remedy` (`swift build` builds both; .ci/setup runs it).
func remedyDevExecutable() -> String { builtExecutable("remedy-dev") }

func builtExecutable(_ name: String) -> String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return ".build/debug/\(name)"
}

/// A host-side copy of an image file (`cp --sparse=always`: holes stay holes; a file at `copy` is replaced), for
/// reading the image as it was at this point later, beside others, in one appliance.
func sparseCopy(_ image: String, to copy: String) throws {
    try? FileManager.default.removeItem(atPath: copy)
    let r = try runProgram(
        "/bin/cp", ["--sparse=always", image, copy], environment: ProcessInfo.processInfo.environment)
    guard r.status == 0 else {
        throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: copy, NSLocalizedDescriptionKey: r.stderr])
    }
}

func fileBytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

func json(_ text: String) throws -> [String: Any] {
    guard let obj = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
        throw CocoaError(.coderReadCorrupt)
    }
    return obj
}

/// A batch report written by `remedy batch --report`.
func readReport(_ path: String) throws -> BatchReport {
    try RemedyJSON.decoder().decode(BatchReport.self, from: fileBytes(path))
}

/// file name -> `status[:error code]`, for one line of comparison.
func reportStatuses(_ r: BatchReport) -> [String: String] {
    Dictionary(
        uniqueKeysWithValues: r.entries.map {
            (($0.path as NSString).lastPathComponent, $0.status.rawValue + ($0.error.map { ":" + $0.code } ?? ""))
        })
}

/// Runs a program that may leave helpers behind, in a process group of its own, output to `log`, and waits for the
/// program itself with waitpid. Foundation's `Process` on Linux sees an exit only when every process holding its
/// inherited socket has gone, and passes on the calling thread's blocked signals: virt-v2v-in-place started that way
/// could not stop its qemu-nbd (SIGTERM blocked), which then held the socket and hung `waitUntilExit` for ever.
/// After the program exits, whatever is left of its group is killed.
/// Returns the exit status (128 + signal for a signal; -1 on timeout, the group killed).
func runInOwnGroup(
    _ executable: String, _ arguments: [String], environment: [String: String], log: String, timeout: Double
) throws -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    // The calling thread (a libdispatch worker) blocks most signals, and a child inherits that mask: virt-v2v then
    // cannot stop its qemu-nbd with SIGTERM. The child starts with no signal blocked and default dispositions.
    var none = sigset_t(), all = sigset_t()
    sigemptyset(&none)
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attr, &none)
    posix_spawnattr_setsigdefault(&attr, &all)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    posix_spawnattr_setpgroup(&attr, 0)
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { for p in argv + envp { free(p) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, executable, &actions, &attr, argv, envp)
    guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
    let deadline = Date().addingTimeInterval(timeout)
    var status: Int32 = 0
    var result: Int32 = -1
    while true {
        let w = waitpid(pid, &status, WNOHANG)
        if w == pid {
            let signal = status & 0x7F
            result = signal == 0 ? (status >> 8) & 0xFF : 128 + signal
            break
        }
        if w < 0 && errno != EINTR { break }
        if Date() > deadline {
            kill(-pid, SIGKILL)
            _ = waitpid(pid, &status, 0)
            break
        }
        usleep(200_000)
    }
    kill(-pid, SIGKILL)  // helpers it left behind (same group)
    return result
}
