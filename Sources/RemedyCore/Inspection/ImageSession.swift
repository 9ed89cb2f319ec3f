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
///
/// The session holds the image's identity and inspection's facts, and hands the rest to parts with one job each:
/// opening (`SessionOpening.swift`), the hives (``SessionHives``), what is mounted (``GuestMounts``), the inputs to
/// inject (``SessionPayloads``) and the files rules ask about (``GuestFileReader``).
public final class ImageSession {
    public let imagePath: String
    public let format: DiskFormat
    public let writable: Bool
    public let appliance: Appliance
    /// The image's disk inside the appliance, e.g. `/dev/sdb`.
    public let device: String
    public let os: OSFacts
    public let imageInfo: ImageInfo
    public let workDirectory: String
    let install: WindowsInstall
    let hives: SessionHives
    let mounts: GuestMounts
    let payloads: SessionPayloads
    /// Where the writes of a writable session go (never the image itself); nil for a read-only one.
    let overlay: Overlay?
    private let ownsAppliance: Bool
    private var lockFD: Int32 = -1
    private var extentLockFDs: [Int32] = []
    /// The OVA/OVF the image was read from (nil for a plain image file).
    public let source: ImageSource?

    var g: Guestfs { appliance.guestfs }

    /// Guest paths of the hive files, e.g. `/Windows/System32/config/SYSTEM`.
    public var hivePaths: [HiveName: String] { hives.guestPaths }
    /// Local copies of the hives as they are in the image (recovered from their transaction logs when Windows left
    /// them dirty), made so far: inspection reads a clean hive where it is (see ``SessionHives``).
    public var localHives: [HiveName: String] { hives.localCopies }

    /// Local copies of `wanted`, downloaded now where inspection read them in place. Call before writing anything.
    public func localHives(_ wanted: Set<HiveName>) throws -> [HiveName: String] {
        var out: [HiveName: String] = [:]
        for hive in wanted.sorted() { out[hive] = try hives.local(hive) }
        return out
    }
    /// Each hive's state: dirty or not, logs replayed, logs found.
    public var integrity: [HiveName: HiveIntegrity] { hives.integrity }
    /// What the user gave to inject.
    public var inputs: PayloadInputs { payloads.inputs }
    /// The virtio-win ISO's device in the appliance, when `--virtio-win` is an ISO.
    var isoDevice: String? { payloads.isoDevice }
    /// Payload name -> local directory its `source` paths are relative to.
    public var payloadRoots: [String: String] { payloads.roots }
    /// The guest's directory listings while one mount lasts (apply updates it as it writes).
    var guestDirectories: GuestDirectoryCache { mounts.directories }

    /// Hibernation and encryption as inspection found them.
    public var volume: VolumeFacts {
        VolumeFacts(
            hibernated: install.hibernated, encrypted: install.encrypted, filesystems: install.filesystems,
            bootManager: install.bootManager, inspected: true, esp: install.esp)
    }

    /// Inspects the image on `device` and reads its hives. Called by ``open(image:writable:options:inputs:output:)``
    /// and ``openMany(_:writable:options:inputs:output:)``, which own what comes before (lock, overlay, launch).
    init(
        _ prepared: PreparedImage, writable: Bool, appliance: Appliance, device: String, owns: Bool,
        payloads: SessionPayloads, overlay: Overlay?
    ) throws {
        self.imagePath = prepared.path
        self.format = prepared.format
        self.writable = writable
        self.appliance = appliance
        self.device = device
        self.ownsAppliance = owns
        self.payloads = payloads
        self.overlay = overlay
        let work = try Self.makeWorkDirectory()
        workDirectory = work
        // Removes the directory (and the customer's hives in it) when this initialiser throws: deinit does not run
        // for a half-built object, so cleanup cannot be left to close().
        var built = false
        defer { if !built { try? FileManager.default.removeItem(atPath: work) } }
        let g = appliance.guestfs
        // The disk's size as qemu-img read it before the launch (the appliance's disk is that disk, or an overlay of
        // the same size); asked of the appliance only when qemu-img gave none (a call that runs blockdev there).
        let known = prepared.qemu?.virtualSize ?? 0
        imageInfo = ImageInfo(
            path: prepared.path, format: prepared.format, fileSize: prepared.fileSize,
            virtualSize: known > 0 ? known : try? g.blockdevSize(device))
        appliance.mounted = nil  // locate unmounts whatever another session left mounted
        do {
            install = try WindowsInspector.locate(g, device: device)
        } catch let e as GuestfsError {
            throw RemedyError(.imageUnreadable, "inspection failed: \(e.message)", cause: e)
        }
        appliance.mounted = (device, false)
        mounts = GuestMounts(appliance: appliance, device: device, root: install.root, writable: writable)
        let systemRoot = install.systemRoot
        hives = try SessionHives(g, mounts: mounts, systemRoot: systemRoot, workDirectory: work)
        let (controlSets, current) = try HiveReader.controlSets(hives.system, guest: hives.guestPaths[.system]!)
        let arch: Architecture = {
            guard let cmd = try? g.caseSensitivePath("\(systemRoot)/System32/cmd.exe") else { return .unknown }
            // The PE header's machine field (one pread), or libguestfs's `file` when it does not say.
            if let head = try? g.pread(cmd, count: 4096, offset: 0), let a = WindowsInspector.peArchitecture(head) {
                return a
            }
            return (try? g.fileArchitecture(cmd)).flatMap(Architecture.init(rawValue:)) ?? .unknown
        }()
        os = WindowsInspector.osFacts(
            install, system: hives.system, software: hives.software, arch: arch, controlSets: controlSets,
            current: current)
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
            image: imageInfo, os: os, registry: try hives.snapshot(requirements, image: imagePath),
            hives: integrity.values.sorted { $0.hive < $1.hive }, volume: volume)
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
        payloads.select(for: policy)
        let payloads = try resolvePayloads()
        var facts = try facts(for: Planner.requirements(policy: policy, os: os, payloads: payloads))
        facts.payloads = payloads
        facts.files = try fileFacts(Planner.fileRequirements(policy: policy, facts: facts))
        return facts
    }

    /// Reads the inputs into payload facts once (see ``SessionPayloads``).
    public func resolvePayloads() throws -> PayloadFacts {
        try payloads.resolve(os: os, appliance: appliance, image: imagePath, workDirectory: workDirectory)
    }

    /// The local file a plan's `source` names.
    public func localSource(_ source: String) -> String? { payloads.localSource(source) }

    /// The files rules asked about (see ``GuestFileReader``).
    func fileFacts(_ requirements: [FileRequirement]) throws -> FileSnapshot {
        try GuestFileReader.snapshot(requirements, mounts: mounts, image: imagePath)
    }

    /// Mounts this image's Windows filesystem at `/`, read-only, unless it already is (in either mode).
    func mountReadOnly() throws { try mounts.mountReadOnly() }

    /// Mounts this image's Windows filesystem read-write (apply and rollback only).
    func remountWritable() throws { try mounts.remountWritable() }

    /// Mounts the EFI system partition instead of the Windows filesystem (see ``GuestMounts/mountESP(_:writable:)``).
    func mountESP(_ filesystem: String, writable: Bool) throws { try mounts.mountESP(filesystem, writable: writable) }

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
        if overlay.output == nil && !mounts.wroteOverlay {
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
        hives.close()
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
}
