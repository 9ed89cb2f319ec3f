import Foundation
import Guestfs
import Hivex
import RegistryFormat

/// Reads a Windows image's hives: downloads bounded in size, a dirty hive recovered from its transaction logs,
/// the control sets from `SYSTEM\Select`, and the keys rules ask for copied out as plain values.
enum HiveReader {
    /// A transaction log as read: its file name, its bytes, its guest path.
    typealias Log = (name: String, bytes: [UInt8], guest: String)

    /// Downloads the hive's transaction logs (`HIVE.LOG`, `.LOG1`, `.LOG2`, as far as they can be read): their
    /// sequence numbers matter even for a clean hive (apply seals its writes above them).
    static func readLogs(
        _ hive: HiveName, guestPath: String, g: Guestfs, workDirectory: String
    ) throws -> [Log] {
        let dir = GuestPath.parent(guestPath)
        let file = GuestPath.name(guestPath).lowercased()
        let logNames = ((try? g.ls(dir)) ?? []).filter {
            ["\(file).log", "\(file).log1", "\(file).log2"].contains($0.lowercased())
        }.sorted()
        var logs: [Log] = []
        for name in logNames {
            let guest = dir + "/" + name
            guard (try? g.isFile(guest)) == true else { continue }
            let localLog = workDirectory + "/" + name
            do {
                try checkSize(g, guest, limit: RegistryLimits.maxLogFile, what: "the \(hive.rawValue) transaction log")
                try g.download(guest, to: localLog)
            } catch let e as GuestfsError {
                throw RemedyError(
                    .hiveUnreadable, "cannot read the \(hive.rawValue) transaction log \(guest): \(e.message)", cause: e
                )
            }
            logs.append(
                (
                    name, (try? HostFile.read(localLog, followLinks: false, limit: RegistryLimits.maxLogFile)) ?? [],
                    guest
                ))
        }
        return logs
    }

    /// A hive's state from its base block, with the highest sequence number its logs carry (for a dirty hive, the
    /// replay sets that).
    static func integrity(
        _ hive: HiveName, base: BaseBlock, primary: [UInt8], logs: [Log]
    ) -> HiveIntegrity {
        var info = HiveIntegrity(
            hive: hive, dirty: base.isDirty, primarySequence: base.primarySequence,
            secondarySequence: base.secondarySequence,
            checksumValid: base.checksumValid, logs: logs.map(\.guest), replayed: [], highestLogSequence: 0)
        if !base.isDirty {
            info.highestLogSequence =
                (try? HiveRecovery.recover(primary: primary, logs: logs.map { ($0.name, $0.bytes) }).highestLogSequence)
                ?? 0
        }
        return info
    }

    /// Replays the logs into the local copy when the hive is dirty (the original is kept beside it as `HIVE.orig`).
    /// hivex would open a dirty hive silently, with stale data, and its commit would mark it clean so Windows ignores
    /// the logs.
    static func recoverIfDirty(
        _ hive: HiveName, local: String, guestPath: String, logs: [Log]
    ) throws -> HiveIntegrity {
        let bytes = (try? HostFile.read(local, followLinks: false, limit: RegistryLimits.maxHiveFile)) ?? []
        let base: BaseBlock
        do {
            base = try BaseBlock(bytes)
        } catch let e as RegfError {
            throw RemedyError(
                .hiveUnreadable, "the \(hive.rawValue) hive (\(guestPath)) is not a valid registry hive: \(e.message)",
                cause: e)
        }
        var info = integrity(hive, base: base, primary: bytes, logs: logs)
        guard base.isDirty else { return info }
        let logs = logs.map { ($0.name, $0.bytes) }
        do {
            let r = try HiveRecovery.recover(primary: bytes, logs: logs)
            // The replayed hive is checked before it is written: bounded, and sound bins.
            if let problem = try HiveCheck(r.bytes).problems.first {
                throw RegfError("the replayed hive is not sound: \(problem)")
            }
            try FileManager.default.moveItem(atPath: local, toPath: local + ".orig")
            guard FileManager.default.createFile(atPath: local, contents: Data(r.bytes)) else {
                throw RemedyError(.hostFailed, "cannot write the recovered \(hive.rawValue) hive locally")
            }
            info.replayed = r.applied
            info.highestLogSequence = r.highestLogSequence
            return info
        } catch let e as RegfError {
            throw RemedyError(
                .hiveUnrecoverable,
                "the \(hive.rawValue) hive (\(guestPath)) was not cleanly closed by Windows and cannot be recovered: \(e.message); "
                    + "nothing was changed (boot the VM once and shut it down cleanly, then export it again)", cause: e)
        }
    }

    /// Refuses to download a guest file larger than `limit` (its size from the appliance, before any byte is read).
    @discardableResult
    static func checkSize(_ g: Guestfs, _ path: String, limit: Int, what: String) throws -> Int64 {
        let size = try g.fileSize(path)
        guard size <= Int64(limit) else {
            throw RemedyError(
                .hiveUnreadable,
                "\(what) (\(path)) is \(size) bytes, more than remedy accepts (\(limit) bytes): not a real hive")
        }
        return size
    }

    /// A hive that cannot be read, as the error users see.
    static func unreadable(_ hive: HiveName, _ guestPath: String, _ error: Error) -> RemedyError {
        if let e = error as? RemedyError { return e }
        let detail: String
        switch error {
        case let e as GuestfsError: detail = e.message
        case let e as RegfError: detail = "not a sound registry hive: \(e.message)"
        default: detail = "\(error)"
        }
        return RemedyError(
            .hiveUnreadable, "cannot read the \(hive.rawValue) hive (\(guestPath)): \(detail)", cause: error)
    }

    static func openHive(_ hive: HiveName, _ local: String, guest: String) throws -> Hive {
        do {
            return try Hive(path: local)
        } catch let e as HivexError {
            throw RemedyError(
                .hiveUnreadable, "the \(hive.rawValue) hive (\(guest)) is not a valid registry hive: \(e.errno)",
                cause: e)
        }
    }

    /// ControlSet00N keys and their roles from `SYSTEM\Select`.
    static func controlSets(_ system: some ReadableHive, guest: String) throws -> ([ControlSet], String) {
        do {
            let root = try system.root()
            guard let select = try system.child(of: root, named: "Select") else {
                throw RemedyError(
                    .hiveUnreadable,
                    "the SYSTEM hive (\(guest)) has no Select key: cannot tell which control set Windows boots")
            }
            var roleOf: [Int: [ControlSet.Role]] = [:]
            var current = 0
            for role in ControlSet.Role.allCases {
                if case .dword(let n)? = try system.decodedValue(of: select, named: role.rawValue), n > 0 {
                    roleOf[Int(n), default: []].append(role)
                    if role == .current { current = Int(n) }
                }
            }
            guard current > 0 else {
                throw RemedyError(.hiveUnreadable, "the SYSTEM hive (\(guest)) has no valid Select\\Current value")
            }
            var sets: [ControlSet] = []
            for child in try system.children(of: root) {
                let name = try system.name(of: child)
                let lower = name.lowercased()
                guard lower.hasPrefix("controlset"), let n = Int(lower.dropFirst(10)), lower.count == 13 else {
                    continue
                }
                sets.append(ControlSet(name: name, roles: roleOf[n] ?? []))
            }
            let currentName = String(format: "ControlSet%03d", current)
            guard sets.contains(where: { $0.name.lowercased() == currentName.lowercased() }) else {
                throw RemedyError(
                    .hiveUnreadable, "Select\\Current names \(currentName), which is not in the SYSTEM hive (\(guest))")
            }
            return (
                sets.sorted { $0.name < $1.name }, sets.first { $0.name.lowercased() == currentName.lowercased() }!.name
            )
        } catch let e as HivexError {
            throw RemedyError(.hiveUnreadable, "the SYSTEM hive (\(guest)) is damaged: \(e)", cause: e)
        } catch let e as RegfError {
            throw RemedyError(.hiveUnreadable, "the SYSTEM hive (\(guest)) is damaged: \(e)", cause: e)
        } catch let e as GuestfsError {
            throw RemedyError(.hiveUnreadable, "cannot read the SYSTEM hive (\(guest)): \(e.message)", cause: e)
        }
    }

    /// Reads requirements from open hives into a snapshot.
    static func snapshot(
        _ hives: [HiveName: any ReadableHive], _ requirements: [RegistryRequirement], image: String
    ) throws -> RegistrySnapshot {
        var snapshot = RegistrySnapshot()
        for r in requirements {
            guard let hive = hives[r.hive] else {
                if r.hive == .sam {  // optional: an image without a readable SAM reads as one without accounts
                    snapshot.insert(.sam, r.path, nil)
                    continue
                }
                throw RemedyError(
                    .hiveUnreadable, image: image, "the \(r.hive.rawValue) hive is not read by remedy yet")
            }
            do {
                snapshot.insert(r.hive, r.path, try subtree(hive, r.path.description, depth: r.depth))
            } catch let e as GuestfsError {
                throw RemedyError(
                    .hiveUnreadable, image: image, "reading \(r.hive.rawValue)\\\(r.path): \(e.message)", cause: e)
            } catch let e as RemedyError {
                throw e
            } catch {
                throw RemedyError(
                    .hiveUnreadable, image: image, "reading \(r.hive.rawValue)\\\(r.path): \(error)", cause: error)
            }
        }
        return snapshot
    }

    /// The key at `path` and `depth` levels below it, or nil when there is none.
    static func subtree<H: ReadableHive>(_ hive: H, _ path: String, depth: Int) throws -> RegistryKey? {
        try hive.lookup(path).map { try read(hive, $0, depth: depth) }
    }

    static func read<H: ReadableHive>(_ hive: H, _ node: H.Node, depth: Int) throws -> RegistryKey {
        var key = RegistryKey(name: try hive.name(of: node), values: try hive.decodedValues(of: node))
        if depth > 0 {
            key.subkeys = try hive.children(of: node).map { try read(hive, $0, depth: depth - 1) }
        }
        return key
    }
}
