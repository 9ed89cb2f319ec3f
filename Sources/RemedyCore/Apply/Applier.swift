import Foundation
import Guestfs
import Hivex
import RegistryFormat
import SystemPackage

public enum RemedyVersion {
    public static let current = "0.1.0-dev"
}

/// Executes a plan. Each hive is edited in a local copy, committed to a new local file, re-opened and verified; then
/// the pages in which it differs from the hive in the image are written over that hive in place and read back, and the
/// original's bytes of those pages are kept in `C:\Windows\remedy\backup\<run>\` (``HivePatch``). All of it goes to
/// the session's overlay, never to the image: the image changes only when the overlay is committed after a clean
/// appliance exit (see ``Overlay``), so a failure or a crash before that leaves the image as it was.
public enum Applier {
    /// Guest directory where remedy keeps backups and records.
    public static func stateDirectory(systemRoot: String) -> String { systemRoot + "/remedy" }

    public static func apply(_ plan: Plan, in session: ImageSession, now: Date = Date()) throws -> ApplyReport {
        precondition(session.writable, "apply needs a session opened writable")
        let runID = Self.runID(now)
        var report = ApplyReport(
            runID: runID, remedyVersion: RemedyVersion.current, startedAt: now, plan: plan,
            backups: [:], record: nil, acceleration: session.appliance.acceleration.rawValue)
        let changes = plan.changes
        let fileChanges = plan.fileChanges.filter { $0.volume == nil }
        let espChanges = plan.fileChanges.filter { $0.volume != nil }
        guard !changes.isEmpty || !fileChanges.isEmpty || !espChanges.isEmpty else { return report }
        // A blocker about what was given to inject (a wrong-architecture installer, a required virtio-win left out) is an
        // input the run cannot use; other blockers are for the cloud's registration and do not stop the edit.
        if let b = plan.blockers.first(where: { FindingID.aboutInputs.contains($0.id) }) {
            throw RemedyError(.invalidArgument, image: session.imagePath, "\(b.message); nothing was written")
        }
        let image = session.imagePath
        if plan.findings.contains(where: { $0.id == .hibernated }) {
            throw RemedyError(
                .hibernated, image: image,
                "Windows was hibernated or shut down with Fast Startup: its volume cannot be edited safely; "
                    + "boot the VM, shut it down fully (shutdown /s /t 0) or turn hibernation off (powercfg /h off), and export it again. Nothing was written"
            )
        }

        // 1. Every hive edited and verified locally, every file's content at hand and checked, before anything is written to the image.
        let prepared = try prepare(
            changes, localHives: try session.localHives(Set(changes.map(\.hive)).intersection([.system, .software])),
            integrity: session.integrity, image: image)
        let localFiles = try stage(fileChanges, session: session)

        // 2. Into the image: back up, upload beside, check, rename over.
        let g = session.g
        let state = stateDirectory(systemRoot: session.os.systemRoot)
        let backupDir = "\(state)/backup/\(runID)"
        var replaced: [HiveName] = []
        do {
            try session.remountWritable()
            // ntfs-3g may fall back to a read-only mount on a volume it finds unsafe, without failing the mount.
            let probe = "\(session.os.systemRoot)/.remedy-write-test"
            do {
                try g.touch(probe)
                try g.rm(probe)
            } catch let e as GuestfsError {
                throw RemedyError(
                    .unsafeImage, image: image,
                    "the Windows volume cannot be written (\(e.message)): it was probably not shut down cleanly "
                        + "(hibernation, Fast Startup or a crash); boot it and shut it down fully, then try again. Nothing was written",
                    cause: e)
            }
            try g.mkdirP(backupDir)
            // Files first: each checked against the plan, the original kept, the new one uploaded beside and renamed over.
            let (newDirectories, fileSecurity) = try writeFiles(
                fileChanges, localFiles, session: session, backupDir: backupDir, runID: runID, report: &report)
            try writeESP(espChanges, session: session, backupDir: backupDir, report: &report)
            try Fault.point("after-file-writes", image: image)
            // Each hive is written in place, in the pages that changed only (the cells edited and the bins hivex
            // appended), and the original's bytes of those pages are its backup (``HivePatch``): I/O in proportion to
            // the change, not to the hive (moving a 12 MB SYSTEM hive whole cost about 6 s under TCG). The hive keeps
            // its file, so its security descriptor too. Every write goes to the overlay: the image gets all or none.
            var written: [(hive: HiveName, target: String, new: String, ranges: [Range<Int>])] = []
            for (hive, newFile) in prepared {
                let target = session.hivePaths[hive]!
                let backup = "\(backupDir)/\(hive.rawValue)"
                report.backups[hive.rawValue] = backup
                // A recovered hive's logs are stale once the recovered hive is in place: they are kept in the backup.
                if let info = session.integrity[hive], info.dirty {
                    for log in info.logs { report.movedLogs[log] = "\(backupDir)/\(GuestPath.name(log))" }
                }
                let patch = try PhaseTimes.measure("hive-diff") {
                    HivePatch(
                        original: try Self.readLocal(Self.onDisk(hive, session), image: image),
                        patched: try Self.readLocal(newFile, image: image))
                }
                let local = newFile + ".patch"
                guard FileManager.default.createFile(atPath: local, contents: Data(try patch.encoded())) else {
                    throw RemedyError(.hostFailed, image: image, "cannot write \(local)")
                }
                try g.upload(local, to: backup)
                written.append((hive, target, newFile, patch.ranges))
            }
            // The record says what this run did before the first hive is written (rollback finds it even if the
            // final record is never written); the final record replaces it.
            let recordPath = "\(state)/log/\(runID).json"
            report.record = recordPath
            try g.mkdirP("\(state)/log")
            let local = session.workDirectory + "/record.json"
            if !written.isEmpty {
                try RemedyJSON.encoder().encode(report).write(to: URL(fileURLWithPath: local))
                try g.upload(local, to: recordPath)
            }
            for w in written {
                let new = try Self.readLocal(w.new, image: image)
                try InPlaceWrite.write(g, w.target, new: new, ranges: w.ranges)
                // The pages written, read back (the whole hive is checked after the caches are dropped, below).
                var holds = try InPlaceWrite.holds(g, w.target, new, in: w.ranges)
                if try Fault.point("hive-upload", image: image) { holds = false }
                guard holds else {
                    throw RemedyError(
                        .verifyFailed, image: image,
                        "the \(w.hive.rawValue) hive read back from the image differs from what was written")
                }
                replaced.append(w.hive)
                for log in session.integrity[w.hive]?.dirty == true ? session.integrity[w.hive]!.logs : [] {
                    try g.rename(log, report.movedLogs[log]!)
                }
                try Fault.point("after-hive-write", image: image)
            }
            try Fault.point("before-record", image: image)
            try Fault.point("record", image: image)
            try RemedyJSON.encoder().encode(report).write(to: URL(fileURLWithPath: local))
            try g.upload(local, to: recordPath)
            // The files' security descriptors, and remedy's folder (backups, records, staged payloads) for SYSTEM and
            // Administrators only: one appliance call (a `debug sh` costs about a second under TCG).
            try FileSecurity.set(g, fileSecurity, privateDirectory: state, image: image)
            try g.sync()  // the writes flushed to the disk, as before any unmount; then the proof reads them back
            try PhaseTimes.measure("proof-readback") {
                try proveWritten(
                    fileTargets(report, fileChanges, session: session),
                    hives: written.map { ($0.target, $0.new, $0.ranges) }, session: session,
                    newDirectories: newDirectories.filter { !(backupDir + "/").hasPrefix($0 + "/") })
            }
            // finishWrites (below) syncs and unmounts: the proof only read.
        } catch let e as GuestfsError {
            throw RemedyError(
                .writeFailed, image: image,
                "writing to the image failed: \(e.message); " + notWritten(replaced, report), cause: e)
        } catch let e as RemedyError {
            throw RemedyError(
                e.code, image: image,
                e.message + (e.message.hasSuffix("nothing was written") ? "" : "; " + notWritten(replaced, report)),
                cause: e.cause)
        }
        // The appliance stops (its own, here; a shared one after every image of the batch), then the commit:
        // its errors say what state the image is in.
        do {
            try session.finishWrites()
        } catch let e as GuestfsError {
            throw RemedyError(
                .writeFailed, image: image,
                "flushing the appliance failed: \(e.message); nothing was written to the image", cause: e)
        }
        return report
    }

    /// The local copy of the hive as it is on the image's disk: the downloaded file, or, for a hive recovered from its
    /// logs, the primary as it was before the replay.
    static func onDisk(_ hive: HiveName, _ session: ImageSession) -> String {
        let local = session.localHives[hive]!
        let primary = local + ".orig"
        return session.integrity[hive]?.dirty == true && FileManager.default.fileExists(atPath: primary)
            ? primary : local
    }

    static func readLocal(_ path: String, image: String) throws -> [UInt8] {
        do {
            return try HostFile.read(path, followLinks: false, limit: RegistryLimits.maxHiveFile)
        } catch {
            throw RemedyError(.hostFailed, image: image, "cannot read \(path): \(error)", cause: error)
        }
    }

    /// What a failed apply left: every write went to the overlay, which is dropped; the image is as it was.
    static func notWritten(_ replaced: [HiveName], _ report: ApplyReport) -> String {
        let done =
            replaced.map(\.rawValue)
            + (report.injected.isEmpty && report.fileBackups.isEmpty
                ? [] : ["\(report.injected.count + report.fileBackups.count) file(s)"])
        return "nothing was written to the image"
            + (done.isEmpty ? "" : " (\(done.joined(separator: ", ")) had been written to its overlay, now discarded)")
    }

    /// The guest path, planned SHA-256 and size of every file this run wrote.
    static func fileTargets(
        _ report: ApplyReport, _ changes: [FileChange], session: ImageSession
    ) -> [(String, String, Int64)] {
        var out: [(String, String, Int64)] = []
        for c in changes where c.op == .write {
            if let path = session.guestDirectories.resolveExisting(c.path) { out.append((path, c.sha256, c.size)) }
        }
        return out
    }

    /// Proof that the writes are on the disk, not only in the appliance's page cache: the caller has synced, the
    /// guest's caches are dropped, and every file written is read again (from qemu, i.e. the overlay file) and its
    /// SHA-256 compared with what was planned; every hive's size and written pages are read again and compared. The
    /// commit then proves the image holds the overlay.
    ///
    /// Every read is an appliance call, and calls are what cost under TCG: `checksum` of one file about 0.1 s (it
    /// starts sha256sum in the appliance), `checksums_out` over a folder about 0.5 s whatever it holds (find, xargs
    /// and sha256sum), `pread` of a file up to ``smallReadLimit`` 0.02-0.1 s (guestfsd reads it itself, no program
    /// starts; the host hashes the bytes; 0.09 s a file after the cache drop in a busy batch). So a folder this run created (`newDirectories`: nothing but this run's files is below it),
    /// taken at its top, is read in one call when it holds at least ``folderReadMinimum`` of the files
    /// (`Drivers\VirtIO`, remedy's `firstboot`); every other file (a driver in `System32\drivers`, an INF, a
    /// DriverStore copy) is read whole with `pread` when it is small, and checksummed alone otherwise (a hive); no
    /// call reads a file this run did not write. A file whose read does not match is checksummed alone again, and
    /// that checksum is the verdict.
    static func proveWritten(
        _ targets: [(path: String, sha: String, size: Int64)],
        hives: [(path: String, local: String, ranges: [Range<Int>])] = [], session: ImageSession,
        newDirectories: Set<String> = []
    ) throws {
        let g = session.g  // the caller has synced: drop the caches, then read from the disk
        try PhaseTimes.measure("readback-drop-caches") { try g.dropCaches(3) }
        // A hive: its size, and the pages written (the others were read from this file in this session and not
        // written since).
        for h in hives {
            let new = try Self.readLocal(h.local, image: session.imagePath)
            var holds = try PhaseTimes.measure("readback-hive") { try InPlaceWrite.holds(g, h.path, new, in: h.ranges) }
            if try Fault.point("read-back", image: session.imagePath) { holds = false }
            guard holds else {
                throw RemedyError(
                    .verifyFailed, image: session.imagePath,
                    "\(GuestPath.windows(h.path)) read back from the disk after a flush is not what was written")
            }
        }
        var read: [String: String] = [:]
        for (top, paths) in Self.foldersToRead(targets.map(\.path), newDirectories: newDirectories) {
            let sums = session.workDirectory + "/proof.sha256"
            try? FileManager.default.removeItem(atPath: sums)
            try PhaseTimes.measure("readback-folders") { try g.checksumsOut("sha256", top, to: sums) }
            let listed = Self.parseChecksums((try? String(contentsOfFile: sums, encoding: .utf8)) ?? "")
            for path in paths { read[path] = listed[String(path.dropFirst(top.count + 1))] }
        }
        for t in targets {
            var matched = read[t.path].flatMap { $0 == t.sha ? $0 : nil }
            if matched == nil, t.size <= Self.smallReadLimit {
                let bytes = try PhaseTimes.measure("readback-small") {
                    try g.pread(t.path, count: Int(t.size) + 1, offset: 0)
                }
                if bytes.count == t.size, SHA256Hex.of(bytes) == t.sha { matched = t.sha }
            }
            var got = try matched ?? PhaseTimes.measure("readback-checksum") { try g.checksum("sha256", t.path) }
            if try Fault.point("read-back", image: session.imagePath) { got = String(repeating: "0", count: 64) }
            guard got == t.sha else {
                throw RemedyError(
                    .verifyFailed, image: session.imagePath,
                    "\(GuestPath.windows(t.path)) read back from the disk after a flush is not what was written (SHA-256 \(got), expected \(t.sha))"
                )
            }
        }
    }

    /// Below this many written files, a new folder's files are read one by one (`pread`, 0.02-0.1 s each when
    /// small) rather than in one `checksums_out` call (0.5-0.8 s).
    static let folderReadMinimum = 16

    /// Files up to this size are read back whole with one `pread` (the protocol carries 2 MiB and more in a reply).
    static let smallReadLimit: Int64 = 2 * 1024 * 1024 - 4096

    /// The new folders to read in one call each: the topmost of `newDirectories` above each path, with the paths
    /// below it, where there are at least ``folderReadMinimum`` of them.
    static func foldersToRead(_ paths: [String], newDirectories: Set<String>) -> [(folder: String, paths: [String])] {
        var below: [String: [String]] = [:]
        for path in paths {
            var top: String?
            var dir = GuestPath.parent(path)
            while dir.count > 1, newDirectories.contains(dir) {
                top = dir
                dir = GuestPath.parent(dir)
            }
            if let top { below[top, default: []].append(path) }
        }
        return below.filter { $0.value.count >= folderReadMinimum }.sorted { $0.key < $1.key }.map {
            ($0.key, $0.value)
        }
    }

    /// `checksums_out`'s `sha256sum` lines (`<64 hex>  ./<relative path>`) as relative path -> SHA-256; escaped lines
    /// (sha256sum starts the line of a name with a backslash or a newline with `\\`) are left out.
    static func parseChecksums(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let bytes = Array(line.utf8)
            guard bytes.count > 68, bytes[64] == UInt8(ascii: " "), bytes[65] == UInt8(ascii: " "),
                bytes[66] == UInt8(ascii: "."), bytes[67] == UInt8(ascii: "/")
            else { continue }
            let hex = bytes[0..<64]
            guard
                hex.allSatisfy({
                    (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                        || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0)
                })
            else { continue }
            out[String(decoding: bytes[68...], as: UTF8.self)] = String(decoding: hex, as: UTF8.self)
        }
        return out
    }

    /// Prefix of a plan `source` that is another file on the EFI system partition.
    static let espSource = "image:esp:"

    /// File changes on the EFI system partition (`volume: esp`, a copy of another file of the ESP): each target and
    /// source checked against the plan, the files replaced backed up under `<backupDir>/esp` on the Windows volume
    /// (recorded as `esp:<path>`), then each copy made beside its target, checked and renamed over it. Leaves the
    /// Windows filesystem mounted read-write.
    static func writeESP(
        _ changes: [FileChange], session: ImageSession, backupDir: String, report: inout ApplyReport
    ) throws {
        guard !changes.isEmpty else { return }
        let g = session.g
        let image = session.imagePath
        guard let esp = session.volume.esp else {
            throw RemedyError(
                .planMismatch, image: image,
                "the plan writes to the EFI system partition, which this image does not have (the image changed since it was planned)"
            )
        }
        // 1. Check (read-only) and copy out what will be replaced.
        try session.mountESP(esp.device, writable: false)
        var sources: [String] = []
        var targets: [String] = []
        var kept: [Int: String] = [:]
        for (i, c) in changes.enumerated() {
            guard c.volume == "esp", c.op == .write, let source = c.source, source.hasPrefix(espSource) else {
                throw RemedyError(
                    .planMismatch, image: image,
                    "the plan has a file change on volume \(c.volume ?? "?") remedy cannot make (\(c.path)); nothing was written there"
                )
            }
            let from = String(source.dropFirst(espSource.count))
            guard let real = try? g.caseSensitivePath(from), (try? g.isFile(real)) == true,
                try g.checksum("sha256", real) == c.sha256
            else {
                throw RemedyError(
                    .planMismatch, image: image,
                    "the EFI system partition's \(from) is not the file the plan copies (SHA-256 \(c.sha256)); "
                        + "the image changed since it was planned")
            }
            sources.append(real)
            let existing = (try? g.caseSensitivePath(c.path)).flatMap { (try? g.isFile($0)) == true ? $0 : nil }
            let now = try existing.map { try g.checksum("sha256", $0) }
            guard now == c.before else {
                throw RemedyError(
                    .planMismatch, image: image,
                    "the EFI system partition's \(c.path) is \(now.map { "SHA-256 \($0)" } ?? "absent"), the plan expected "
                        + "\(c.before.map { "SHA-256 \($0)" } ?? "absent") (the image changed since it was planned)")
            }
            targets.append(existing ?? c.path)
            if let existing {
                let local = session.workDirectory + "/esp-backup-\(i)"
                try g.download(existing, to: local)
                kept[i] = local
            }
        }
        // 2. Backups onto the Windows volume, in the run's backup directory.
        try session.remountWritable()
        for (i, local) in kept.sorted(by: { $0.key < $1.key }) {
            let backup = "\(backupDir)/esp" + targets[i]
            try g.mkdirP(GuestPath.parent(backup))
            try g.upload(local, to: backup)
            report.fileBackups["esp:" + targets[i]] = backup
        }
        // 3. The copies, on the ESP.
        try session.mountESP(esp.device, writable: true)
        for (i, c) in changes.enumerated() {
            let target = targets[i]
            try g.mkdirP(GuestPath.parent(target))
            let temp = target + ".remedy-new"
            try g.cp(sources[i], temp)
            guard try g.checksum("sha256", temp) == c.sha256 else {
                try? g.rmF(temp)
                throw RemedyError(
                    .verifyFailed, image: image,
                    "the copy of \(sources[i]) on the EFI system partition differs from it; \(target) was not replaced")
            }
            try g.rename(temp, target)
            if c.before == nil { report.injected.append("esp:" + target) }
        }
        try g.sync()
        try session.remountWritable()
    }

    /// Puts back files of the EFI system partition (keys `esp:<path>`, backups on the Windows volume) and removes the
    /// ones remedy added. Starts and ends with the Windows filesystem mounted read-write.
    static func restoreESP(_ backups: [String: String], remove: [String], session: ImageSession) throws {
        guard !backups.isEmpty || !remove.isEmpty else { return }
        guard let esp = session.volume.esp else {
            throw RemedyError(
                .planMismatch, image: session.imagePath,
                "the record names files of an EFI system partition this image does not have")
        }
        let g = session.g
        try session.remountWritable()
        var locals: [(path: String, local: String)] = []
        for (n, (key, backup)) in backups.sorted(by: { $0.key < $1.key }).enumerated() {
            let local = session.workDirectory + "/esp-restore-\(n)"
            try g.download(backup, to: local)
            locals.append((String(key.dropFirst(4)), local))
        }
        try session.mountESP(esp.device, writable: true)
        for (path, local) in locals {
            let temp = path + ".remedy-restore"
            try g.upload(local, to: temp)
            try g.rename(temp, path)
        }
        for key in remove where backups[key] == nil { try g.rmF(String(key.dropFirst(4))) }
        try g.sync()
        try session.remountWritable()
    }

    /// The local bytes of every file change, checked against the planned checksum.
    static func stage(_ changes: [FileChange], session: ImageSession) throws -> [String] {
        var out: [String] = []
        let dir = session.workDirectory + "/files"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (i, c) in changes.enumerated() {
            guard c.op == .write else {
                out.append("")
                continue
            }
            let local: String
            if let bytes = c.contentBytes {
                local = "\(dir)/\(i)"
                guard FileManager.default.createFile(atPath: local, contents: Data(bytes)) else {
                    throw RemedyError(.writeFailed, image: session.imagePath, "cannot write \(local)")
                }
            } else if let source = c.source, let path = session.localSource(source) {
                local = path
            } else {
                throw RemedyError(
                    .planMismatch, image: session.imagePath,
                    "\(c.path): the plan names source \(c.source ?? "none"), which this run was not given")
            }
            let (sha, _) = try SHA256Hex.ofFile(local)
            guard sha == c.sha256 else {
                throw RemedyError(
                    .planMismatch, image: session.imagePath,
                    "\(c.source ?? c.path) changed since it was planned (SHA-256 \(sha), planned \(c.sha256)); nothing was written"
                )
            }
            out.append(local)
        }
        return out
    }

    /// Writes planned files: every `before` is checked first (nothing is written when one differs). The new files
    /// go into the image in one tar stream, into a staging directory on the same volume, and their checksums come
    /// back in one call and are compared with the plan; then each is renamed over its target (replaced files are
    /// kept in the backup first). A rename is atomic: a target holds the old file or the new one.
    /// Returns the folders it created.
    @discardableResult
    static func writeFiles(
        _ changes: [FileChange], _ locals: [String], session: ImageSession, backupDir: String, runID: String,
        report: inout ApplyReport
    ) throws -> (created: Set<String>, security: [FileSecurity.Assignment]) {
        guard !changes.isEmpty else { return ([], []) }
        let g = session.g
        var targets: [String] = []
        for c in changes {
            let existing = session.guestDirectories.resolveExisting(c.path)
            let now = try existing.flatMap { (try g.isFile($0)) ? try g.checksum("sha256", $0) : nil }
            guard now == c.before else {
                throw RemedyError(
                    .planMismatch, image: session.imagePath,
                    "\(GuestPath.windows(c.path)) is \(now.map { "SHA-256 \($0)" } ?? "absent"), "
                        + "the plan expected \(c.before.map { "SHA-256 \($0)" } ?? "absent") (the image changed since it was planned); nothing was written"
                )
            }
            targets.append(existing ?? session.guestDirectories.resolveForWriting(c.path))
        }
        // Stage: file N of the plan is `N` in the tar and in the staging directory.
        let bundle = session.workDirectory + "/upload"
        try? FileManager.default.removeItem(atPath: bundle)
        try FileManager.default.createDirectory(atPath: bundle, withIntermediateDirectories: true)
        var staged: [Int] = []
        var created: [String] = []
        var security: [FileSecurity.Assignment] = []
        for (i, c) in changes.enumerated() where c.op == .write {
            try FileManager.default.createSymbolicLink(atPath: "\(bundle)/\(i)", withDestinationPath: locals[i])
            staged.append(i)
        }
        let staging = Applier.stateDirectory(systemRoot: session.os.systemRoot) + "/staging-" + runID
        defer { try? g.rmRf(staging) }
        if !staged.isEmpty {
            let tar = session.workDirectory + "/upload.tar"
            try HostTool.run(
                "/usr/bin/tar", ["-c", "-h", "-f", tar, "-C", bundle] + staged.map(String.init),
                image: session.imagePath)
            try g.mkdirP(staging)
            try g.tarIn(tar, to: staging)
            let sums = session.workDirectory + "/upload.sha256"
            try g.checksumsOut("sha256", staging, to: sums)
            let got = Applier.parseChecksums((try? String(contentsOfFile: sums, encoding: .utf8)) ?? "")
            for i in staged where got[String(i)] != changes[i].sha256 {
                throw RemedyError(
                    .verifyFailed, image: session.imagePath,
                    "\(GuestPath.windows(targets[i])) read back from the image differs from what was uploaded; no file was replaced"
                )
            }
            // Each new file gets a security descriptor (never Everyone: Full Control, which ntfs-3g gives a new file and
            // does not replace by inheritance): a replaced file keeps the original's, a new one, and each folder created
            // for one, get remedy's for the place. The caller sets them all in one appliance call, once the files are
            // in place (all of it in the overlay, which reaches the image whole or not at all).
            for i in staged {
                let original = changes[i].before == nil ? nil : try? g.lgetxattr(targets[i], FileSecurity.attribute)
                security.append(
                    FileSecurity.keeping(
                        targets[i], original: original, as: targets[i], directory: false, os: session.os))
            }
            for i in staged {
                let parent = GuestPath.parent(targets[i])
                guard session.guestDirectories.listing(parent) == nil, !created.contains(parent) else { continue }
                var dir = parent
                while !dir.isEmpty, dir != "/", session.guestDirectories.listing(dir) == nil, !created.contains(dir) {
                    created.append(dir)
                    dir = GuestPath.parent(dir)
                }
                try g.mkdirP(parent)
            }
            security += created.map { FileSecurity.assignment($0, directory: true, os: session.os) }
        }
        for (i, c) in changes.enumerated() {
            let target = targets[i]
            if c.before != nil {
                let backup = "\(backupDir)/files" + target
                try g.mkdirP(GuestPath.parent(backup))
                try g.cp(target, backup)
                report.fileBackups[target] = backup
            }
            switch c.op {
            case .delete:
                try g.rm(target)
            case .write:
                try g.rename("\(staging)/\(i)", target)  // its folder was created above
                session.guestDirectories.noteCreated(target)
                if c.before == nil { report.injected.append(target) }
            }
        }
        return (Set(created), security)
    }

    /// Edits local copies of the hives: for each hive the plan touches, a new
    /// file beside the original (`HIVE.remedy-new`), edited and verified.
    public static func prepare(
        _ changes: [Change], localHives: [HiveName: String], integrity: [HiveName: HiveIntegrity] = [:],
        image: String
    ) throws -> [(hive: HiveName, newFile: String)] {
        var prepared: [(hive: HiveName, newFile: String)] = []
        for hive in HiveName.allCases {
            let mine = changes.filter { $0.hive == hive }
            guard !mine.isEmpty else { continue }
            guard let original = localHives[hive] else {
                throw RemedyError(
                    .hiveUnreadable, image: image, "the plan edits the \(hive.rawValue) hive, which was not read")
            }
            let newFile = original + ".remedy-new"
            try edit(
                original, writingTo: newFile, mine, hive: hive, image: image,
                aboveSequence: integrity[hive]?.highestLogSequence ?? 0)
            try verify(original: original, edited: newFile, mine, hive: hive, image: image)
            prepared.append((hive, newFile))
        }
        return prepared
    }

    static func runID(_ date: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return f.string(from: date) + "-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
    }

    /// Applies changes to a copy of `original`, written to `destination`.
    /// Each change's `before` must match what the hive holds now.
    /// The result is sealed as Windows expects: both sequence numbers equal
    /// and above `aboveSequence` (every transaction log's), the checksum by
    /// Windows' rule (hivex's plain XOR differs when it comes out 0 or ~0).
    public static func edit(
        _ original: String, writingTo destination: String, _ changes: [Change], hive name: HiveName, image: String,
        aboveSequence: UInt32 = 0
    ) throws {
        do {
            let hive = try Hive(path: original, writable: true)
            defer { hive.close() }
            for c in changes {
                let where_ = "\(name.rawValue)\\\(c.key)" + (c.name.map { " value \($0)" } ?? "")
                switch c.op {
                case .setValue, .deleteValue:
                    guard let valueName = c.name else {
                        throw RemedyError(.planMismatch, image: image, "\(where_): a value change without a value name")
                    }
                    let node: HiveNode
                    if let n = try hive.node(at: c.key.description) {
                        node = n
                    } else if c.before == nil, c.op == .setValue {
                        node = try hive.ensureNode(at: c.key.description)
                    } else {
                        throw RemedyError(
                            .planMismatch, image: image,
                            "\(where_): the key does not exist (the image changed since it was planned)")
                    }
                    let now = try hive.value(of: node, named: valueName)
                    guard now == c.before else {
                        throw RemedyError(
                            .planMismatch, image: image,
                            "\(where_) is \(now.map { "\($0)" } ?? "absent"), the plan expected \(c.before.map { "\($0)" } ?? "absent")"
                        )
                    }
                    if c.op == .setValue, let after = c.after {
                        try hive.setValue(of: node, HiveValue(name: valueName, value: after))
                    } else {
                        try hive.deleteValue(of: node, named: valueName)
                    }
                case .createKey:
                    _ = try hive.ensureNode(at: c.key.description)
                case .deleteKey:
                    guard let node = try hive.node(at: c.key.description) else {
                        throw RemedyError(.planMismatch, image: image, "\(where_): the key to delete does not exist")
                    }
                    try hive.deleteChild(node)
                }
            }
            try hive.commit(to: destination)
            try seal(destination, above: aboveSequence, hive: name, image: image)
        } catch let e as HivexError {
            throw RemedyError(.writeFailed, image: image, "editing the \(name.rawValue) hive failed: \(e)", cause: e)
        }
    }

    static func seal(_ path: String, above: UInt32, hive name: HiveName, image: String) throws {
        guard var bytes = FileManager.default.contents(atPath: path).map({ [UInt8]($0) }),
            let base = try? BaseBlock(bytes), bytes.count >= BaseBlock.size
        else {
            throw RemedyError(
                .verifyFailed, image: image,
                "the edited \(name.rawValue) hive cannot be read back; nothing was written to the image")
        }
        BaseBlock.seal(&bytes, sequence: max(base.primarySequence, above &+ 1))
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else {
            throw RemedyError(
                .writeFailed, image: image, "cannot reopen the edited \(name.rawValue) hive: \(Errno.last)")
        }
        defer { close(fd) }
        let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, BaseBlock.size, 0) }
        guard written == BaseBlock.size, fsync(fd) == 0 else {
            throw RemedyError(.writeFailed, image: image, "cannot seal the edited \(name.rawValue) hive: \(Errno.last)")
        }
    }

    /// Re-opens the edited hive and checks that every touched key holds
    /// exactly the original values with the changes applied, nothing else.
    public static func verify(
        original: String, edited: String, _ changes: [Change], hive name: HiveName, image: String
    ) throws {
        do {
            let before = try Hive(path: original)
            let after = try Hive(path: edited)
            defer {
                before.close()
                after.close()
            }
            var keys: [RegistryPath] = []
            for c in changes where (c.op == .setValue || c.op == .deleteValue) && !keys.contains(c.key) {
                keys.append(c.key)
            }
            for key in keys {
                // Raw type and bytes: values the plan does not change must keep their exact bytes.
                var expected: [String: RawHiveValue] = [:]
                if let n = try before.node(at: key.description) {
                    for v in try before.rawValues(of: n) {
                        expected[v.name.lowercased()] = RawHiveValue(name: "", type: v.type, data: v.data)
                    }
                }
                for c in changes where c.key == key {
                    guard let vn = c.name?.lowercased() else { continue }
                    expected[vn] =
                        c.op == .setValue
                        ? c.after.map { RawHiveValue(name: "", type: $0.type, data: $0.encoded) } : nil
                }
                guard let n = try after.node(at: key.description) else {
                    throw RemedyError(
                        .verifyFailed, image: image,
                        "after editing, \(name.rawValue)\\\(key) is missing; nothing was written to the image")
                }
                var actual: [String: RawHiveValue] = [:]
                for v in try after.rawValues(of: n) {
                    actual[v.name.lowercased()] = RawHiveValue(name: "", type: v.type, data: v.data)
                }
                guard actual == expected else {
                    throw RemedyError(
                        .verifyFailed, image: image,
                        "after editing, \(name.rawValue)\\\(key) does not hold the planned values; nothing was written to the image"
                    )
                }
            }
        } catch let e as HivexError {
            throw RemedyError(
                .verifyFailed, image: image,
                "the edited \(name.rawValue) hive does not re-open: \(e); nothing was written to the image", cause: e)
        }
    }
}

/// The JSON encoder for every document remedy prints or writes.
public enum RemedyJSON {
    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .iso8601
        return e
    }

    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }
}
