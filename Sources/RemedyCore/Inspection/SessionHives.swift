import Foundation
import Guestfs
import Hivex
import RegistryFormat

/// The hives of one image, as inspection reads them. A clean SYSTEM or SOFTWARE hive is read where it is, the cells
/// the rules ask for (``HiveCells``, through the appliance): a SOFTWARE hive is often 60 MB or more, and the plan needs
/// a few of its keys. A hive Windows left dirty is downloaded to the session's work directory and recovered from its
/// transaction logs first. SAM is downloaded too when it can be read (local accounts, for the administrator-account
/// check; it is read, never written). Apply downloads the hives it edits (``local(_:)``), before it writes anything.
final class SessionHives {
    /// Guest paths of the hive files, e.g. `/Windows/System32/config/SYSTEM`.
    private(set) var guestPaths: [HiveName: String] = [:]
    /// Local copies of the hives as they are in the image (recovered when dirty), made so far.
    private(set) var localCopies: [HiveName: String] = [:]
    /// Each hive's state: dirty or not, logs replayed, logs found.
    private(set) var integrity: [HiveName: HiveIntegrity] = [:]
    private var open: [HiveName: any ReadableHive] = [:]
    private let g: Guestfs
    private let mounts: GuestMounts
    private let workDirectory: String

    /// Finds, checks and opens the hives below `systemRoot` (the Windows filesystem is mounted at `/`).
    init(_ g: Guestfs, mounts: GuestMounts, systemRoot: String, workDirectory: String) throws {
        self.g = g
        self.mounts = mounts
        self.workDirectory = workDirectory
        for hive in [HiveName.system, .software] {
            let guestPath: String
            do {
                guestPath = try g.caseSensitivePath("\(systemRoot)/System32/config/\(hive.rawValue)")
            } catch let e as GuestfsError {
                throw RemedyError(.hiveUnreadable, "cannot find the \(hive.rawValue) hive: \(e.message)", cause: e)
            }
            guard (try? g.isFile(guestPath)) == true else {
                throw RemedyError(.hiveUnreadable, "the \(hive.rawValue) hive is missing (\(guestPath))")
            }
            guestPaths[hive] = guestPath
            let size: Int64
            let head: [UInt8]
            do {
                size = try HiveReader.checkSize(
                    g, guestPath, limit: RegistryLimits.maxHiveFile, what: "the \(hive.rawValue) hive")
                // The base block, and the reader's first chunk when the hive is clean.
                head = try g.pread(guestPath, count: min(HiveCells.chunkSize, Int(size)), offset: 0)
            } catch let e as GuestfsError {
                throw RemedyError(
                    .hiveUnreadable, "cannot read the \(hive.rawValue) hive (\(guestPath)): \(e.message)", cause: e)
            }
            let logs = try HiveReader.readLogs(hive, guestPath: guestPath, g: g, workDirectory: workDirectory)
            if let base = try? BaseBlock(Array(head.prefix(BaseBlock.size))), !base.isDirty {
                integrity[hive] = HiveReader.integrity(
                    hive, base: base, primary: Array(head.prefix(BaseBlock.size)), logs: logs)
                open[hive] = try cells(hive, guestPath: guestPath, size: Int(size), first: head)
            } else {
                // Dirty (or a base block remedy cannot read): the whole file, recovered from the logs, the way it was.
                try download(hive)
                integrity[hive] = try HiveReader.recoverIfDirty(
                    hive, local: localCopies[hive]!, guestPath: guestPath, logs: logs)
                open[hive] = try HiveReader.openHive(hive, localCopies[hive]!, guest: guestPath)
            }
        }
        // An unreadable SAM is left out.
        if let sam = try? g.caseSensitivePath("\(systemRoot)/System32/config/SAM"), (try? g.isFile(sam)) == true,
            (try? HiveReader.checkSize(g, sam, limit: RegistryLimits.maxHiveFile, what: "the SAM hive")) != nil,
            (try? g.download(sam, to: workDirectory + "/SAM")) != nil,
            let hive = try? Hive(path: workDirectory + "/SAM")
        {
            open[.sam] = hive
        }
    }

    /// The hive read where it is: chunks of the file through the appliance, the session's filesystem mounted first
    /// (sessions of a batch take turns in one appliance).
    private func cells(_ hive: HiveName, guestPath: String, size: Int, first: [UInt8]) throws -> HiveCells {
        let g = self.g, mounts = self.mounts
        do {
            return try HiveCells(fileSize: size, first: first) { offset, count in
                try mounts.mountReadOnly()
                return try PhaseTimes.measure("hive-cells") {
                    try g.pread(guestPath, count: count, offset: Int64(offset))
                }
            }
        } catch {
            throw HiveReader.unreadable(hive, guestPath, error)
        }
    }

    private func download(_ hive: HiveName) throws {
        let guestPath = guestPaths[hive]!
        let local = workDirectory + "/" + hive.rawValue
        do {
            try mounts.mountReadOnly()
            try g.download(guestPath, to: local)
        } catch let e as GuestfsError {
            throw RemedyError(
                .hiveUnreadable, "cannot read the \(hive.rawValue) hive (\(guestPath)): \(e.message)", cause: e)
        }
        localCopies[hive] = local
    }

    /// The local copy of `hive` as it is in the image, downloaded now if inspection read it where it is. Apply calls
    /// this before it mounts anything writable.
    func local(_ hive: HiveName) throws -> String {
        if let l = localCopies[hive] { return l }
        guard guestPaths[hive] != nil else {
            throw RemedyError(.hiveUnreadable, "the \(hive.rawValue) hive was not read")
        }
        try download(hive)
        return localCopies[hive]!
    }

    var system: any ReadableHive { open[.system]! }
    var software: any ReadableHive { open[.software]! }

    /// The subtrees the requirements name, as plain values.
    func snapshot(_ requirements: [RegistryRequirement], image: String) throws -> RegistrySnapshot {
        try HiveReader.snapshot(open, requirements, image: image)
    }

    func close() {
        for case let h as Hive in open.values { h.close() }
        open = [:]
    }
}
