import Foundation
import Guestfs
import Hivex

/// One image opened in one appliance: inspected, its hives downloaded to a
/// private local directory. Plan and apply both start here, so they see the
/// same facts. Nothing is written to the image unless ``remountWritable()`` is
/// called (apply only), and the drive is attached read-only otherwise.
public final class ImageSession {
    public let imagePath: String
    public let format: DiskFormat
    public let writable: Bool
    public let appliance: Appliance
    public private(set) var os: OSFacts
    public let imageInfo: ImageInfo
    /// Guest paths of the hive files, e.g. `/Windows/System32/config/SYSTEM`.
    public private(set) var hivePaths: [HiveName: String] = [:]
    /// Local copies of the hives as they are in the image.
    public private(set) var localHives: [HiveName: String] = [:]
    public let workDirectory: String
    private var mountpoints: [(mountpoint: String, device: String)] = []
    private var openHives: [HiveName: Hive] = [:]
    private var lockFD: Int32 = -1
    private var mountedWritable = false

    var g: Guestfs { appliance.guestfs }

    /// Opens, inspects and reads the hives of a Windows image.
    public static func open(image path: String, writable: Bool, options: ApplianceOptions) throws -> ImageSession {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw RemedyError(.imageNotFound, image: path, "cannot access the image: \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG || (st.st_mode & S_IFMT) == S_IFBLK else {
            throw RemedyError(.imageUnreadable, image: path, "not a regular file or block device")
        }
        if writable, access(path, W_OK) != 0 {
            throw RemedyError(.imageUnreadable, image: path, "the image is not writable: \(String(cString: strerror(errno)))")
        }
        let format = try DiskFormat.detect(path: path)
        // Two remedy processes never work on the same image at once.
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RemedyError(.imageUnreadable, image: path, "cannot open: \(String(cString: strerror(errno)))") }
        if flock(fd, (writable ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 {
            Glibc.close(fd)
            throw RemedyError(.imageUnreadable, image: path, "the image is locked by another process (another remedy apply?)")
        }
        let appliance: Appliance
        do {
            appliance = try Appliance.launch(drives: [Drive(path: path, format: format.qemuName, readonly: !writable)], options: options)
        } catch let e as RemedyError {
            Glibc.close(fd)
            throw e.with(image: path)
        } catch {
            Glibc.close(fd)
            throw RemedyError(.applianceFailed, image: path, "\(error)", cause: error)
        }
        do {
            let session = try ImageSession(path: path, format: format, fileSize: Int64(st.st_size), writable: writable, appliance: appliance)
            session.lockFD = fd
            return session
        } catch let e as RemedyError {
            appliance.close()
            Glibc.close(fd)
            throw e.with(image: path)
        } catch let e as GuestfsError {
            appliance.close()
            Glibc.close(fd)
            throw RemedyError(.imageUnreadable, image: path, "inspection failed: \(e.message)", cause: e)
        }
    }

    private init(path: String, format: DiskFormat, fileSize: Int64, writable: Bool, appliance: Appliance) throws {
        self.imagePath = path
        self.format = format
        self.writable = writable
        self.appliance = appliance
        workDirectory = try Self.makeWorkDirectory()
        let g = appliance.guestfs

        let virtualSize = try? g.listDevices().first.map { try g.blockdevSize($0) }
        imageInfo = ImageInfo(path: path, format: format.rawValue, fileSize: fileSize, virtualSize: virtualSize ?? nil)

        let roots: [String]
        do {
            roots = try g.inspectOS()
        } catch let e as GuestfsError {
            throw RemedyError(.imageUnreadable, "inspection failed: \(e.message)", cause: e)
        }
        var windows: [String] = []
        var others: [String] = []
        for r in roots {
            let type = (try? g.inspectType(r)) ?? "unknown"
            if type == "windows" { windows.append(r) } else {
                let distro = (try? g.inspectDistro(r)) ?? type
                let product = (try? g.inspectProductName(r)) ?? ""
                others.append("\(type) (\(distro)\(product.isEmpty || product == "unknown" ? "" : ", " + product)) on \(r)")
            }
        }
        guard let root = windows.first else {
            if !others.isEmpty {
                throw RemedyError(.notWindows, "not a Windows image: found " + others.joined(separator: "; "))
            }
            let fs = ((try? g.listFilesystems()) ?? []).map { "\($0.device) \($0.type)" }.joined(separator: ", ")
            throw RemedyError(.noOperatingSystem, "no operating system found (filesystems: \(fs.isEmpty ? "none" : fs))")
        }
        guard windows.count == 1 else {
            throw RemedyError(.multipleOperatingSystems, "more than one Windows installation found (\(windows.joined(separator: ", "))); remedy edits images with exactly one")
        }

        mountpoints = try g.inspectMountpoints(root)
        for m in mountpoints { try g.mountReadOnly(m.device, at: m.mountpoint) }

        let systemRoot = try g.inspectWindowsSystemroot(root)
        // Locate and download the hives.
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
                try g.download(guestPath, to: local)
            } catch let e as GuestfsError {
                throw RemedyError(.hiveUnreadable, "cannot read the \(hive.rawValue) hive (\(guestPath)): \(e.message)", cause: e)
            }
            hivePaths[hive] = guestPath
            localHives[hive] = local
        }
        let system = try Self.openHive(.system, localHives[.system]!, guest: hivePaths[.system]!)
        let software = try Self.openHive(.software, localHives[.software]!, guest: hivePaths[.software]!)
        openHives = [.system: system, .software: software]

        let (controlSets, current) = try Self.controlSets(system, guest: hivePaths[.system]!)
        let cv = try? software.node(at: "Microsoft\\Windows NT\\CurrentVersion")
        let build: String? = cv.flatMap { node in
            switch try? software.value(of: node, named: "CurrentBuildNumber") ?? software.value(of: node, named: "CurrentBuild") {
            case .string(let s)?: s
            default: nil
            }
        }
        // Windows boots from a GPT disk only through UEFI, and from an MBR disk only through BIOS.
        let disk = String(root.reversed().drop(while: \.isNumber).reversed())
        let table = (try? g.partitionTableType(disk)) ?? "unknown"
        os = OSFacts(
            root: root,
            product: (try? g.inspectProductName(root)) ?? "Windows",
            variant: (try? g.inspectProductVariant(root)) ?? "unknown",
            majorVersion: (try? g.inspectMajorVersion(root)) ?? 0,
            minorVersion: (try? g.inspectMinorVersion(root)) ?? 0,
            build: build,
            arch: (try? g.inspectArch(root)) ?? "unknown",
            hostname: try? g.inspectHostname(root),
            systemRoot: systemRoot,
            currentControlSet: current,
            controlSets: controlSets,
            firmware: table == "gpt" ? "uefi" : table == "msdos" ? "bios" : "unknown",
            partitionTable: table)
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
        ImageFacts(image: imageInfo, os: os, registry: try Self.snapshot(openHives, requirements, image: imagePath))
    }

    /// Reads requirements from open hives into a snapshot.
    static func snapshot(_ hives: [HiveName: Hive], _ requirements: [RegistryRequirement], image: String) throws -> RegistrySnapshot {
        var snapshot = RegistrySnapshot()
        for r in requirements {
            guard let hive = hives[r.hive] else {
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
        let facts = try facts(for: Planner.requirements(policy: policy, os: os))
        return Planner.plan(facts: facts, policy: policy)
    }

    /// Unmounts the read-only mounts and mounts the filesystems read-write (apply only).
    func remountWritable() throws {
        precondition(writable, "remountWritable on a read-only session")
        guard !mountedWritable else { return }
        try g.umountAll()
        for m in mountpoints { try g.mount(m.device, at: m.mountpoint) }
        mountedWritable = true
    }

    /// Stops the appliance and removes the local working files.
    public func close() {
        for h in openHives.values { h.close() }
        openHives = [:]
        appliance.close()
        try? FileManager.default.removeItem(atPath: workDirectory)
        if lockFD >= 0 {
            Glibc.close(lockFD)
            lockFD = -1
        }
    }

    deinit { close() }

    /// A guest path as Windows shows it (`C:\Windows\...`).
    public static func windowsPath(_ guest: String) -> String {
        "C:" + guest.replacingOccurrences(of: "/", with: "\\")
    }
}
