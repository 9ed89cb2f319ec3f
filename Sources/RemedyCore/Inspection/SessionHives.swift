import Foundation
import Guestfs
import Hivex
import RegistryFormat

/// The hives of one image, as inspection reads them: SYSTEM and SOFTWARE downloaded to the session's work directory
/// (recovered from their transaction logs when Windows left them dirty) and opened for reading; SAM too when it can
/// be read (local accounts, for the administrator-account check; it is read, never written).
final class SessionHives {
    /// Guest paths of the hive files, e.g. `/Windows/System32/config/SYSTEM`.
    private(set) var guestPaths: [HiveName: String] = [:]
    /// Local copies of the hives as they are in the image.
    private(set) var localCopies: [HiveName: String] = [:]
    /// Each hive's state: dirty or not, logs replayed, logs found.
    private(set) var integrity: [HiveName: HiveIntegrity] = [:]
    private var open: [HiveName: Hive] = [:]

    /// Downloads, recovers and opens the hives below `systemRoot` (the Windows filesystem is mounted at `/`).
    init(_ g: Guestfs, systemRoot: String, workDirectory: String) throws {
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
            let local = workDirectory + "/" + hive.rawValue
            do {
                try HiveReader.checkSize(
                    g, guestPath, limit: RegistryLimits.maxHiveFile, what: "the \(hive.rawValue) hive")
                try g.download(guestPath, to: local)
            } catch let e as GuestfsError {
                throw RemedyError(
                    .hiveUnreadable, "cannot read the \(hive.rawValue) hive (\(guestPath)): \(e.message)", cause: e)
            }
            guestPaths[hive] = guestPath
            localCopies[hive] = local
            integrity[hive] = try HiveReader.recoverIfDirty(
                hive, local: local, guestPath: guestPath, g: g, workDirectory: workDirectory)
        }
        open[.system] = try HiveReader.openHive(.system, localCopies[.system]!, guest: guestPaths[.system]!)
        open[.software] = try HiveReader.openHive(.software, localCopies[.software]!, guest: guestPaths[.software]!)
        // An unreadable SAM is left out.
        if let sam = try? g.caseSensitivePath("\(systemRoot)/System32/config/SAM"), (try? g.isFile(sam)) == true,
            (try? HiveReader.checkSize(g, sam, limit: RegistryLimits.maxHiveFile, what: "the SAM hive")) != nil,
            (try? g.download(sam, to: workDirectory + "/SAM")) != nil,
            let hive = try? Hive(path: workDirectory + "/SAM")
        {
            open[.sam] = hive
        }
    }

    var system: Hive { open[.system]! }
    var software: Hive { open[.software]! }

    /// The subtrees the requirements name, as plain values.
    func snapshot(_ requirements: [RegistryRequirement], image: String) throws -> RegistrySnapshot {
        try HiveReader.snapshot(open, requirements, image: image)
    }

    func close() {
        for h in open.values { h.close() }
        open = [:]
    }
}
