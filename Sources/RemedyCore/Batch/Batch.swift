import Foundation
import Synchronization
import SystemPackage

/// One image's outcome in a batch.
public struct BatchEntry: Sendable, Equatable, Codable {
    public enum Status: String, Sendable, Codable, CaseIterable {
        /// Nothing to change, nothing blocking.
        case compliant
        /// Changes pending (plan mode).
        case pending
        /// Changes applied, nothing blocking left (apply mode).
        case fixed
        /// Blocking findings remedy cannot fix (changes may have been applied).
        case needsManual = "needs-manual"
        /// remedy could not process the image.
        case failed
    }

    public struct ErrorInfo: Sendable, Equatable, Codable {
        public var code: String
        public var message: String
    }

    public var path: String
    public var status: Status
    public var format: String?
    public var os: OSFacts?
    public var actions: [Action]
    public var findings: [Finding]
    public var properties: [String: String]
    /// The apply run recorded in the image (apply mode).
    public var runID: String?
    public var durationSeconds: Double
    public var error: ErrorInfo?

    public var changeCount: Int { actions.reduce(0) { $0 + $1.changes.count } }
}

/// A file found in the directory that was not processed.
public struct BatchSkip: Sendable, Equatable, Codable {
    public var path: String
    public var reason: String
}

/// The machine-readable report of `remedy batch` (`--report FILE`), schema `remedy.batch/1`.
public struct BatchReport: Sendable, Equatable, Codable {
    public static let schemaID = "remedy.batch/1"
    public var schema: String = BatchReport.schemaID
    public var mode: String
    public var directory: String
    public var policy: PolicyReference
    /// `K/N` when this report covers one shard.
    public var shard: String?
    public var startedAt: Date
    public var finishedAt: Date?
    public var entries: [BatchEntry]
    public var skipped: [BatchSkip]

    public init(
        mode: String, directory: String, policy: PolicyReference, shard: String?, startedAt: Date, finishedAt: Date?,
        entries: [BatchEntry], skipped: [BatchSkip]
    ) {
        self.mode = mode
        self.directory = directory
        self.policy = policy
        self.shard = shard
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.entries = entries
        self.skipped = skipped
    }

    public func count(_ s: BatchEntry.Status) -> Int { entries.filter { $0.status == s }.count }

    /// 1 when an image failed; 2 when one has changes pending (plan) or needs
    /// manual work (blocking findings); 0 when every image is compliant or fixed.
    public var exitCode: Int32 {
        if entries.contains(where: { $0.status == .failed }) { return 1 }
        if entries.contains(where: { $0.status == .pending || $0.status == .needsManual }) { return 2 }
        return 0
    }

    /// Joins shard reports: entries by path (a later report's finished entry
    /// replaces a failed one), skips deduplicated.
    public static func merge(_ reports: [BatchReport]) throws -> BatchReport {
        guard var out = reports.first else { throw RemedyError(.invalidArgument, "no reports to merge") }
        for r in reports.dropFirst() {
            guard r.mode == out.mode, r.policy.name == out.policy.name else {
                throw RemedyError(
                    .invalidArgument,
                    "cannot merge a \(r.mode) report of policy \(r.policy.name) with a \(out.mode) report of policy \(out.policy.name)"
                )
            }
        }
        var byPath: [String: BatchEntry] = [:]
        var skips: [String: BatchSkip] = [:]
        for r in reports {
            for e in r.entries where byPath[e.path] == nil || byPath[e.path]?.status == .failed { byPath[e.path] = e }
            for s in r.skipped { skips[s.path] = s }
        }
        out.entries = byPath.values.sorted { $0.path < $1.path }
        out.skipped = skips.values.filter { byPath[$0.path] == nil }.sorted { $0.path < $1.path }
        out.shard = nil
        out.startedAt = reports.map(\.startedAt).min()!
        out.finishedAt = reports.compactMap(\.finishedAt).max()
        return out
    }
}

/// Which 1/N of the images a process takes: stable by path relative to the
/// batch directory (FNV-1a), so every member of a fleet agrees with no coordinator.
public struct Shard: Sendable, Equatable, CustomStringConvertible {
    public var index: Int
    public var count: Int

    public init(index: Int, count: Int) throws {
        guard count >= 1, (0..<count).contains(index) else {
            throw RemedyError(.invalidArgument, "shard \(index)/\(count) is out of range: K must be 0...N-1")
        }
        self.index = index
        self.count = count
    }

    /// `K/N`, or `N` with K from `JOB_COMPLETION_INDEX` (a Kubernetes Indexed Job).
    public static func parse(
        _ text: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> Shard {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]) { return try Shard(index: k, count: n) }
        if parts.count == 1, let n = Int(parts[0]) {
            guard let env = environment["JOB_COMPLETION_INDEX"], let k = Int(env) else {
                throw RemedyError(
                    .invalidArgument, "--shard \(text) needs K: give --shard K/\(n) or set JOB_COMPLETION_INDEX")
            }
            return try Shard(index: k, count: n)
        }
        throw RemedyError(
            .invalidArgument, "--shard takes K/N (0 <= K < N) or N with JOB_COMPLETION_INDEX set, not \(text)")
    }

    public func contains(_ relativePath: String) -> Bool {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in relativePath.utf8 {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01B3
        }
        return Int(h % UInt64(count)) == index
    }

    public var description: String { "\(index)/\(count)" }
}

/// Finds disk images under a directory, recursively.
public enum ImageDiscovery {
    /// Extensions of the formats remedy reads (and of the cloud's own ZVHD/ZVHD2, reported as unsupported), and OVF packages.
    public static let extensions: Set<String> = [
        "raw", "img", "qcow2", "qcow", "vmdk", "vhd", "vhdx", "vdi", "qed", "zvhd", "zvhd2", "ova", "ovf",
    ]

    /// Image paths (sorted) and the files skipped, with why. Files with an
    /// image extension are always candidates (a broken one is reported by the
    /// batch); others are candidates when their content is a disk format.
    /// VMDK extent files belong to their descriptor and the files an `.ovf`
    /// names belong to it: both are skipped. Symbolic links are never
    /// followed: they are listed as skipped.
    public static func scan(_ directory: String) throws -> (images: [String], skipped: [BatchSkip]) {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            throw RemedyError(.invalidArgument, "\(directory) is not a directory")
        }
        let root = URL(fileURLWithPath: directory)
        guard
            let walker = fm.enumerator(
                at: root, includingPropertiesForKeys: [.isRegularFileKey, .isSymbolicLinkKey],
                options: [.skipsHiddenFiles])
        else {
            throw RemedyError(.invalidArgument, "cannot read the directory \(directory)")
        }
        var candidates: [URL] = []
        var skipped: [BatchSkip] = []
        for case let url as URL in walker {
            let values = try? url.resourceValues(forKeys: [.isRegularFileKey, .isSymbolicLinkKey])
            if values?.isSymbolicLink == true {
                skipped.append(BatchSkip(path: url.path, reason: "symbolic link (not followed; give the image itself)"))
                continue
            }
            guard values?.isRegularFile == true else { continue }
            candidates.append(url)
        }
        // Files an .ovf names (its disks, its manifest) are read through it.
        var owned: Set<String> = []
        for url in candidates where url.pathExtension.lowercased() == "ovf" {
            guard let data = try? Data(contentsOf: url, options: .mappedIfSafe),
                data.count <= Int(ImageSource.maxDescriptorBytes)
            else { continue }
            let text = String(decoding: data, as: UTF8.self)
            let dir = url.deletingLastPathComponent()
            for m in text.matches(of: /href\s*=\s*"([^"]+)"/) where TarIndex.isPlainName(String(m.1)) {
                owned.insert(dir.appendingPathComponent(String(m.1)).path)
            }
            owned.insert(url.deletingPathExtension().appendingPathExtension("mf").path)
        }
        var images: [String] = []
        for url in candidates {
            let path = url.path
            let name = url.lastPathComponent.lowercased()
            let ext = url.pathExtension.lowercased()
            if owned.contains(path) {
                skipped.append(BatchSkip(path: path, reason: "part of an OVF package (read through its .ovf)"))
            } else if ext == "vmdk",
                name.range(of: #"-(flat|s\d{3}|f\d{3}|delta)\.vmdk$"#, options: .regularExpression) != nil
            {
                skipped.append(BatchSkip(path: path, reason: "VMDK extent (read through its descriptor)"))
            } else if extensions.contains(ext) {
                images.append(path)
            } else if ext == "mf" {
                skipped.append(BatchSkip(path: path, reason: "not a disk image"))
            } else if (try? DiskFormat.detect(path: path)) != nil {
                images.append(path)
            } else {
                skipped.append(BatchSkip(path: path, reason: "not a disk image"))
            }
        }
        return (images.sorted(), skipped.sorted { $0.path < $1.path })
    }

    /// `path` relative to `directory` (the shard key).
    public static func relative(_ path: String, to directory: String) -> String {
        let base = URL(fileURLWithPath: directory).standardizedFileURL.path
        let full = URL(fileURLWithPath: path).standardizedFileURL.path
        return full.hasPrefix(base + "/") ? String(full.dropFirst(base.count + 1)) : full
    }
}

/// Runs plan or apply over many images: `jobs` appliances at a time, each
/// holding up to `perAppliance` images (launch time dominates small jobs, so
/// images share appliances). One bad image never stops the batch: it is
/// reported and the rest go on; a launch failure is retried image by image.
public final class BatchRunner: Sendable {
    public enum Mode: String, Sendable { case plan, apply }

    public struct Options: Sendable {
        public var mode: Mode
        public var jobs: Int
        public var perAppliance: Int
        public var appliance: ApplianceOptions
        /// virtio-win and payload files, the same for every image.
        public var inputs: PayloadInputs
        /// Apply mode: where each image's result goes (`--output-dir`), nil to change the images in place.
        public var output: (@Sendable (String) -> OutputTarget?)?
        public init(
            mode: Mode, jobs: Int, perAppliance: Int, appliance: ApplianceOptions,
            inputs: PayloadInputs = PayloadInputs()
        ) {
            self.mode = mode
            self.jobs = jobs
            self.perAppliance = perAppliance
            self.appliance = appliance
            self.inputs = inputs
        }
    }

    public let policy: Policy
    public let options: Options
    /// The work left and the entries so far, shared by the appliances' threads.
    private struct State {
        var cancelled = false
        var queue: [[String]] = []
        var results: [BatchEntry] = []
    }
    private let state = Mutex(State())
    /// Held while a caller's callback runs, so that callbacks run one at a time.
    private let callbacks = Mutex(())

    public init(policy: Policy, options: Options) {
        self.policy = policy
        self.options = options
    }

    /// Stops starting new appliances; images in a running appliance finish.
    public func cancel() { state.withLock { $0.cancelled = true } }
    public var isCancelled: Bool { state.withLock { $0.cancelled } }

    /// Jobs that fit this machine: one per core, and no more than memory allows
    /// (an appliance takes about its memory size plus qemu's overhead).
    public static func defaultJobs(applianceMiB: Int = 1280) -> Int {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        var availableMiB = Int(ProcessInfo.processInfo.physicalMemory / 1_048_576)
        if let meminfo = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
            let line = meminfo.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
            let kb = Int(line.split(separator: " ").dropFirst().first ?? "")
        {
            availableMiB = kb / 1024
        }
        let byMemory = max(1, (availableMiB - 512) / (applianceMiB + 256))
        return max(1, min(cores, byMemory))
    }

    /// Processes `images`; returns their entries in completion order. `onStart` is called as an image starts and
    /// `onEntry` as one finishes, from the appliances' threads, one call at a time.
    public func run(
        _ images: [String], onStart: @escaping @Sendable (String) -> Void = { _ in },
        onEntry: @escaping @Sendable (BatchEntry) -> Void = { _ in }
    ) -> [BatchEntry] {
        guard !images.isEmpty else { return [] }
        let jobs = max(1, min(options.jobs, images.count))
        let per = max(1, options.perAppliance)
        // Deal images round-robin into groups so each appliance gets a similar share.
        let groupCount = max(jobs, (images.count + per - 1) / per)
        var groups = [[String]](repeating: [], count: groupCount)
        for (i, img) in images.enumerated() { groups[i % groupCount].append(img) }
        state.withLock {
            $0.queue = groups.filter { !$0.isEmpty }
            $0.results = []
        }
        let started: @Sendable (String) -> Void = { path in self.callbacks.withLock { _ in onStart(path) } }
        DispatchQueue.concurrentPerform(iterations: jobs) { _ in
            while let group = self.nextGroup() {
                self.process(group, onStart: started) { entry in
                    self.state.withLock { $0.results.append(entry) }
                    self.callbacks.withLock { _ in onEntry(entry) }
                }
            }
        }
        return state.withLock { $0.results }
    }

    private func nextGroup() -> [String]? {
        state.withLock {
            guard !$0.cancelled, !$0.queue.isEmpty else { return nil }
            return $0.queue.removeFirst()
        }
    }

    /// One appliance for a group of images; on a launch failure each image
    /// gets its own try. An image's duration is its share of the launch and
    /// inspection plus its own planning (and applying).
    func process(_ group: [String], onStart: (String) -> Void = { _ in }, report: (BatchEntry) -> Void) {
        let start = Date()
        for p in group { onStart(p) }
        let (appliance, sessions) = ImageSession.openMany(
            group, writable: options.mode == .apply, options: options.appliance, inputs: options.inputs,
            output: options.output)
        if appliance == nil, group.count > 1,
            sessions.contains(where: { if case .failure(let e) = $0 { Self.isLaunchFailure(e) } else { false } })
        {
            for p in group { process([p], report: report) }  // already started
            return
        }
        let share = Date().timeIntervalSince(start) / Double(group.count)
        var pending: [(session: ImageSession, entry: BatchEntry)] = []
        // Images a shared appliance could not serve because a call (another image's, perhaps) overran its deadline
        // and the appliance was stopped: each gets an appliance of its own afterwards.
        var retry: [String] = []
        for (path, result) in zip(group, sessions) {
            let t0 = Date()
            if group.count > 1, appliance?.guestfs.deadline?.expired != nil, case .success(let session) = result {
                session.close()
                retry.append(path)
                continue
            }
            switch result {
            case .failure(let e) where group.count > 1 && e.code == .applianceTimeout && appliance != nil:
                retry.append(path)
            case .failure(let e):
                var entry = Self.failed(path, e)
                entry.durationSeconds = share
                report(entry)
            case .success(let session):
                do {
                    let plan = try session.plan(policy: policy)
                    var entry = Self.entry(path, session: session, plan: plan)
                    if options.mode == .apply && plan.hasChanges {
                        entry.runID = try Applier.apply(plan, in: session).runID
                    }
                    entry.status = Self.status(plan, mode: options.mode)
                    entry.durationSeconds = share + Date().timeIntervalSince(t0)
                    pending.append((session, entry))
                } catch {
                    let e = RemedyError.wrap(error, image: path)
                    if group.count > 1, e.code == .applianceTimeout {
                        session.close()
                        retry.append(path)
                        continue
                    }
                    var entry = Self.failed(path, e)
                    entry.durationSeconds = share + Date().timeIntervalSince(t0)
                    report(entry)
                    session.close()
                }
            }
        }
        // A shared appliance is flushed and stopped before any of its images counts as done.
        var flushError: RemedyError?
        if let appliance {
            do { try appliance.shutdown() } catch { flushError = RemedyError.wrap(error, image: "") }
            appliance.close()
        }
        // Then each image's overlay is committed (proven) into it, or converted into its output.
        for (session, var entry) in pending {
            if let flushError, entry.runID != nil || session.overlay?.output != nil {
                entry.status = .failed
                entry.error = .init(
                    code: flushError.code.rawValue,
                    message: "the appliance failed to flush and stop after writing: \(flushError.message)")
            } else if flushError == nil {
                do {
                    try session.complete()
                } catch {
                    let e = RemedyError.wrap(error, image: entry.path)
                    entry.status = .failed
                    entry.error = .init(code: e.code.rawValue, message: e.message)
                }
            }
            session.close()
            report(entry)
        }
        for p in retry { process([p], report: report) }
    }

    /// `--output-dir`: each image to the same relative path under `out` (with the extension of `format` when one
    /// is given; qcow sources become qcow2), the directories made as needed.
    public static func outputs(
        under out: String, from directory: String, format: DiskFormat?
    ) -> @Sendable (String) -> OutputTarget? {
        { path in
            var rel = ImageDiscovery.relative(path, to: directory)
            let source = (try? DiskFormat.detect(path: path)) ?? .raw
            var f = format ?? OutputTarget.format(forExtension: path) ?? source
            if f == .qcow { f = .qcow2 }
            if format != nil || OutputTarget.format(forExtension: path) == nil {
                rel = FilePath(rel).removingExtension + "." + (f == .raw ? "raw" : f.rawValue)
            }
            let target = out + "/" + rel
            try? FileManager.default.createDirectory(
                atPath: FilePath(target).removingLastComponent().string, withIntermediateDirectories: true)
            return OutputTarget(path: target, format: f)
        }
    }

    static func isLaunchFailure(_ e: RemedyError) -> Bool { e.code == .applianceFailed || e.code == .applianceTimeout }

    static func status(_ plan: Plan, mode: Mode) -> BatchEntry.Status {
        if !plan.blockers.isEmpty { return .needsManual }
        if !plan.hasChanges { return .compliant }
        return mode == .apply ? .fixed : .pending
    }

    static func entry(_ path: String, session: ImageSession, plan: Plan) -> BatchEntry {
        BatchEntry(
            path: path, status: .compliant, format: session.format.rawValue, os: plan.os, actions: plan.actions,
            findings: plan.findings, properties: plan.properties, runID: nil, durationSeconds: 0, error: nil)
    }

    static func failed(_ path: String, _ e: RemedyError) -> BatchEntry {
        BatchEntry(
            path: path, status: .failed, format: try? DiskFormat.detect(path: path).rawValue, os: nil, actions: [],
            findings: [],
            properties: [:], runID: nil, durationSeconds: 0, error: .init(code: e.code.rawValue, message: e.message))
    }
}
