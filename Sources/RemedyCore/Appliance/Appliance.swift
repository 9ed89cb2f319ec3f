import Foundation
import Guestfs
import Logging
import Synchronization
import SystemPackage

/// How the appliance VM is accelerated.
public enum Acceleration: String, Sendable, Codable, CaseIterable {
    /// KVM when it boots here, else TCG; the answer is probed once and remembered.
    case auto
    /// Hardware virtualisation; fails (never hangs) when it does not boot.
    case kvm
    /// Software emulation: slower, works everywhere.
    case tcg
}

/// One disk to attach to the appliance.
public struct Drive: Sendable {
    public var path: String
    /// qemu's format name (`raw`, `qcow2`, `vmdk`, `vpc`, ...). Always explicit: never let qemu guess.
    public var format: String
    public var readonly: Bool

    public init(path: String, format: String, readonly: Bool) {
        self.path = path
        self.format = format
        self.readonly = readonly
    }
}

public struct ApplianceOptions: Sendable {
    public var acceleration: Acceleration
    /// How long a KVM launch may take before remedy decides KVM does not boot here.
    public var kvmTimeout: TimeInterval
    /// How long any launch may take before it is abandoned.
    public var launchTimeout: TimeInterval
    /// Appliance memory in MiB (libguestfs's default when nil).
    public var memoryMiB: Int?
    /// Where the KVM probe's answer is remembered.
    public var cacheFile: String
    /// Where notices meant for the user go, at level `notice` (a swift-log `Logger`: the CLI prints each as one
    /// `remedy: <message>` line on stderr; by default they are dropped).
    public var logger: Logger
    /// libguestfs debug output on stderr.
    public var debug: Bool
    /// How long any one appliance call may take (after the launch) before the appliance is stopped and the call
    /// fails with `appliance-timeout` (`REMEDY_CALL_TIMEOUT`): a guest that makes a call hang cannot block a plan
    /// or a batch for ever. Generous: the slowest real call (a large tar under TCG) takes a few minutes.
    public var callTimeout: TimeInterval = 900
    /// Under TCG, the size in MiB of qemu's buffer of translated code (`REMEDY_TCG_CODE_CACHE`; 0 keeps qemu's
    /// 1 GiB): most of an appliance's memory after a while otherwise (see ``TCGLauncher``).
    public var tcgCodeCacheMiB: Int = TCGLauncher.defaultMiB

    public init(
        acceleration: Acceleration = .auto, kvmTimeout: TimeInterval = 30, launchTimeout: TimeInterval = 600,
        memoryMiB: Int? = nil, cacheFile: String = ApplianceOptions.defaultCacheFile,
        debug: Bool = false, logger: Logger = Logger(label: "remedy", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.acceleration = acceleration
        self.kvmTimeout = kvmTimeout
        self.launchTimeout = launchTimeout
        self.memoryMiB = memoryMiB
        self.cacheFile = cacheFile
        self.debug = debug
        self.logger = logger
    }

    /// `$REMEDY_ACCEL_CACHE`, else `$XDG_CACHE_HOME/remedy/accel.json`, else `~/.cache/remedy/accel.json`.
    public static var defaultCacheFile: String {
        let env = ProcessInfo.processInfo.environment
        if let p = env["REMEDY_ACCEL_CACHE"], !p.isEmpty { return p }
        let base = env["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? (NSHomeDirectory() + "/.cache")
        return base + "/remedy/accel.json"
    }

    /// Options from the environment: `REMEDY_ACCEL`, `REMEDY_KVM_TIMEOUT`,
    /// `REMEDY_LAUNCH_TIMEOUT`, `REMEDY_MEMSIZE`, `REMEDY_TCG_CODE_CACHE`, `REMEDY_DEBUG`. libguestfs's own
    /// `LIBGUESTFS_BACKEND_SETTINGS=force_tcg` is honoured as `tcg`.
    public static func fromEnvironment(
        _ env: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> ApplianceOptions {
        var o = ApplianceOptions()
        if let a = env["REMEDY_ACCEL"], !a.isEmpty {
            guard let accel = Acceleration(rawValue: a) else {
                throw RemedyError(.invalidArgument, "REMEDY_ACCEL must be auto, kvm or tcg, not \(a)")
            }
            o.acceleration = accel
        } else if env["LIBGUESTFS_BACKEND_SETTINGS"]?.contains("force_tcg") == true {
            o.acceleration = .tcg
        }
        if let t = env["REMEDY_KVM_TIMEOUT"].flatMap(Double.init) { o.kvmTimeout = t }
        if let t = env["REMEDY_LAUNCH_TIMEOUT"].flatMap(Double.init) { o.launchTimeout = t }
        if let m = env["REMEDY_MEMSIZE"].flatMap(Int.init) { o.memoryMiB = m }
        if let t = env["REMEDY_TCG_CODE_CACHE"], !t.isEmpty {
            guard let mib = Int(t), mib >= 0 else {
                throw RemedyError(
                    .invalidArgument, "REMEDY_TCG_CODE_CACHE must be a number of MiB (0: qemu's default), not \(t)")
            }
            o.tcgCodeCacheMiB = mib
        }
        if let t = env["REMEDY_CALL_TIMEOUT"], !t.isEmpty {
            guard let seconds = Double(t), seconds > 0 else {
                throw RemedyError(.invalidArgument, "REMEDY_CALL_TIMEOUT must be a number of seconds, not \(t)")
            }
            o.callTimeout = seconds
        }
        o.debug = ["1", "true", "yes"].contains(env["REMEDY_DEBUG"] ?? "")
        return o
    }
}

/// What the KVM probe found on this host, remembered between runs.
struct AccelerationCache: Codable {
    var host: String
    var kvmBoots: Bool
    var probedAt: Date
    var timeoutSeconds: Double

    /// Identifies the host setup the answer is valid for: kernel, CPU, qemu build.
    static func hostKey() -> String {
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let cpu =
            (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }.map(String.init) ?? "?"
        let qemu =
            ["/usr/bin/qemu-system-x86_64", "/usr/libexec/qemu-kvm"].compactMap { path -> String? in
                guard let a = try? FileManager.default.attributesOfItem(atPath: path),
                    let m = a[.modificationDate] as? Date
                else { return nil }
                return "\(path)@\(Int(m.timeIntervalSince1970))"
            }.first ?? "?"
        return [release, cpu, qemu].joined(separator: "|")
    }

    static func load(_ path: String) -> AccelerationCache? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        guard let c = try? d.decode(AccelerationCache.self, from: data), c.host == hostKey() else { return nil }
        return c
    }

    func save(_ path: String) {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? e.encode(self) else { return }
        try? FileManager.default.createDirectory(
            atPath: FilePath(path).removingLastComponent().string, withIntermediateDirectories: true)
        let tmp = path + ".\(getpid()).tmp"
        if FileManager.default.createFile(atPath: tmp, contents: data) { _ = Foundation.rename(tmp, path) }
    }
}

/// A running libguestfs appliance with the drives it was given.
///
/// `launch` never hangs: each launch runs under a watchdog that kills the
/// appliance's qemu process when its deadline passes, which makes
/// libguestfs's launch return an error. With `auto`, a KVM launch that does
/// not finish within `kvmTimeout` is taken to mean KVM does not boot on this
/// host: remedy says so, falls back to TCG, and remembers the answer.
public final class Appliance {
    public let guestfs: Guestfs
    /// The acceleration actually used.
    public let acceleration: Acceleration
    /// Seconds the launch took (the successful attempt only).
    public let launchSeconds: Double
    /// Which image's filesystem is mounted at `/` now, and how (sessions sharing the appliance take turns).
    var mounted: (device: String, writable: Bool)?

    private init(guestfs: Guestfs, acceleration: Acceleration, launchSeconds: Double) {
        self.guestfs = guestfs
        self.acceleration = acceleration
        self.launchSeconds = launchSeconds
    }

    public static func kvmAvailable() -> Bool {
        access("/dev/kvm", R_OK | W_OK) == 0
    }

    public static func launch(drives: [Drive], options: ApplianceOptions) throws -> Appliance {
        switch options.acceleration {
        case .tcg:
            return try tcg(drives, options)
        case .kvm:
            guard kvmAvailable() else {
                throw RemedyError(
                    .applianceFailed, "--accel kvm: /dev/kvm is missing or not accessible; use --accel tcg or auto")
            }
            do {
                return try attempt(drives, .kvm, deadline: options.kvmTimeout, options)
            } catch let e as LaunchTimeout {
                throw RemedyError(
                    .applianceTimeout,
                    "the KVM appliance did not boot within \(Int(e.seconds)) s; KVM does not work on this host, use --accel tcg or auto"
                )
            } catch let e as RemedyError where e.code == .applianceFailed {
                throw RemedyError(
                    .applianceFailed, e.message + "; KVM may not work on this host, use --accel tcg or auto", cause: e)
            }
        case .auto:
            guard kvmAvailable() else { return try tcg(drives, options) }
            let cached = AccelerationCache.load(options.cacheFile)
            if let cached, !cached.kvmBoots {
                if CachedNotice.once() {
                    options.logger.notice(
                        "using TCG (software emulation): a KVM appliance did not boot on this host when probed on \(Self.day(cached.probedAt)); remembered in \(options.cacheFile) (delete it, or pass --accel kvm, to try KVM again)"
                    )
                }
                return try tcg(drives, options)
            }
            do {
                let a = try attempt(drives, .kvm, deadline: options.kvmTimeout, options)
                if cached == nil {
                    AccelerationCache(
                        host: AccelerationCache.hostKey(), kvmBoots: true, probedAt: Date(),
                        timeoutSeconds: options.kvmTimeout
                    ).save(options.cacheFile)
                }
                return a
            } catch let e as LaunchTimeout {
                options.logger.notice(
                    "the KVM appliance did not boot within \(e.seconds < 10 ? String(format: "%.1f", e.seconds) : String(Int(e.seconds))) s (/dev/kvm exists but guests hang here); falling back to TCG (software emulation), which is slower; remembered in \(options.cacheFile)"
                )
                AccelerationCache(
                    host: AccelerationCache.hostKey(), kvmBoots: false, probedAt: Date(),
                    timeoutSeconds: options.kvmTimeout
                ).save(options.cacheFile)
                return try tcg(drives, options)
            } catch let e as RemedyError where e.code == .applianceFailed {
                // qemu can also abort at once under KVM (seen here: "failed to set MSR"); that is no better than a hang.
                options.logger.notice(
                    "\(e.message); falling back to TCG (software emulation), which is slower; remembered in \(options.cacheFile)"
                )
                AccelerationCache(
                    host: AccelerationCache.hostKey(), kvmBoots: false, probedAt: Date(),
                    timeoutSeconds: options.kvmTimeout
                ).save(options.cacheFile)
                return try tcg(drives, options)
            }
        }
    }

    /// libguestfs's launch errors carry a paragraph of generic advice; the first line is the fact.
    static func firstLine(_ message: String) -> String {
        let line = message.split(separator: "\n").first.map(String.init) ?? message
        var l = line.replacingOccurrences(of: ", see earlier error messages", with: "")
        while l.hasSuffix(".") { l.removeLast() }
        return l
    }

    static func day(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withFullDate]
        return f.string(from: d)
    }

    struct LaunchTimeout: Error { var seconds: Double }

    /// A TCG launch; its deadline is the overall launch timeout.
    private static func tcg(_ drives: [Drive], _ options: ApplianceOptions) throws -> Appliance {
        do {
            return try attempt(drives, .tcg, deadline: options.launchTimeout, options)
        } catch let e as LaunchTimeout {
            throw RemedyError(
                .applianceTimeout,
                "the appliance did not start within \(e.seconds < 10 ? String(format: "%.1f", e.seconds) : String(Int(e.seconds))) s under TCG and was stopped (raise --launch-timeout / REMEDY_LAUNCH_TIMEOUT on a slow or loaded host)"
            )
        }
    }

    private static func attempt(
        _ drives: [Drive], _ accel: Acceleration, deadline: TimeInterval, _ options: ApplianceOptions
    ) throws -> Appliance {
        let g = try Guestfs()
        let token = "remedy.launch=" + UUID().uuidString.lowercased()
        do {
            try g.setBackend("direct")
            if accel == .tcg {
                try g.setBackendSettings(["force_tcg"])
                if let launcher = TCGLauncher.path(qemu: try g.hypervisor(), mib: options.tcgCodeCacheMiB) {
                    try g.setHypervisor(launcher)
                }
            }
            if let m = options.memoryMiB { try g.setMemsize(m) }
            if options.debug {
                try g.setVerbose(true)
                try g.setTrace(true)
            }
            // A unique word on the kernel command line lets the watchdog find this appliance's qemu.
            try g.setAppend(token)
            for d in drives { try g.addDrive(d.path, format: d.format, readonly: d.readonly) }
        } catch let e as GuestfsError {
            throw RemedyError(.applianceFailed, "cannot configure the appliance: \(e)", cause: e)
        }
        let watchdog = Watchdog(token: token, seconds: deadline)
        let start = Date()
        do {
            try PhaseTimes.measure("launch") { try g.launch() }
            watchdog.cancel()
        } catch let e as GuestfsError {
            watchdog.cancel()
            g.close()
            if watchdog.fired { throw LaunchTimeout(seconds: deadline) }
            throw RemedyError(
                .applianceFailed,
                "the appliance failed to start under \(accel.rawValue == "tcg" ? "TCG" : "KVM"): \(Self.firstLine(e.message))",
                cause: e)
        }
        // From now on every call runs under a deadline; the same token finds qemu to stop it.
        g.deadline = CallWatchdog(token: token, seconds: options.callTimeout)
        return Appliance(guestfs: g, acceleration: accel, launchSeconds: Date().timeIntervalSince(start))
    }

    private var stopped = false

    /// Flushes writes and stops the appliance; an error unless qemu exited cleanly. Once stopped, does nothing.
    public func shutdown() throws {
        guard !stopped else { return }
        do {
            try guestfs.shutdown()
            stopped = true
        } catch let e as GuestfsError {
            throw RemedyError(
                .writeFailed,
                "the appliance failed to flush and stop: \(e.message); nothing was committed to the image", cause: e)
        }
    }

    public func close() { guestfs.close() }
}

/// The remembered-TCG note is said once per process, not once per launch.
enum CachedNotice {
    private static let said = Mutex(false)

    static func once() -> Bool {
        said.withLock { said in
            if said { return false }
            said = true
            return true
        }
    }
}

/// Kills the qemu process whose command line carries `token` when the
/// deadline passes, unless cancelled first.
final class Watchdog: Sendable {
    private struct State {
        var cancelled = false
        var fired = false
    }
    private let state = Mutex(State())
    private let token: String

    init(token: String, seconds: TimeInterval) {
        self.token = token
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { [self] in
            let go = state.withLock { s in
                guard !s.cancelled else { return false }
                s.fired = true
                return true
            }
            if go { Self.kill(token: token) }
        }
    }

    func cancel() { state.withLock { $0.cancelled = true } }

    var fired: Bool { state.withLock { $0.fired } }

    static func kill(token: String) {
        let me = getpid()
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return }
        for entry in entries {
            guard let pid = Int32(entry), pid != me,
                let cmd = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline")
            else { continue }
            if String(decoding: cmd.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains(token) {
                Glibc.kill(pid, SIGKILL)
            }
        }
    }
}

/// The deadline of every appliance call after the launch: a timer checks the running call, and when one has
/// taken longer than `seconds` it kills the appliance's qemu (found by its token, as the launch watchdog does).
/// The blocked call then returns an error, and so does every later call of the handle: `appliance-timeout`.
final class CallWatchdog: GuestfsDeadline, Sendable {
    private struct State {
        var seconds: TimeInterval
        var running: (function: String, since: Date)?
        var stoppedBecause: String?
    }

    private let state: Mutex<State>
    private let token: String
    /// Dispatch's timer is not Sendable; it is only cancelled after its start, under its own lock.
    private let timer: Mutex<any DispatchSourceTimer>

    init(token: String, seconds: TimeInterval) {
        self.token = token
        state = Mutex(State(seconds: seconds))
        timer = Mutex(DispatchSource.makeTimerSource(queue: .global()))
        let tick = max(0.1, min(1, seconds / 10))  // later changes of `seconds` are seen at most a second late
        timer.withLock { timer in
            timer.schedule(deadline: .now() + tick, repeating: tick)
            timer.setEventHandler { [weak self] in self?.check() }
            timer.resume()
        }
    }

    deinit { timer.withLock { $0.cancel() } }

    func begin(_ function: String) {
        state.withLock { $0.running = (function, Date()) }
    }

    func end() {
        let call = state.withLock { state -> (function: String, since: Date)? in
            defer { state.running = nil }
            return state.running
        }
        if let call, PhaseTimes.requested {
            PhaseTimes.add("call:" + call.function, Date().timeIntervalSince(call.since))
        }
    }

    var expired: String? { state.withLock { $0.stoppedBecause } }

    /// The deadline of each call (changed by tests; the timer ticks at least once a second).
    var seconds: TimeInterval {
        get { state.withLock { $0.seconds } }
        set { state.withLock { $0.seconds = newValue } }
    }

    private func check() {
        let overrun: String? = state.withLock { state in
            guard state.stoppedBecause == nil, let r = state.running, Date().timeIntervalSince(r.since) > state.seconds
            else { return nil }
            let s = state.seconds < 10 ? String(format: "%.1f", state.seconds) : String(Int(state.seconds))
            state.stoppedBecause =
                "the appliance call \(r.function) did not finish within \(s) s and the appliance was stopped "
                + "(the image may make it hang; raise REMEDY_CALL_TIMEOUT on a slow host)"
            return r.function
        }
        if overrun != nil {
            timer.withLock { $0.cancel() }
            Watchdog.kill(token: token)
        }
    }
}

extension Appliance {
    /// How long each call may take from now on (see ``ApplianceOptions/callTimeout``).
    var callTimeout: TimeInterval? {
        get { (guestfs.deadline as? CallWatchdog)?.seconds }
        set { if let v = newValue { (guestfs.deadline as? CallWatchdog)?.seconds = v } }
    }
}
