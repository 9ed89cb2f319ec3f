import Foundation
import Guestfs
import Hivex
import RegistryFormat

/// An image file checked and locked, ready to be attached to an appliance.
///
/// What qemu opens is decided from qemu's own parse (``QemuView``): the
/// content decides the format (never the name), qemu-img info with that
/// format must show a self-contained image (no backing file, no external data
/// file, VMDK extents only in the image's own directory), and the appliance
/// is then given exactly that canonical path and format (``drive``). An OVA or
/// OVF (``ImageSource``) is resolved to its system disk first.
struct PreparedImage {
    var path: String
    var format: DiskFormat
    var fileSize: Int64
    var lockFD: Int32
    /// The locks on the other files qemu opens for the image (its VMDK extents), taken as the image's own: a
    /// descriptor may name any file of its directory, another image of a batch too, and two images that share a
    /// file are then never written at the same time, nor one read while the other writes it.
    var extentLockFDs: [Int32] = []
    /// What the appliance attaches: the canonical path qemu-img checked (or, for an OVA, a
    /// private read-only overlay over the disk inside it) and its qemu format name.
    var drivePath: String = ""
    var driveFormat: String = ""
    /// qemu's view of the disk.
    var qemu: QemuView?
    /// The OVA/OVF the disk came from (nil for a plain image file).
    var source: ImageSource?
    /// Whether qemu can write the image file in place (an apply without `--output`).
    var writableInPlace: Bool { readOnlyReason == nil }
    /// Why it cannot (nil when it can).
    var readOnlyReason: String? {
        if source != nil { return "it is an \(source!.kind.rawValue.uppercased()) (its disk is read, never written)" }
        return qemu?.readOnlyReason
    }

    /// Checks the file (exists, regular, a disk format remedy accepts, what
    /// qemu opens for it, writable in place by qemu if `writable`) and takes
    /// its lock: shared to read, exclusive to write, so two remedy processes
    /// never write the same image. An image qemu cannot update in place is
    /// refused for writing with `image-read-only` before any appliance starts.
    /// An interrupted apply's overlay or commit marker beside the image is finished or discarded first (``Overlay``).
    static func prepare(_ path: String, writable: Bool, notice: (String) -> Void = { _ in }) throws -> PreparedImage {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw RemedyError(.imageNotFound, image: path, "cannot access the image: \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG || (st.st_mode & S_IFMT) == S_IFBLK else {
            throw RemedyError(.imageUnreadable, image: path, "not a regular file or block device")
        }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RemedyError(.imageUnreadable, image: path, "cannot open: \(String(cString: strerror(errno)))") }
        // An earlier apply that was interrupted left an overlay or a commit marker: finished or discarded first,
        // under the exclusive lock (so never while another remedy process works on the image).
        let pending = Overlay.pending(path)
        if flock(fd, (writable || pending ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 {
            Glibc.close(fd)
            throw RemedyError(.imageLocked, image: path, "the image is locked by another process (another remedy apply?)")
        }
        do {
            var image: PreparedImage
            if let kind = ImageSource.Kind(path: path) {
                let source = try ImageSource.resolve(path, kind: kind)
                image = PreparedImage(path: path, format: source.format, fileSize: Int64(st.st_size), lockFD: fd)
                image.source = source
                (image.drivePath, image.driveFormat, image.qemu) = try source.attach()
            } else {
                let format = try DiskFormat.detect(path: path)
                if pending {
                    do { try Overlay.recover(path, format: format, notice: notice) } catch { throw RemedyError.wrap(error, image: path) }
                }
                let view = try QemuView.inspect(path, format: format)
                image = PreparedImage(path: path, format: format, fileSize: Int64(st.st_size), lockFD: fd)
                (image.drivePath, image.driveFormat, image.qemu) = (view.files[0], format.qemuName, view)
                image.extentLockFDs = try lockExtents(Array(view.files.dropFirst()), exclusive: writable, image: path)
            }
            if pending && !writable { flock(fd, LOCK_SH) }
            if writable, let reason = image.readOnlyReason {
                image.source?.cleanup()
                for fd in image.extentLockFDs { Glibc.close(fd) }
                throw RemedyError(.imageReadOnly, image: path, "remedy cannot apply in place: \(reason); write the result to a new image with --output OUT")
            }
            return image
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// Locks every extent file like the image itself (shared to read, exclusive to write), or none of them.
    static func lockExtents(_ files: [String], exclusive: Bool, image: String) throws -> [Int32] {
        var fds: [Int32] = []
        for f in files {
            let fd = Glibc.open(f, O_RDONLY | O_CLOEXEC)
            guard fd >= 0, flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0 else {
                let why = fd < 0 ? "cannot be opened: \(String(cString: strerror(errno)))" : "is locked by another process or another image that uses it"
                if fd >= 0 { Glibc.close(fd) }
                for d in fds { Glibc.close(d) }
                throw RemedyError(fd < 0 ? .imageUnreadable : .imageLocked, image: image, "the image's extent \(f) \(why)")
            }
            fds.append(fd)
        }
        return fds
    }

    /// The drive to attach.
    func drive(readonly: Bool) -> Drive { Drive(path: drivePath, format: driveFormat, readonly: readonly) }

    func unlock() {
        Glibc.close(lockFD)
        for fd in extentLockFDs { Glibc.close(fd) }
        source?.cleanup()
    }
}

/// One image in an appliance: inspected, its hives downloaded to a private
/// local directory. Plan and apply both start here, so they see the same
/// facts. Nothing is written to the image unless ``remountWritable()`` is
/// called (apply and rollback only), and the drive is attached read-only
/// otherwise. Several sessions can share one appliance (batch mode): each
/// mounts its own filesystem when it works, one at a time.
public final class ImageSession {
    public let imagePath: String
    public let format: DiskFormat
    public let writable: Bool
    public let appliance: Appliance
    /// The image's disk inside the appliance, e.g. `/dev/sdb`.
    public let device: String
    public private(set) var os: OSFacts
    public let imageInfo: ImageInfo
    /// Guest paths of the hive files, e.g. `/Windows/System32/config/SYSTEM`.
    public private(set) var hivePaths: [HiveName: String] = [:]
    /// Local copies of the hives as they are in the image (recovered from
    /// their transaction logs when Windows left them dirty).
    public private(set) var localHives: [HiveName: String] = [:]
    /// Each hive's state: dirty or not, logs replayed, logs found.
    public private(set) var integrity: [HiveName: HiveIntegrity] = [:]
    public let workDirectory: String
    let install: WindowsInstall
    /// Hibernation and encryption as inspection found them.
    public var volume: VolumeFacts {
        VolumeFacts(hibernated: install.hibernated, encrypted: install.encrypted, filesystems: install.filesystems,
                    bootManager: install.bootManager, inspected: true, esp: install.esp)
    }
    /// What the user gave to inject, and where the virtio-win ISO is in the appliance.
    public internal(set) var inputs = PayloadInputs()
    var isoDevice: String?
    /// Payload name -> local directory its `source` paths are relative to.
    public private(set) var payloadRoots: [String: String] = [:]
    private var resolvedPayloads: PayloadFacts?
    private let ownsAppliance: Bool
    /// Where the writes of a writable session go (never the image itself); nil for a read-only one.
    var overlay: Overlay?
    /// Whether anything was mounted writable (an overlay nobody wrote to is discarded, not committed).
    private var wroteOverlay = false
    private var openHives: [HiveName: Hive] = [:]
    private var lockFD: Int32 = -1
    private var extentLockFDs: [Int32] = []
    /// The OVA/OVF the image was read from (nil for a plain image file).
    public private(set) var source: ImageSource?

    var g: Guestfs { appliance.guestfs }

    /// Opens, inspects and reads the hives of a Windows image, in an appliance of its own.
    /// A writable session writes into an overlay (see ``Overlay``): into the image after a proven commit, or with
    /// `output` into a new image, the source only read.
    public static func open(image path: String, writable: Bool, options: ApplianceOptions, inputs: PayloadInputs = PayloadInputs(),
                            output: OutputTarget? = nil) throws -> ImageSession {
        let prepared = try PreparedImage.prepare(path, writable: writable && output == nil, notice: options.notice)
        let appliance: Appliance
        var overlay: Overlay?
        do {
            if writable { overlay = try makeOverlay(prepared, output: output) }
            appliance = try Appliance.launch(drives: [drive(prepared, overlay)] + isoDrives(inputs), options: options)
        } catch {
            overlay?.discard()
            prepared.unlock()
            throw RemedyError.wrap(error, image: path)
        }
        do {
            try afterLaunch(appliance, image: path)
            let devices = try appliance.guestfs.listDevices()
            let session = try ImageSession(prepared, writable: writable, appliance: appliance, device: devices[0], owns: true)
            session.inputs = inputs
            session.isoDevice = inputs.virtioWinIsImage ? devices.last : nil
            session.overlay = overlay
            return session
        } catch {
            appliance.close()
            overlay?.discard()
            prepared.unlock()
            throw RemedyError.wrap(error, image: path)
        }
    }

    /// A fresh overlay on the image (``PreparedImage/prepare(_:writable:notice:)`` already refused an image qemu
    /// cannot update in place).
    static func makeOverlay(_ prepared: PreparedImage, output: OutputTarget?) throws -> Overlay {
        return try Overlay.create(base: prepared.path, backing: output == nil ? nil : (prepared.source?.qemuSpec ?? prepared.drivePath),
                                  format: prepared.format, output: output)
    }

    /// The image as the appliance sees it: its overlay, writable, or the image itself, read-only.
    static func drive(_ prepared: PreparedImage, _ overlay: Overlay?) -> Drive {
        if let overlay { return Drive(path: overlay.path, format: "qcow2", readonly: false) }
        return prepared.drive(readonly: true)
    }

    static func afterLaunch(_ appliance: Appliance, image: String) throws {
        if Fault.enabled, let pid = try? appliance.guestfs.pid() { Fault.register(appliance: pid) }
        try Fault.point("launch", image: image)
    }

    /// The virtio-win ISO, attached read-only after the images (one copy for every image of the appliance).
    static func isoDrives(_ inputs: PayloadInputs) -> [Drive] {
        guard inputs.virtioWinIsImage, let iso = inputs.virtioWin else { return [] }
        return [Drive(path: iso, format: "raw", readonly: true)]
    }

    /// Opens several images in one appliance (batch mode). An image that
    /// cannot be attached or inspected is a failure of its own; a launch
    /// failure fails them all (the caller retries them one by one to find
    /// the culprit). The caller shuts the appliance down after its writes,
    /// then closes the sessions.
    public static func openMany(_ paths: [String], writable: Bool, options: ApplianceOptions,
                                inputs: PayloadInputs = PayloadInputs(),
                                output: ((String) -> OutputTarget?)? = nil) -> (appliance: Appliance?, sessions: [Result<ImageSession, RemedyError>]) {
        var results = [Result<ImageSession, RemedyError>?](repeating: nil, count: paths.count)
        var prepared: [(index: Int, image: PreparedImage, overlay: Overlay?)] = []
        for (i, p) in paths.enumerated() {
            let out = writable ? output?(p) : nil
            do {
                let img = try PreparedImage.prepare(p, writable: writable && out == nil, notice: options.notice)
                do {
                    prepared.append((i, img, writable ? try makeOverlay(img, output: out) : nil))
                } catch {
                    img.unlock()
                    throw error
                }
            } catch { results[i] = .failure(RemedyError.wrap(error, image: p)) }
        }
        guard !prepared.isEmpty else { return (nil, results.map { $0! }) }
        let appliance: Appliance
        let devices: [String]
        do {
            appliance = try Appliance.launch(drives: prepared.map { drive($0.image, $0.overlay) } + isoDrives(inputs), options: options)
            devices = try appliance.guestfs.listDevices()
            try afterLaunch(appliance, image: prepared[0].image.path)
        } catch {
            for (i, img, overlay) in prepared {
                overlay?.discard()
                img.unlock()
                results[i] = .failure(RemedyError.wrap(error, image: img.path))
            }
            return (nil, results.map { $0! })
        }
        for (n, (i, img, overlay)) in prepared.enumerated() {
            do {
                let session = try ImageSession(img, writable: writable, appliance: appliance, device: devices[n], owns: false)
                session.inputs = inputs
                session.isoDevice = inputs.virtioWinIsImage ? devices.last : nil
                session.overlay = overlay
                results[i] = .success(session)
            } catch {
                overlay?.discard()
                img.unlock()
                results[i] = .failure(RemedyError.wrap(error, image: img.path))
            }
        }
        return (appliance, results.map { $0! })
    }

    private init(_ prepared: PreparedImage, writable: Bool, appliance: Appliance, device: String, owns: Bool) throws {
        self.imagePath = prepared.path
        self.format = prepared.format
        self.writable = writable
        self.appliance = appliance
        self.device = device
        self.ownsAppliance = owns
        let work = try Self.makeWorkDirectory()
        workDirectory = work
        // Removes the directory (and the customer's hives in it) when this initialiser throws: deinit does not run
        // for a half-built object, so cleanup cannot be left to close().
        var built = false
        defer { if !built { try? FileManager.default.removeItem(atPath: work) } }
        let g = appliance.guestfs
        imageInfo = ImageInfo(path: prepared.path, format: prepared.format.rawValue, fileSize: prepared.fileSize,
                              virtualSize: try? g.blockdevSize(device))
        appliance.mounted = nil   // locate unmounts whatever another session left mounted
        do {
            install = try WindowsInspector.locate(g, device: device)
        } catch let e as GuestfsError {
            throw RemedyError(.imageUnreadable, "inspection failed: \(e.message)", cause: e)
        }
        appliance.mounted = (device, false)
        let systemRoot = install.systemRoot
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
                try Self.checkSize(g, guestPath, limit: RegistryLimits.maxHiveFile, what: "the \(hive.rawValue) hive")
                try g.download(guestPath, to: local)
            } catch let e as GuestfsError {
                throw RemedyError(.hiveUnreadable, "cannot read the \(hive.rawValue) hive (\(guestPath)): \(e.message)", cause: e)
            }
            hivePaths[hive] = guestPath
            localHives[hive] = local
            integrity[hive] = try Self.recoverIfDirty(hive, local: local, guestPath: guestPath, g: g, workDirectory: workDirectory)
        }
        let system = try Self.openHive(.system, localHives[.system]!, guest: hivePaths[.system]!)
        let software = try Self.openHive(.software, localHives[.software]!, guest: hivePaths[.software]!)
        openHives = [.system: system, .software: software]
        // SAM is read, never written (local accounts, for the administrator-account check); an unreadable one is left out.
        if let sam = try? g.caseSensitivePath("\(systemRoot)/System32/config/SAM"), (try? g.isFile(sam)) == true,
           (try? Self.checkSize(g, sam, limit: RegistryLimits.maxHiveFile, what: "the SAM hive")) != nil,
           (try? g.download(sam, to: workDirectory + "/SAM")) != nil, let hive = try? Hive(path: workDirectory + "/SAM") {
            openHives[.sam] = hive
        }

        let (controlSets, current) = try Self.controlSets(system, guest: hivePaths[.system]!)
        let arch: String = {
            guard let cmd = try? g.caseSensitivePath("\(systemRoot)/System32/cmd.exe"), let a = try? g.fileArchitecture(cmd) else { return "unknown" }
            return a
        }()
        os = WindowsInspector.osFacts(install, system: system, software: software, arch: arch, controlSets: controlSets, current: current)
        lockFD = prepared.lockFD
        extentLockFDs = prepared.extentLockFDs
        source = prepared.source
        built = true
    }

    /// Downloads the hive's transaction logs and, when the hive is dirty,
    /// replays them into the local copy (the original is kept beside it as
    /// `HIVE.orig`). hivex would open a dirty hive silently, with stale data,
    /// and its commit would mark it clean so Windows ignores the logs.
    static func recoverIfDirty(_ hive: HiveName, local: String, guestPath: String, g: Guestfs, workDirectory: String) throws -> HiveIntegrity {
        let dir = (guestPath as NSString).deletingLastPathComponent
        let file = (guestPath as NSString).lastPathComponent.lowercased()
        let logNames = ((try? g.ls(dir)) ?? []).filter { ["\(file).log", "\(file).log1", "\(file).log2"].contains($0.lowercased()) }.sorted()
        var logs: [(name: String, bytes: [UInt8])] = []
        var logPaths: [String] = []
        for name in logNames {
            let guest = dir + "/" + name
            guard (try? g.isFile(guest)) == true else { continue }
            let localLog = workDirectory + "/" + name
            do {
                try checkSize(g, guest, limit: RegistryLimits.maxLogFile, what: "the \(hive.rawValue) transaction log")
                try g.download(guest, to: localLog)
            } catch let e as GuestfsError {
                throw RemedyError(.hiveUnreadable, "cannot read the \(hive.rawValue) transaction log \(guest): \(e.message)", cause: e)
            }
            logs.append((name, (try? HostFile.read(localLog, followLinks: false, limit: RegistryLimits.maxLogFile)) ?? []))
            logPaths.append(guest)
        }
        let bytes = (try? HostFile.read(local, followLinks: false, limit: RegistryLimits.maxHiveFile)) ?? []
        let base: BaseBlock
        do {
            base = try BaseBlock(bytes)
        } catch let e as RegfError {
            throw RemedyError(.hiveUnreadable, "the \(hive.rawValue) hive (\(guestPath)) is not a valid registry hive: \(e.message)", cause: e)
        }
        var info = HiveIntegrity(hive: hive, dirty: base.isDirty, primarySequence: base.primarySequence, secondarySequence: base.secondarySequence,
                                 checksumValid: base.checksumValid, logs: logPaths, replayed: [], highestLogSequence: 0)
        guard base.isDirty else {
            info.highestLogSequence = (try? HiveRecovery.recover(primary: bytes, logs: logs).highestLogSequence) ?? 0
            return info
        }
        do {
            let r = try HiveRecovery.recover(primary: bytes, logs: logs)
            // The replayed hive is checked before it is written: bounded, and sound bins.
            if let problem = try HiveCheck(r.bytes).problems.first {
                throw RegfError("the replayed hive is not sound: \(problem)")
            }
            try FileManager.default.moveItem(atPath: local, toPath: local + ".orig")
            guard FileManager.default.createFile(atPath: local, contents: Data(r.bytes)) else {
                throw RemedyError(.writeFailed, "cannot write the recovered \(hive.rawValue) hive locally")
            }
            info.replayed = r.applied
            info.highestLogSequence = r.highestLogSequence
            return info
        } catch let e as RegfError {
            throw RemedyError(.hiveUnrecoverable, "the \(hive.rawValue) hive (\(guestPath)) was not cleanly closed by Windows and cannot be recovered: \(e.message); "
                              + "nothing was changed (boot the VM once and shut it down cleanly, then export it again)", cause: e)
        }
    }

    /// Refuses to download a guest file larger than `limit` (its size from the appliance, before any byte is read).
    static func checkSize(_ g: Guestfs, _ path: String, limit: Int, what: String) throws {
        let size = try g.fileSize(path)
        guard size <= Int64(limit) else {
            throw RemedyError(.hiveUnreadable, "\(what) (\(path)) is \(size) bytes, more than remedy accepts (\(limit) bytes): not a real hive")
        }
    }

    static func makeWorkDirectory() throws -> String {
        var template = Array((NSTemporaryDirectory() + "/remedy.XXXXXX").utf8CString)
        guard let p = mkdtemp(&template) else {
            throw RemedyError(.writeFailed, "cannot create a temporary directory: \(String(cString: strerror(errno)))")
        }
        return String(cString: p)
    }

    static func openHive(_ hive: HiveName, _ local: String, guest: String) throws -> Hive {
        do {
            return try Hive(path: local)
        } catch let e as HivexError {
            throw RemedyError(.hiveUnreadable, "the \(hive.rawValue) hive (\(guest)) is not a valid registry hive: \(String(cString: strerror(e.errno)))", cause: e)
        }
    }

    /// ControlSet00N keys and their roles from `SYSTEM\Select`.
    static func controlSets(_ system: Hive, guest: String) throws -> ([ControlSet], String) {
        do {
            let root = try system.root()
            guard let select = try system.child(of: root, named: "Select") else {
                throw RemedyError(.hiveUnreadable, "the SYSTEM hive (\(guest)) has no Select key: cannot tell which control set Windows boots")
            }
            var roleOf: [Int: [ControlSet.Role]] = [:]
            var current = 0
            for role in ControlSet.Role.allCases {
                if case .dword(let n)? = try system.value(of: select, named: role.rawValue), n > 0 {
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
                guard lower.hasPrefix("controlset"), let n = Int(lower.dropFirst(10)), lower.count == 13 else { continue }
                sets.append(ControlSet(name: name, roles: roleOf[n] ?? []))
            }
            let currentName = String(format: "ControlSet%03d", current)
            guard sets.contains(where: { $0.name.lowercased() == currentName.lowercased() }) else {
                throw RemedyError(.hiveUnreadable, "Select\\Current names \(currentName), which is not in the SYSTEM hive (\(guest))")
            }
            return (sets.sorted { $0.name < $1.name }, sets.first { $0.name.lowercased() == currentName.lowercased() }!.name)
        } catch let e as HivexError {
            throw RemedyError(.hiveUnreadable, "the SYSTEM hive (\(guest)) is damaged: \(e)", cause: e)
        }
    }

    /// Reads the subtrees the requirements name into plain values.
    public func facts(for requirements: [RegistryRequirement]) throws -> ImageFacts {
        ImageFacts(image: imageInfo, os: os, registry: try Self.snapshot(openHives, requirements, image: imagePath),
                   hives: integrity.values.sorted { $0.hive < $1.hive }, volume: volume)
    }

    /// Reads requirements from open hives into a snapshot.
    static func snapshot(_ hives: [HiveName: Hive], _ requirements: [RegistryRequirement], image: String) throws -> RegistrySnapshot {
        var snapshot = RegistrySnapshot()
        for r in requirements {
            guard let hive = hives[r.hive] else {
                if r.hive == .sam {   // optional: an image without a readable SAM reads as one without accounts
                    snapshot.insert(.sam, r.path, nil)
                    continue
                }
                throw RemedyError(.hiveUnreadable, image: image, "the \(r.hive.rawValue) hive is not read by remedy yet")
            }
            do {
                let node = try hive.node(at: r.path.description)
                snapshot.insert(r.hive, r.path, try node.map { try read(hive, $0, depth: r.depth) })
            } catch let e as HivexError {
                throw RemedyError(.hiveUnreadable, image: image, "reading \(r.hive.rawValue)\\\(r.path): \(e)", cause: e)
            }
        }
        return snapshot
    }

    static func read(_ hive: Hive, _ node: HiveNode, depth: Int) throws -> RegistryKey {
        var key = RegistryKey(name: try hive.name(of: node), values: try hive.values(of: node))
        if depth > 0 {
            key.subkeys = try hive.children(of: node).map { try read(hive, $0, depth: depth - 1) }
        }
        return key
    }

    /// Plans the policy against this image.
    public func plan(policy: Policy) throws -> Plan {
        var plan = Planner.plan(facts: try facts(policy: policy), policy: policy)
        source?.annotate(&plan)
        return plan
    }

    /// Everything the policy's rules need: registry subtrees, payloads, files in the image.
    public func facts(policy: Policy) throws -> ImageFacts {
        try Fault.hang("plan", image: imagePath, guestfs: g)
        if resolvedPayloads == nil { (virtioDrivers, virtioTools) = Self.virtioSelection(policy) }
        let payloads = try resolvePayloads()
        var facts = try facts(for: Planner.requirements(policy: policy, os: os, payloads: payloads))
        facts.payloads = payloads
        facts.files = try fileFacts(Planner.fileRequirements(policy: policy, facts: facts))
        return facts
    }

    /// What a policy takes from virtio-win: the INFs of the drivers its `virtio-drivers` rule injects (none
    /// without the rule: no INF is fetched or parsed), and the programs its `guest-agent` rule installs (none without it).
    static func virtioSelection(_ policy: Policy) -> (drivers: Set<String>, tools: Set<VirtioWin.Tool>) {
        ((policy.rule("virtio-drivers") as? VirtioDriversRule).map { Set($0.drivers) } ?? [],
         (policy.rule("guest-agent") as? GuestAgentRule)?.tools ?? [])
    }

    /// Reads the inputs into payload facts once: the virtio-win drivers for this Windows (from the host
    /// tree, or from the ISO mounted read-only in the appliance, one mount for all files) and the payload files.
    /// INF names (without `.inf`) of the virtio-win drivers to read, or nil for all (set from the policy).
    var virtioDrivers: Set<String>?
    /// The programs beside the drivers to read from virtio-win (guest agent MSI, balloon service; set from the policy).
    var virtioTools: Set<VirtioWin.Tool> = []

    public func resolvePayloads() throws -> PayloadFacts {
        if let done = resolvedPayloads { return done }
        var facts = PayloadFacts()
        do {
            facts.files = try PayloadResolver.files(inputs)
        } catch let e as RemedyError {
            throw e.with(image: imagePath)
        }
        for (name, path) in inputs.files {
            payloadRoots[name] = (URL(fileURLWithPath: path).standardizedFileURL.path as NSString).deletingLastPathComponent
        }
        if let source = inputs.virtioWin {
            if let iso = isoDevice {
                // The ISO's listing and the files read from it are kept for the whole process: the images of a
                // batch share them, and the ISO is mounted only while something is still missing.
                facts.virtio = try ISOCache.shared.with(iso: source) { entry in
                    payloadRoots["virtio-win"] = entry.root
                    var mounted = false
                    func mount() throws {
                        guard !mounted else { return }
                        try g.umountAll()
                        appliance.mounted = nil
                        do {
                            try g.mountReadOnly(iso, at: "/")
                        } catch let e as GuestfsError {
                            throw RemedyError(.virtioWinInvalid, image: imagePath, "the virtio-win ISO \(source) cannot be mounted: \(e.message)", cause: e)
                        }
                        mounted = true
                    }
                    defer { if mounted { try? g.umountAll() } }
                    return try PayloadResolver.virtio(
                        source: source, kind: "iso", os: os, drivers: virtioDrivers, tools: virtioTools,
                        list: {
                            if let known = entry.listing { return known }
                            try mount()
                            entry.listing = Self.leaves(try self.g.find("/"))
                            return entry.listing!
                        },
                        regular: { paths in
                            let unknown = paths.filter { !entry.regular.contains($0) }
                            guard !unknown.isEmpty else { return }
                            try mount()
                            try self.requireRegularInISO(unknown, source: source)
                            entry.regular.formUnion(unknown)
                        },
                        fetch: { paths in
                            guard !paths.isEmpty else { return }
                            try mount()
                            try self.fetchFromISO(paths, into: entry.root)
                        }, cache: entry.root, image: imagePath)
                }
            } else {
                payloadRoots["virtio-win"] = URL(fileURLWithPath: source).standardizedFileURL.path
                facts.virtio = try PayloadResolver.tree(source, os: os, drivers: virtioDrivers, tools: virtioTools, image: imagePath)
            }
        }
        resolvedPayloads = facts
        return facts
    }

    /// Refuses the first of `paths` (relative, in the mounted ISO) that is not a regular file: a Rock Ridge symbolic
    /// link (whose target would be read on the host once extracted), a device or a FIFO. One lstat call per directory.
    func requireRegularInISO(_ paths: [String], source: String) throws {
        let byDirectory = Dictionary(grouping: paths) { ($0 as NSString).deletingLastPathComponent }
        for (dir, files) in byDirectory.sorted(by: { $0.key < $1.key }) {
            let names = files.map { ($0 as NSString).lastPathComponent }
            let modes: [Int64]
            do {
                modes = try g.lstatModes("/" + dir, names)
            } catch let e as GuestfsError {
                throw RemedyError(.virtioWinInvalid, image: imagePath, "cannot read \(dir) in the virtio-win ISO \(source): \(e.message)", cause: e)
            }
            for (name, mode) in zip(names, modes) {
                let kind: HostFile.Kind? = mode < 0 ? nil : HostFile.kind(mode_t(truncatingIfNeeded: mode))
                guard kind == .regular else {
                    throw RemedyError(.virtioWinInvalid, image: imagePath, "\(source): \(dir.isEmpty ? "" : dir + "/")\(name) is "
                                      + "\(kind.map { "a \($0.rawValue)" } ?? "missing"), not a regular file; only regular files are taken from virtio-win")
                }
            }
        }
    }

    /// Copies files from the mounted ISO: one tar stream per directory (a round trip per file costs more than the
    /// bytes), unpacked below `cache` with the host's tar.
    func fetchFromISO(_ paths: [String], into cache: String) throws {
        let byDirectory = Dictionary(grouping: paths) { ($0 as NSString).deletingLastPathComponent }
        for (dir, files) in byDirectory.sorted(by: { $0.key < $1.key }) {
            let local = "\(cache)/\(dir)"
            try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
            let tar = workDirectory + "/iso.tar"
            do {
                try g.tarOut("/" + dir, to: tar)
            } catch let e as GuestfsError {
                throw RemedyError(.virtioWinInvalid, image: imagePath, "cannot read \(dir) from the virtio-win ISO: \(e.message)", cause: e)
            }
            try HostTool.run("/usr/bin/tar", ["-x", "-f", tar, "-C", local, "--no-same-owner", "--no-same-permissions"]
                             + files.map { "./" + ($0 as NSString).lastPathComponent }, image: imagePath)
            try? FileManager.default.removeItem(atPath: tar)
        }
    }

    /// The entries of a `find` listing that have nothing below them (the files), without asking the appliance
    /// about each one: an ISO lists a thousand entries, and each call costs a round trip.
    static func leaves(_ paths: [String]) -> [String] {
        var parents = Set<String>()
        for p in paths {
            var dir = (p as NSString).deletingLastPathComponent
            while !dir.isEmpty && parents.insert(dir).inserted { dir = (dir as NSString).deletingLastPathComponent }
        }
        return paths.filter { !parents.contains($0) }
    }

    /// The local file a plan's `source` names.
    public func localSource(_ source: String) -> String? {
        guard let colon = source.firstIndex(of: ":") else { return nil }
        guard let root = payloadRoots[String(source[..<colon])] else { return nil }
        return root + "/" + source[source.index(after: colon)...]
    }

    /// Looks at the files rules asked about, in the Windows filesystem (read-only): one listing per
    /// directory, then a checksum for each file that exists.
    func fileFacts(_ requirements: [FileRequirement]) throws -> FileSnapshot {
        var snapshot = FileSnapshot()
        guard !requirements.isEmpty else { return snapshot }
        try mountReadOnly()
        directories = [:]
        for r in requirements {
            let key = FileSnapshot.key(r.path)
            guard let path = resolveExisting(r.path), (try? g.isFile(path)) == true else {
                snapshot.files[key] = .some(nil)
                continue
            }
            do {
                var file = GuestFile(path: path, size: try g.fileSize(path), sha256: try g.checksum("sha256", path))
                if r.text {
                    let (text, encoding) = TextEncoding.decode(try g.readFile(path))
                    file.text = text
                    file.encoding = encoding
                }
                snapshot.files[key] = .some(file)
            } catch let e as GuestfsError {
                throw RemedyError(.imageUnreadable, image: imagePath, "cannot read \(ImageSession.windowsPath(path)): \(e.message)", cause: e)
            }
        }
        return snapshot
    }

    /// Directory listings of this session's filesystem: lowercased guest path -> (stored path, lowercased name -> stored name),
    /// nil for a directory that does not exist. Kept while one mount lasts; writes update it.
    var directories: [String: (path: String, names: [String: String])?] = [:]

    /// A directory's listing, from the cache or one `ls`.
    func listing(_ dir: String) -> (path: String, names: [String: String])? {
        let key = dir.lowercased()
        if let known = directories[key] { return known }
        var result: (path: String, names: [String: String])?
        if dir == "/" || dir.isEmpty {
            result = ("", [:])
        } else if let parent = listing((dir as NSString).deletingLastPathComponent),
                  let stored = parent.names[(dir as NSString).lastPathComponent.lowercased()] {
            result = (parent.path + "/" + stored, [:])
        }
        if var r = result {
            let names = (try? g.ls(r.path.isEmpty ? "/" : r.path)) ?? []
            for n in names { r.names[n.lowercased()] = n }
            result = r
        }
        directories[key] = .some(result)
        return result
    }

    /// The stored spelling of an existing guest path (NTFS is case-insensitive to Windows, not to the appliance), or nil.
    func resolveExisting(_ path: String) -> String? {
        guard let dir = listing((path as NSString).deletingLastPathComponent),
              let name = dir.names[(path as NSString).lastPathComponent.lowercased()] else { return nil }
        return dir.path + "/" + name
    }

    /// A path to write: the existing directories' stored spelling, the rest as given.
    func resolveForWriting(_ path: String) -> String {
        var parts = path.split(separator: "/").map(String.init)
        var tail: [String] = []
        while !parts.isEmpty {
            if let p = resolveExisting("/" + parts.joined(separator: "/")) {
                return ([p] + tail).joined(separator: "/")
            }
            tail.insert(parts.removeLast(), at: 0)
        }
        return "/" + tail.joined(separator: "/")
    }

    /// Records a file (and its directories) created by this session in the listing cache.
    func noteCreated(_ path: String) {
        var child = path
        var dir = (path as NSString).deletingLastPathComponent
        while true {
            let key = dir.lowercased()
            let name = (child as NSString).lastPathComponent
            if case .some(.some(var l)) = directories[key] {
                l.names[name.lowercased()] = l.names[name.lowercased()] ?? name
                directories[key] = .some(l)
                break
            }
            directories[key] = .some((dir, [name.lowercased(): name]))
            if dir == "/" || dir.isEmpty { break }
            child = dir
            dir = (dir as NSString).deletingLastPathComponent
        }
    }

    /// Mounts this image's Windows filesystem at `/`, read-only, unless it already is (in either mode).
    func mountReadOnly() throws {
        guard appliance.mounted?.device != device else { return }
        directories = [:]
        try g.umountAll()
        appliance.mounted = nil
        try g.mountReadOnly(install.root, at: "/")
        appliance.mounted = (device, false)
    }

    /// Mounts this image's Windows filesystem read-write (apply and rollback only).
    func remountWritable() throws {
        precondition(writable, "remountWritable on a read-only session")
        if let m = appliance.mounted, m.device == device, m.writable { return }
        directories = [:]
        try g.umountAll()
        appliance.mounted = nil
        try g.mount(install.root, at: "/")
        appliance.mounted = (device, true)
        wroteOverlay = true
    }

    /// Mounts the EFI system partition `filesystem` at `/` instead of the Windows filesystem (apply and rollback
    /// of `esp` file changes); ``mountReadOnly()`` / ``remountWritable()`` mount Windows again.
    func mountESP(_ filesystem: String, writable: Bool) throws {
        precondition(!writable || self.writable, "a writable ESP mount on a read-only session")
        directories = [:]
        try g.umountAll()
        appliance.mounted = nil
        if writable { try g.mount(filesystem, at: "/") } else { try g.mountReadOnly(filesystem, at: "/") }
    }

    /// After writing: flush and unmount; an appliance of its own is also
    /// shut down cleanly (a shared one is shut down by its owner).
    func finishWrites() throws {
        try g.sync()
        try g.umountAll()
        appliance.mounted = nil
        if ownsAppliance {
            try Fault.point("before-shutdown", image: imagePath)
            try appliance.shutdown()
            try complete()
        }
    }

    /// After the appliance has flushed and exited cleanly: the overlay is committed into the image (proven, see
    /// ``Overlay``), or converted into the output. An in-place overlay nobody wrote to is dropped. The batch calls
    /// this for each image after shutting its shared appliance down; `apply --output` calls it also when nothing
    /// changed (the output is written all the same).
    public func complete() throws {
        guard let overlay, !overlay.finished else { return }
        if ownsAppliance { try appliance.shutdown() }
        if overlay.output == nil && !wroteOverlay {
            overlay.discard()
            return
        }
        do {
            try overlay.finish()
        } catch {
            throw RemedyError.wrap(error, image: imagePath)
        }
    }

    /// Stops the appliance (if the session owns it) and removes the local working files; an overlay that was not
    /// committed is removed (the image was not touched).
    public func close() {
        for h in openHives.values { h.close() }
        openHives = [:]
        if ownsAppliance { appliance.close() }
        overlay?.discard()
        try? FileManager.default.removeItem(atPath: workDirectory)
        if lockFD >= 0 {
            Glibc.close(lockFD)
            lockFD = -1
        }
        for fd in extentLockFDs { Glibc.close(fd) }
        extentLockFDs = []
        source?.cleanup()
    }

    deinit { close() }

    /// A guest path as Windows shows it (`C:\Windows\...`).
    public static func windowsPath(_ guest: String) -> String {
        "C:" + guest.replacingOccurrences(of: "/", with: "\\")
    }
}

/// What remedy has read from virtio-win ISOs in this process: each ISO's listing and a local copy of the files
/// taken from it, keyed by the ISO's path, size and modification time. One lock serialises reading an ISO, so
/// two appliances of a batch never fetch the same directory at once. The copies are removed when the process ends.
final class ISOCache: @unchecked Sendable {
    static let shared = ISOCache()

    final class Entry {
        let root: String
        var listing: [String]?
        /// Paths checked to be regular files in the ISO.
        var regular = Set<String>()
        init(root: String) { self.root = root }
    }

    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    private static let directory: String? = {
        var template = Array((NSTemporaryDirectory() + "/remedy-virtio-win.XXXXXX").utf8CString)
        guard let p = mkdtemp(&template) else { return nil }
        atexit { ISOCache.removeDirectory() }
        return String(cString: p)
    }()

    static func removeDirectory() {
        if let d = directory { try? FileManager.default.removeItem(atPath: d) }
    }

    func with<T>(iso path: String, _ body: (Entry) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        let size = (attributes?[.size] as? NSNumber)?.int64Value ?? -1
        let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        let key = "\(URL(fileURLWithPath: path).standardizedFileURL.path)|\(size)|\(modified)"
        let entry: Entry
        if let known = entries[key] {
            entry = known
        } else {
            guard let base = Self.directory else {
                throw RemedyError(.writeFailed, "cannot create a temporary directory for the virtio-win ISO: \(String(cString: strerror(errno)))")
            }
            entry = Entry(root: "\(base)/\(entries.count)")
            try FileManager.default.createDirectory(atPath: entry.root, withIntermediateDirectories: true)
            entries[key] = entry
        }
        return try body(entry)
    }
}

