import Foundation
import Guestfs
import Hivex
import RegistryFormat
import SystemPackage

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
        VolumeFacts(
            hibernated: install.hibernated, encrypted: install.encrypted, filesystems: install.filesystems,
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
    /// The guest's directory listings while one mount lasts (apply updates it as it writes).
    let guestDirectories: GuestDirectoryCache
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
    public static func open(
        image path: String, writable: Bool, options: ApplianceOptions, inputs: PayloadInputs = PayloadInputs(),
        output: OutputTarget? = nil
    ) throws -> ImageSession {
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
            let session = try ImageSession(
                prepared, writable: writable, appliance: appliance, device: devices[0], owns: true)
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
        return try Overlay.create(
            base: prepared.path, backing: output == nil ? nil : (prepared.source?.qemuSpec ?? prepared.drivePath),
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
    public static func openMany(
        _ paths: [String], writable: Bool, options: ApplianceOptions,
        inputs: PayloadInputs = PayloadInputs(),
        output: ((String) -> OutputTarget?)? = nil
    ) -> (appliance: Appliance?, sessions: [Result<ImageSession, RemedyError>]) {
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
            appliance = try Appliance.launch(
                drives: prepared.map { drive($0.image, $0.overlay) } + isoDrives(inputs), options: options)
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
                let session = try ImageSession(
                    img, writable: writable, appliance: appliance, device: devices[n], owns: false)
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
        self.guestDirectories = GuestDirectoryCache(appliance: appliance)
        self.device = device
        self.ownsAppliance = owns
        let work = try Self.makeWorkDirectory()
        workDirectory = work
        // Removes the directory (and the customer's hives in it) when this initialiser throws: deinit does not run
        // for a half-built object, so cleanup cannot be left to close().
        var built = false
        defer { if !built { try? FileManager.default.removeItem(atPath: work) } }
        let g = appliance.guestfs
        imageInfo = ImageInfo(
            path: prepared.path, format: prepared.format, fileSize: prepared.fileSize,
            virtualSize: try? g.blockdevSize(device))
        appliance.mounted = nil  // locate unmounts whatever another session left mounted
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
                try HiveReader.checkSize(
                    g, guestPath, limit: RegistryLimits.maxHiveFile, what: "the \(hive.rawValue) hive")
                try g.download(guestPath, to: local)
            } catch let e as GuestfsError {
                throw RemedyError(
                    .hiveUnreadable, "cannot read the \(hive.rawValue) hive (\(guestPath)): \(e.message)", cause: e)
            }
            hivePaths[hive] = guestPath
            localHives[hive] = local
            integrity[hive] = try HiveReader.recoverIfDirty(
                hive, local: local, guestPath: guestPath, g: g, workDirectory: workDirectory)
        }
        let system = try HiveReader.openHive(.system, localHives[.system]!, guest: hivePaths[.system]!)
        let software = try HiveReader.openHive(.software, localHives[.software]!, guest: hivePaths[.software]!)
        openHives = [.system: system, .software: software]
        // SAM is read, never written (local accounts, for the administrator-account check); an unreadable one is left out.
        if let sam = try? g.caseSensitivePath("\(systemRoot)/System32/config/SAM"), (try? g.isFile(sam)) == true,
            (try? HiveReader.checkSize(g, sam, limit: RegistryLimits.maxHiveFile, what: "the SAM hive")) != nil,
            (try? g.download(sam, to: workDirectory + "/SAM")) != nil,
            let hive = try? Hive(path: workDirectory + "/SAM")
        {
            openHives[.sam] = hive
        }

        let (controlSets, current) = try HiveReader.controlSets(system, guest: hivePaths[.system]!)
        let arch: Architecture = {
            guard let cmd = try? g.caseSensitivePath("\(systemRoot)/System32/cmd.exe") else { return .unknown }
            // The PE header's machine field (one pread), or libguestfs's `file` when it does not say.
            if let head = try? g.pread(cmd, count: 4096, offset: 0), let a = WindowsInspector.peArchitecture(head) {
                return a
            }
            return (try? g.fileArchitecture(cmd)).flatMap(Architecture.init(rawValue:)) ?? .unknown
        }()
        os = WindowsInspector.osFacts(
            install, system: system, software: software, arch: arch, controlSets: controlSets, current: current)
        lockFD = prepared.lockFD
        extentLockFDs = prepared.extentLockFDs
        source = prepared.source
        built = true
    }

    static func makeWorkDirectory() throws -> String {
        var template = Array((NSTemporaryDirectory() + "/remedy.XXXXXX").utf8CString)
        guard let p = mkdtemp(&template) else {
            throw RemedyError(.hostFailed, "cannot create a temporary directory: \(Errno.last)")
        }
        return String(cString: p)
    }

    /// Reads the subtrees the requirements name into plain values.
    public func facts(for requirements: [RegistryRequirement]) throws -> ImageFacts {
        ImageFacts(
            image: imageInfo, os: os, registry: try HiveReader.snapshot(openHives, requirements, image: imagePath),
            hives: integrity.values.sorted { $0.hive < $1.hive }, volume: volume)
    }

    /// Plans the policy against this image.
    public func plan(policy: Policy) throws -> Plan {
        var plan = Planner.plan(facts: try facts(policy: policy), policy: policy)
        source?.annotate(&plan)
        return plan
    }

    /// What a policy takes from virtio-win: the INFs of the drivers its `virtio-drivers` rule injects (none
    /// without the rule: no INF is fetched or parsed), and the programs its `guest-agent` rule installs (none without it).
    static func virtioSelection(_ policy: Policy) -> (drivers: Set<String>, tools: Set<VirtioWin.Tool>) {
        (
            policy.rule(VirtioDriversRule.self).map { Set($0.drivers) } ?? [],
            policy.rule(GuestAgentRule.self)?.tools ?? []
        )
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
            payloadRoots[name] =
                FilePath(URL(fileURLWithPath: path).standardizedFileURL.path).removingLastComponent().string
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
                            throw RemedyError(
                                .virtioWinInvalid, image: imagePath,
                                "the virtio-win ISO \(source) cannot be mounted: \(e.message)", cause: e)
                        }
                        mounted = true
                    }
                    defer { if mounted { try? g.umountAll() } }
                    return try PayloadResolver.virtio(
                        source: source, kind: "iso", os: os, drivers: virtioDrivers, tools: virtioTools,
                        list: {
                            if let known = entry.listing { return known }
                            try mount()
                            entry.listing = ISOReader.leaves(try self.g.find("/"))
                            return entry.listing!
                        },
                        regular: { paths in
                            let unknown = paths.filter { !entry.regular.contains($0) }
                            guard !unknown.isEmpty else { return }
                            try mount()
                            try self.isoReader.requireRegular(unknown, source: source)
                            entry.regular.formUnion(unknown)
                        },
                        fetch: { paths in
                            guard !paths.isEmpty else { return }
                            try mount()
                            try self.isoReader.fetch(paths, into: entry.root)
                        }, cache: entry.root, image: imagePath)
                }
            } else {
                payloadRoots["virtio-win"] = URL(fileURLWithPath: source).standardizedFileURL.path
                facts.virtio = try PayloadResolver.tree(
                    source, os: os, drivers: virtioDrivers, tools: virtioTools, image: imagePath)
            }
        }
        resolvedPayloads = facts
        return facts
    }

    /// Reads the virtio-win ISO while it is mounted at `/` (errors name this session's image).
    var isoReader: ISOReader { ISOReader(g: g, image: imagePath, workDirectory: workDirectory) }

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
        guestDirectories.reset()
        for r in requirements {
            let key = FileSnapshot.key(r.path)
            guard let path = guestDirectories.resolveExisting(r.path), (try? g.isFile(path)) == true else {
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
                throw RemedyError(
                    .imageUnreadable, image: imagePath, "cannot read \(ImageSession.windowsPath(path)): \(e.message)",
                    cause: e)
            }
        }
        return snapshot
    }

    /// Mounts this image's Windows filesystem at `/`, read-only, unless it already is (in either mode).
    func mountReadOnly() throws {
        guard appliance.mounted?.device != device else { return }
        guestDirectories.reset()
        try g.umountAll()
        appliance.mounted = nil
        try g.mountReadOnly(install.root, at: "/")
        appliance.mounted = (device, false)
    }

    /// Mounts this image's Windows filesystem read-write (apply and rollback only).
    func remountWritable() throws {
        precondition(writable, "remountWritable on a read-only session")
        if let m = appliance.mounted, m.device == device, m.writable { return }
        guestDirectories.reset()
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
        guestDirectories.reset()
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
    public static func windowsPath(_ guest: String) -> String { GuestPath.windows(guest) }
}
