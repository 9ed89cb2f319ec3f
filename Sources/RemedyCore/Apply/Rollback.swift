import Foundation
import Guestfs
import Hivex
import RegistryFormat

/// Undoes every `remedy apply` recorded in an image: each hive is put back byte for byte as it was before the first
/// run (its runs' patches reverted, newest first; see ``original(of:at:chain:session:)``), replaced files go back,
/// injected files are removed, and so is `C:\Windows\remedy`. Every write goes to the session's overlay, so a crash
/// leaves the image as it was; running rollback again does the job.
public enum Rollback {
    public static func run(in session: ImageSession, dryRun: Bool) throws -> RollbackReport {
        let g = session.g
        let image = session.imagePath
        let state = Applier.stateDirectory(systemRoot: session.os.systemRoot)
        var report = RollbackReport(image: image, dryRun: dryRun, runs: [], restored: [:], removed: [])
        do {
            try session.mountReadOnly()
            guard try g.isDir(state) else { return report }
            let records = try self.records(session, state: state)
            report.runs = records.map(\.runID)
            // Each hive's backups, oldest run first.
            var chains: [HiveName: [String]] = [:]
            for r in records {
                for (name, backup) in r.backups.sorted(by: { $0.key < $1.key }) {
                    guard let hive = HiveName(rawValue: name) else { continue }
                    chains[hive, default: []].append(backup)
                }
            }
            // Every hive's original is worked out before anything is touched.
            var restore: [(hive: HiveName, target: String, current: [UInt8], original: [UInt8])] = []
            for (hive, chain) in chains.sorted(by: { $0.key < $1.key }) {
                guard let target = session.hivePaths[hive] else {
                    throw RemedyError(
                        .hiveUnreadable, image: image,
                        "a backup of the \(hive.rawValue) hive exists, but remedy does not read that hive")
                }
                let (current, original) = try Self.original(of: hive, at: target, chain: chain, session: session)
                restore.append((hive, target, current, original))
                report.restored[hive.rawValue] = chain[0]
            }
            let (firstBackups, injected) = Self.fileFates(records)
            report.restoredFiles = firstBackups
            report.removed = injected + [state]
            guard !dryRun else { return report }

            try session.remountWritable()
            // Each hive written back in place, in the pages that differ from the original only (it keeps its file and
            // its security descriptor), and those pages read back.
            for r in restore {
                let ranges = HivePatch.changedRanges(r.current, r.original)
                try InPlaceWrite.write(g, r.target, new: r.original, ranges: ranges)
                guard try InPlaceWrite.holds(g, r.target, r.original, in: ranges) else {
                    throw RemedyError(
                        .verifyFailed, image: image,
                        "the \(r.hive.rawValue) hive read back from the image differs from its original; run remedy rollback again"
                    )
                }
            }
            // Transaction logs of recovered hives go back beside their hive (the oldest record has the originals).
            var logsBack: [String: String] = [:]
            for r in records {
                for (original, kept) in r.movedLogs where logsBack[original] == nil { logsBack[original] = kept }
            }
            // A file cp creates gets ntfs-3g's Everyone: Full Control: each one put back keeps the descriptor it has, or gets remedy's.
            var security: [FileSecurity.Assignment] = []
            func putBack(_ kept: String, _ path: String) throws {
                security.append(
                    FileSecurity.keeping(
                        path, original: try? g.lgetxattr(path, FileSecurity.attribute), as: path, directory: false,
                        os: session.os))
                try g.cp(kept, path)
            }
            for (original, kept) in logsBack.sorted(by: { $0.key < $1.key }) { try putBack(kept, original) }
            // Files remedy replaced go back from their oldest copy; files it added are removed.
            let filesBack = firstBackups
            for (path, kept) in filesBack.sorted(by: { $0.key < $1.key }) where !path.hasPrefix("esp:") {
                try putBack(kept, path)
            }
            try FileSecurity.set(g, security, image: image)
            for path in injected where !path.hasPrefix("esp:") { try g.rmF(path) }
            // Files of the EFI system partition (`esp:<path>`), from their backups on the Windows volume.
            try Applier.restoreESP(
                filesBack.filter { $0.key.hasPrefix("esp:") },
                remove: injected.filter { $0.hasPrefix("esp:") }, session: session)
            try g.rmRf(state)
            try session.finishWrites()
        } catch let e as GuestfsError {
            throw RemedyError(
                .writeFailed, image: image, "rollback failed: \(e.message); run remedy rollback again to finish",
                cause: e)
        }
        return report
    }

    /// The hive as it is now and as it was before the first run, from its backups (oldest run first): a backup is
    /// either a ``HivePatch`` (what apply keeps) or a whole copy of the hive (what remedy kept before patches, or a
    /// run without a record). The original is the oldest whole copy with the patches of the runs before it reverted,
    /// newest first, or, without a whole copy, the hive as it is now with every run's patch reverted. A patch is
    /// reverted only on the exact bytes its run left (size and SHA-256): a hive Windows changed since (it was
    /// booted) is refused, and nothing is changed.
    static func original(
        of hive: HiveName, at target: String, chain: [String], session: ImageSession
    ) throws -> (current: [UInt8], original: [UInt8]) {
        let g = session.g
        let image = session.imagePath
        var kept: [[UInt8]] = []
        for (n, backup) in chain.enumerated() {
            guard try g.isFile(backup) else {
                throw RemedyError(
                    .hiveUnreadable, image: image,
                    "the backup \(GuestPath.windows(backup)) recorded for the \(hive.rawValue) hive is missing; nothing was changed"
                )
            }
            try HiveReader.checkSize(g, backup, limit: RegistryLimits.maxHiveFile, what: "the backup")
            let local = session.workDirectory + "/rollback-\(hive.rawValue)-\(n)"
            try g.download(backup, to: local)
            let bytes = try Applier.readLocal(local, image: image)
            if !HivePatch.isPatch(bytes) {
                do {
                    try Hive(path: local).close()
                } catch let e as HivexError {
                    throw RemedyError(
                        .hiveUnreadable, image: image,
                        "the backup \(GuestPath.windows(backup)) is not a valid hive (\(e)); nothing was changed",
                        cause: e)
                }
            }
            kept.append(bytes)
        }
        // The hive as it is now: inspection downloaded it already (SYSTEM, SOFTWARE).
        let current: [UInt8]
        if session.localHives[hive] != nil {
            current = try Applier.readLocal(Applier.onDisk(hive, session), image: image)
        } else {
            let now = session.workDirectory + "/rollback-\(hive.rawValue)-now"
            try g.download(target, to: now)
            current = try Applier.readLocal(now, image: image)
        }
        let whole = kept.firstIndex { !HivePatch.isPatch($0) }
        var bytes = whole.map { kept[$0] } ?? current
        for n in (0..<(whole ?? kept.count)).reversed() {
            let backup = GuestPath.windows(chain[n])
            let patch: HivePatch
            do {
                patch = try HivePatch(decoding: kept[n])
            } catch {
                throw RemedyError(
                    .hiveUnreadable, image: image,
                    "the backup \(backup) is not a valid remedy hive patch (\(error)); nothing was changed",
                    cause: error)
            }
            guard let before = patch.revert(bytes) else {
                throw RemedyError(
                    .planMismatch, image: image,
                    "the \(hive.rawValue) hive is not the one remedy's run left (\(backup) undoes that run's changes only on "
                        + "its exact bytes; was Windows booted since?); nothing was changed")
            }
            bytes = before
        }
        do {
            let check = session.workDirectory + "/rollback-\(hive.rawValue)-original"
            try Data(bytes).write(to: URL(fileURLWithPath: check))
            try Hive(path: check).close()
        } catch {
            throw RemedyError(
                .hiveUnreadable, image: image,
                "the \(hive.rawValue) hive its backups give back is not a valid hive (\(error)); nothing was changed",
                cause: error)
        }
        return (current, bytes)
    }

    /// What becomes of each file the runs touched, decided by the oldest run that touched it: a file that run
    /// replaced goes back from that run's copy; a file it injected is removed, even when a later run replaced it
    /// (that later copy is remedy's own file, not the original). Returns path -> copy to put back, and the paths
    /// to remove (in record order, each once).
    static func fileFates(_ records: [RunRecord]) -> (restore: [String: String], remove: [String]) {
        var restore: [String: String] = [:]
        var remove: [String] = []
        var seen = Set<String>()
        for r in records {
            for path in r.injected where !seen.contains(path) {
                seen.insert(path)
                remove.append(path)
            }
            for (path, kept) in r.fileBackups.sorted(by: { $0.key < $1.key }) where !seen.contains(path) {
                seen.insert(path)
                restore[path] = kept
            }
        }
        return (restore, remove)
    }

    /// The apply records in the image, oldest first.
    /// What rollback needs of one apply run (from its record, or from its backup directory alone).
    struct RunRecord {
        var runID: String
        var backups: [String: String] = [:]
        var injected: [String] = []
        var movedLogs: [String: String] = [:]
        var fileBackups: [String: String] = [:]
    }

    static func records(_ session: ImageSession, state: String) throws -> [RunRecord] {
        let g = session.g
        let logDir = state + "/log"
        var out: [RunRecord] = []
        for name in (try g.isDir(logDir) ? try g.ls(logDir) : []).sorted() where name.hasSuffix(".json") {
            let local = session.workDirectory + "/record-" + name
            try g.download(logDir + "/" + name, to: local)
            do {
                let a = try RemedyJSON.decoder().decode(
                    ApplyReport.self, from: Data(contentsOf: URL(fileURLWithPath: local)))
                out.append(
                    RunRecord(
                        runID: a.runID, backups: a.backups, injected: a.injected, movedLogs: a.movedLogs,
                        fileBackups: a.fileBackups))
            } catch {
                throw RemedyError(
                    .imageUnreadable, image: session.imagePath,
                    "the remedy record \(GuestPath.windows(logDir + "/" + name)) cannot be read (\(error)); nothing was changed",
                    cause: error)
            }
        }
        // A run whose record was never written (a failure or crash between its first backup and its record)
        // still has its backups: they are found by scanning, so rollback restores from them and never deletes
        // a backup it has not restored. Files it injected are not known without the record.
        let known = Set(out.map(\.runID))
        let backupDir = state + "/backup"
        if try g.isDir(backupDir) {
            for run in try g.ls(backupDir).sorted() where !known.contains(run) {
                let dir = backupDir + "/" + run
                guard try g.isDir(dir) else { continue }
                var r = RunRecord(runID: run)
                for name in try g.ls(dir) {
                    if let hive = HiveName.allCases.first(where: { $0.rawValue.lowercased() == name.lowercased() }),
                        try g.isFile(dir + "/" + name)
                    {
                        r.backups[hive.rawValue] = dir + "/" + name
                    }
                }
                if try g.isDir(dir + "/files") {
                    for rel in try g.find(dir + "/files") where try g.isFile(dir + "/files/" + rel) {
                        r.fileBackups["/" + rel] = dir + "/files/" + rel
                    }
                }
                out.append(r)
            }
        }
        return out.sorted { $0.runID < $1.runID }
    }
}
