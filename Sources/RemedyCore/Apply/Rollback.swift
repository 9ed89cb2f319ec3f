import Foundation
import Guestfs
import Hivex

/// Undoes every `remedy apply` recorded in an image: each hive is put back
/// from the oldest backup remedy kept of it (byte for byte the original),
/// injected files are removed, and so is `C:\Windows\remedy`. Each hive is
/// restored by copying the backup beside it and renaming it over, so a
/// crash leaves either the edited hive or the original; running rollback
/// again finishes the job.
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
            var sources: [HiveName: String] = [:]
            for r in records {
                for (name, backup) in r.backups {
                    guard let hive = HiveName(rawValue: name), sources[hive] == nil else { continue }
                    sources[hive] = backup
                }
            }
            // Every backup must exist and be a hive before anything is touched.
            for (hive, backup) in sources.sorted(by: { $0.key < $1.key }) {
                guard session.hivePaths[hive] != nil else {
                    throw RemedyError(
                        .hiveUnreadable, image: image,
                        "a backup of the \(hive.rawValue) hive exists, but remedy does not read that hive")
                }
                guard try g.isFile(backup) else {
                    throw RemedyError(
                        .hiveUnreadable, image: image,
                        "the backup \(GuestPath.windows(backup)) recorded for the \(hive.rawValue) hive is missing; nothing was changed"
                    )
                }
                let local = session.workDirectory + "/rollback-\(hive.rawValue)"
                try g.download(backup, to: local)
                do {
                    try Hive(path: local).close()
                } catch let e as HivexError {
                    throw RemedyError(
                        .hiveUnreadable, image: image,
                        "the backup \(GuestPath.windows(backup)) is not a valid hive (\(e)); nothing was changed",
                        cause: e)
                }
                report.restored[hive.rawValue] = backup
            }
            let (firstBackups, injected) = Self.fileFates(records)
            report.restoredFiles = firstBackups
            report.removed = injected + [state]
            guard !dryRun else { return report }

            try session.remountWritable()
            // Each backup copied beside its hive and checked, the hives' own descriptors set in one appliance call,
            // then the copies renamed into place.
            var hiveSecurity: [FileSecurity.Assignment] = []
            var renames: [(temp: String, target: String)] = []
            for (hive, backup) in sources.sorted(by: { $0.key < $1.key }) {
                let target = session.hivePaths[hive]!
                let temp = target + ".remedy-restore"
                try g.cp(backup, temp)
                guard try g.checksum("sha256", temp) == g.checksum("sha256", backup) else {
                    try? g.rmF(temp)
                    throw RemedyError(
                        .verifyFailed, image: image,
                        "the copy of \(GuestPath.windows(backup)) differs from the backup; \(hive.rawValue) was not restored"
                    )
                }
                hiveSecurity.append(
                    FileSecurity.keeping(
                        temp, original: try? g.lgetxattr(target, FileSecurity.attribute), as: target,
                        directory: false, os: session.os))
                renames.append((temp, target))
            }
            try FileSecurity.set(g, hiveSecurity, image: image)
            for r in renames { try g.rename(r.temp, r.target) }
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
