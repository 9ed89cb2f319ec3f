import CGuestfs
import Glibc

/// A libguestfs handle: one appliance (a small VM) that does all disk and
/// filesystem access for the drives added to it.
///
/// The handle owns the C handle and closes it on `close()` or deinit. It is
/// not thread-safe: use it from one thread at a time. libguestfs's default
/// error handler is switched off, so nothing is printed behind the caller's
/// back; every failure is thrown as a ``GuestfsError``.
public final class Guestfs {
    private var handle: OpaquePointer?
    /// Watches every call made through this handle (not the launch, which has its own): told when a call starts
    /// and ends, it can stop the appliance when one takes too long, so the blocked call returns an error.
    public var deadline: (any GuestfsDeadline)?

    /// Creates a handle. Environment variables (`LIBGUESTFS_*`) are not read:
    /// the caller configures the handle explicitly.
    public init() throws {
        guard let h = remedy_guestfs_create_no_environment() else {
            throw GuestfsError(function: "create", message: "could not create a libguestfs handle", errno: Glibc.errno)
        }
        guestfs_set_error_handler(h, nil, nil)
        handle = h
    }

    deinit {
        if let h = handle { guestfs_close(h) }
    }

    /// Closes the handle. If the appliance is running it is killed: call
    /// ``shutdown()`` first after writes, to flush them and see errors.
    public func close() {
        if let h = handle { guestfs_close(h) }
        handle = nil
    }

    // MARK: - Plumbing

    private func h(_ function: String) throws -> OpaquePointer {
        guard let h = handle else {
            throw GuestfsError(function: function, message: "handle is closed")
        }
        return h
    }

    private func lastError(_ function: String) -> GuestfsError {
        if let expired = deadline?.expired {
            // The appliance was stopped because a call overran its deadline: say so, not "connection closed".
            return GuestfsError(function: function, message: expired, timedOut: true)
        }
        guard let h = handle else { return GuestfsError(function: function, message: "handle is closed") }
        let message = guestfs_last_error(h).map { String(cString: $0) } ?? "unknown error"
        return GuestfsError(function: function, message: message, errno: guestfs_last_errno(h))
    }

    /// Runs one C call under the deadline.
    private func timed<T>(_ function: String, _ body: () -> T) -> T {
        guard let d = deadline else { return body() }
        d.begin(function)
        defer { d.end() }
        return body()
    }

    @discardableResult
    private func call(_ function: String, _ body: (OpaquePointer) -> Int32) throws -> Int32 {
        let h = try h(function)
        let rc = timed(function) { body(h) }
        if rc == -1 { throw lastError(function) }
        return rc
    }

    private func call64(_ function: String, _ body: (OpaquePointer) -> Int64) throws -> Int64 {
        let h = try h(function)
        let rc = timed(function) { body(h) }
        if rc == -1 { throw lastError(function) }
        return rc
    }

    private func string(_ function: String, _ body: (OpaquePointer) -> UnsafeMutablePointer<CChar>?) throws -> String {
        let h = try h(function)
        guard let p = timed(function, { body(h) }) else { throw lastError(function) }
        defer { free(p) }
        return String(cString: p)
    }

    private func stringList(
        _ function: String, _ body: (OpaquePointer) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
    ) throws -> [String] {
        let h = try h(function)
        guard let list = timed(function, { body(h) }) else { throw lastError(function) }
        defer { free(list) }
        var result: [String] = []
        var i = 0
        while let p = list[i] {
            result.append(String(cString: p))
            free(p)
            i += 1
        }
        return result
    }

    /// Sleeps in the appliance (a call that takes as long as asked: used to test deadlines).
    public func sleep(_ seconds: Int) throws { try call("sleep") { guestfs_sleep($0, Int32(seconds)) } }

    // MARK: - Configuration

    /// Backend settings such as `force_tcg` (libguestfs `set_backend_settings`).
    public func setBackendSettings(_ settings: [String]) throws {
        var cStrings: [UnsafeMutablePointer<CChar>?] = settings.map { strdup($0) }
        cStrings.append(nil)
        defer { cStrings.forEach { free($0) } }
        try call("set_backend_settings") { h in
            cStrings.withUnsafeBufferPointer { guestfs_set_backend_settings(h, $0.baseAddress) }
        }
    }

    public func setBackend(_ backend: String) throws {
        try call("set_backend") { guestfs_set_backend($0, backend) }
    }

    /// The qemu binary libguestfs starts (libguestfs `get_hv`).
    public func hypervisor() throws -> String { try string("get_hv") { guestfs_get_hv($0) } }

    /// Another program to start instead of qemu, called with qemu's arguments (libguestfs `set_hv`).
    public func setHypervisor(_ path: String) throws {
        try call("set_hv") { guestfs_set_hv($0, path) }
    }

    /// Appliance memory in MiB.
    public func setMemsize(_ mib: Int) throws {
        try call("set_memsize") { guestfs_set_memsize($0, Int32(mib)) }
    }

    /// Extra text appended to the appliance kernel command line.
    public func setAppend(_ append: String) throws {
        try call("set_append") { guestfs_set_append($0, append) }
    }

    /// Adds a disk image. `format` should always be given for untrusted
    /// images: letting qemu probe the format of a raw image is unsafe.
    public func addDrive(_ path: String, format: String?, readonly: Bool, cacheMode: String? = nil) throws {
        try call("add_drive") { h in
            withOptionalCString(format) { fmt in
                withOptionalCString(cacheMode) { cache in
                    var opts = guestfs_add_drive_opts_argv()
                    opts.bitmask = REMEDY_ADD_DRIVE_READONLY
                    opts.readonly = readonly ? 1 : 0
                    if let fmt {
                        opts.bitmask |= REMEDY_ADD_DRIVE_FORMAT
                        opts.format = fmt
                    }
                    if let cache {
                        opts.bitmask |= REMEDY_ADD_DRIVE_CACHEMODE
                        opts.cachemode = cache
                    }
                    return guestfs_add_drive_opts_argv(h, path, &opts)
                }
            }
        }
    }

    /// Boots the appliance. Blocks until it is up or has failed.
    public func launch() throws {
        try call("launch") { guestfs_launch($0) }
    }

    /// Flushes and stops the appliance; errors from the final writes surface here.
    public func shutdown() throws {
        try call("shutdown") { guestfs_shutdown($0) }
    }

    /// libguestfs debug messages (to stderr unless an event callback takes them).
    public func setVerbose(_ on: Bool) throws {
        try call("set_verbose") { guestfs_set_verbose($0, on ? 1 : 0) }
    }

    public func setTrace(_ on: Bool) throws {
        try call("set_trace") { guestfs_set_trace($0, on ? 1 : 0) }
    }

    // MARK: - Inspection

    /// Inspects every filesystem; returns the root devices of the operating systems found.
    public func inspectOS() throws -> [String] {
        try stringList("inspect_os") { guestfs_inspect_os($0) }
    }

    public func inspectProductName(_ root: String) throws -> String {
        try string("inspect_get_product_name") { guestfs_inspect_get_product_name($0, root) }
    }
    public func inspectArch(_ root: String) throws -> String {
        try string("inspect_get_arch") { guestfs_inspect_get_arch($0, root) }
    }
    public func inspectHostname(_ root: String) throws -> String {
        try string("inspect_get_hostname") { guestfs_inspect_get_hostname($0, root) }
    }
    public func inspectMajorVersion(_ root: String) throws -> Int {
        Int(try call("inspect_get_major_version") { guestfs_inspect_get_major_version($0, root) })
    }
    public func inspectMinorVersion(_ root: String) throws -> Int {
        Int(try call("inspect_get_minor_version") { guestfs_inspect_get_minor_version($0, root) })
    }
    public func inspectWindowsCurrentControlSet(_ root: String) throws -> String {
        try string("inspect_get_windows_current_control_set") {
            guestfs_inspect_get_windows_current_control_set($0, root)
        }
    }

    public func listDevices() throws -> [String] { try stringList("list_devices") { guestfs_list_devices($0) } }
    public func listPartitions() throws -> [String] {
        try stringList("list_partitions") { guestfs_list_partitions($0) }
    }

    public func vfsType(_ device: String) throws -> String { try string("vfs_type") { guestfs_vfs_type($0, device) } }
    public func blockdevSize(_ device: String) throws -> Int64 {
        try call64("blockdev_getsize64") { guestfs_blockdev_getsize64($0, device) }
    }
    public func partitionTableType(_ device: String) throws -> String {
        try string("part_get_parttype") { guestfs_part_get_parttype($0, device) }
    }
    public func fileArchitecture(_ path: String) throws -> String {
        try string("file_architecture") { guestfs_file_architecture($0, path) }
    }

    // MARK: - Mounting and files

    public func mount(_ device: String, at mountpoint: String) throws {
        try call("mount") { guestfs_mount($0, device, mountpoint) }
    }
    public func mountReadOnly(_ device: String, at mountpoint: String) throws {
        try call("mount_ro") { guestfs_mount_ro($0, device, mountpoint) }
    }
    public func umountAll() throws { try call("umount_all") { guestfs_umount_all($0) } }
    public func sync() throws { try call("sync") { guestfs_sync($0) } }
    /// Drops the guest kernel's caches (1 page cache, 2 dentries and inodes, 3 both): later reads come from the drives.
    public func dropCaches(_ what: Int32 = 3) throws { try call("drop_caches") { guestfs_drop_caches($0, what) } }
    /// The process id of the appliance's qemu (direct backend).
    public func pid() throws -> Int32 { try call("get_pid") { guestfs_get_pid($0) } }

    /// Resolves a path case-insensitively, as Windows would (the result may not exist yet in its last element).
    public func caseSensitivePath(_ path: String) throws -> String {
        try string("case_sensitive_path") { guestfs_case_sensitive_path($0, path) }
    }
    public func isFile(_ path: String) throws -> Bool { try call("is_file") { guestfs_is_file($0, path) } == 1 }
    public func isDir(_ path: String) throws -> Bool { try call("is_dir") { guestfs_is_dir($0, path) } == 1 }
    public func exists(_ path: String) throws -> Bool { try call("exists") { guestfs_exists($0, path) } == 1 }
    public func fileSize(_ path: String) throws -> Int64 { try call64("filesize") { guestfs_filesize($0, path) } }
    public func mkdirP(_ path: String) throws { try call("mkdir_p") { guestfs_mkdir_p($0, path) } }
    public func rm(_ path: String) throws { try call("rm") { guestfs_rm($0, path) } }
    public func rmF(_ path: String) throws { try call("rm_f") { guestfs_rm_f($0, path) } }
    /// A small guest file's content (the protocol limit is a few MB).
    public func readFile(_ path: String) throws -> [UInt8] {
        try buffer("read_file") { guestfs_read_file($0, path, &$1) }
    }
    /// Up to `count` bytes of a guest file from `offset`.
    public func pread(_ path: String, count: Int, offset: Int64) throws -> [UInt8] {
        try buffer("pread") { guestfs_pread($0, path, Int32(count), offset, &$1) }
    }
    /// The bytes of a buffer a call returns with its size (read_file, pread, pread_device), copied and freed.
    private func buffer(
        _ function: String, _ body: (OpaquePointer, inout Int) -> UnsafeMutablePointer<CChar>?
    ) throws -> [UInt8] {
        let h = try h(function)
        var size = 0
        guard let p = timed(function, { body(h, &size) }) else { throw lastError(function) }
        defer { free(p) }
        return p.withMemoryRebound(to: UInt8.self, capacity: size) {
            Array(UnsafeBufferPointer(start: $0, count: size))
        }
    }
    /// Writes `bytes` into the file at `offset` (extending it when the offset is past its end), looping over the
    /// partial writes guestfsd may make. Keep `bytes` under 2 MiB: one message carries it.
    public func pwrite(_ path: String, _ bytes: [UInt8], offset: Int64) throws {
        var done = 0
        while done < bytes.count {
            let n = try call("pwrite") { h in
                bytes.withUnsafeBufferPointer { buf in
                    (buf.baseAddress! + done).withMemoryRebound(to: CChar.self, capacity: buf.count - done) {
                        guestfs_pwrite(h, path, $0, buf.count - done, offset + Int64(done))
                    }
                }
            }
            guard n > 0 else {
                throw GuestfsError(function: "pwrite", message: "\(path): nothing written at \(offset)")
            }
            done += Int(n)
        }
    }
    /// Sets the file's size: cut, or extended with zeros.
    public func truncateSize(_ path: String, _ size: Int64) throws {
        try call("truncate_size") { guestfs_truncate_size($0, path, size) }
    }
    public func touch(_ path: String) throws { try call("touch") { guestfs_touch($0, path) } }
    public func rmRf(_ path: String) throws { try call("rm_rf") { guestfs_rm_rf($0, path) } }
    public func ls(_ path: String) throws -> [String] { try stringList("ls") { guestfs_ls($0, path) } }
    /// Every file and directory below `directory`, as paths relative to it (one call, however deep).
    public func find(_ directory: String) throws -> [String] { try stringList("find") { guestfs_find($0, directory) } }
    /// The `st_mode` of each of `names` in `directory`, from lstat (a symbolic link is reported as one, never
    /// followed); one call for the whole directory. A name that does not exist gives -1.
    public func lstatModes(_ directory: String, _ names: [String]) throws -> [Int64] {
        let h = try h("lstatnslist")
        var cStrings: [UnsafeMutablePointer<CChar>?] = names.map { strdup($0) }
        cStrings.append(nil)
        defer { cStrings.forEach { free($0) } }
        guard
            let list = timed(
                "lstatnslist",
                { cStrings.withUnsafeMutableBufferPointer { guestfs_lstatnslist(h, directory, $0.baseAddress) } })
        else {
            throw lastError("lstatnslist")
        }
        defer { guestfs_free_statns_list(list) }
        return (0..<Int(list.pointee.len)).map { list.pointee.val[$0].st_ino == -1 ? -1 : list.pointee.val[$0].st_mode }
    }
    /// A checksum of a guest file computed inside the appliance (`sha256`, `md5`, ...).
    public func checksum(_ type: String, _ path: String) throws -> String {
        try string("checksum") { guestfs_checksum($0, type, path) }
    }
    /// Copies a file inside the guest.
    public func cp(_ source: String, _ destination: String) throws {
        try call("cp") { guestfs_cp($0, source, destination) }
    }
    /// rename(2) inside the guest: atomic replacement within one directory.
    public func rename(_ source: String, _ destination: String) throws {
        try call("rename") { guestfs_rename($0, source, destination) }
    }
    /// Copies a guest file to a local file.
    public func download(_ remote: String, to local: String) throws {
        try call("download") { guestfs_download($0, remote, local) }
    }
    /// Copies a local file into the guest.
    public func upload(_ local: String, to remote: String) throws {
        try call("upload") { guestfs_upload($0, local, remote) }
    }
    /// Unpacks a local (uncompressed) tar file into a guest directory: many files in one round trip.
    public func tarIn(_ tarfile: String, to directory: String) throws {
        try call("tar_in") { guestfs_tar_in($0, tarfile, directory) }
    }
    /// Packs a guest directory into a local tar file.
    public func tarOut(_ directory: String, to tarfile: String) throws {
        try call("tar_out") { guestfs_tar_out($0, directory, tarfile) }
    }
    /// Checksums every regular file below a guest directory into a local file (`sha256sum` format), in one call.
    public func checksumsOut(_ type: String, _ directory: String, to local: String) throws {
        try call("checksums_out") { guestfs_checksums_out($0, type, directory, local) }
    }

    /// Writes bytes to a guest file (small files only: the protocol limit is a few MB).
    public func write(_ path: String, _ bytes: [UInt8]) throws {
        try call("write") { h in
            bytes.withUnsafeBufferPointer { buf in
                buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: max(buf.count, 1)) {
                    guestfs_write(h, path, $0, buf.count)
                }
            }
        }
    }

    /// An extended attribute of a guest file, not following symlinks (`system.ntfs_acl` on ntfs-3g: the security descriptor).
    public func lgetxattr(_ path: String, _ name: String) throws -> [UInt8] {
        let h = try h("lgetxattr")
        var size = 0
        guard let p = timed("lgetxattr", { guestfs_lgetxattr(h, path, name, &size) }) else {
            throw lastError("lgetxattr")
        }
        defer { free(p) }
        return p.withMemoryRebound(to: UInt8.self, capacity: max(size, 1)) {
            Array(UnsafeBufferPointer(start: $0, count: size))
        }
    }
    /// libguestfs `debug`: a debugging command run by the appliance's daemon (`debug("sh", [command])` runs
    /// `/bin/sh -c command` in the appliance, where the mounted guest is below `/sysroot`); returns its output.
    public func debug(_ subcmd: String, _ args: [String]) throws -> String {
        var cStrings: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        cStrings.append(nil)
        defer { cStrings.forEach { free($0) } }
        return try string("debug") { h in cStrings.withUnsafeBufferPointer { guestfs_debug(h, subcmd, $0.baseAddress) }
        }
    }

    // MARK: - Building disks (used by the fixtures)

    public func partInit(_ device: String, type: String) throws {
        try call("part_init") { guestfs_part_init($0, device, type) }
    }
    public func partAdd(_ device: String, kind: String = "p", startSector: Int64, endSector: Int64) throws {
        try call("part_add") { guestfs_part_add($0, device, kind, startSector, endSector) }
    }
    public func mkfs(_ type: String, _ device: String, label: String? = nil) throws {
        try call("mkfs") { h in
            withOptionalCString(label) { lbl in
                var opts = guestfs_mkfs_opts_argv()
                if let lbl {
                    opts.bitmask |= REMEDY_MKFS_LABEL
                    opts.label = lbl
                }
                return guestfs_mkfs_opts_argv(h, type, device, &opts)
            }
        }
    }

    /// Up to `count` bytes of a device from `offset` (a partition table's sectors).
    public func preadDevice(_ device: String, count: Int, offset: Int64) throws -> [UInt8] {
        try buffer("pread_device") { guestfs_pread_device($0, device, Int32(count), offset, &$1) }
    }

    /// Makes the kernel read the device's partition table again (after it was written with ``pwriteDevice``).
    public func blockdevRereadpt(_ device: String) throws {
        try call("blockdev_rereadpt") { guestfs_blockdev_rereadpt($0, device) }
    }

    /// Raw byte write into a device at an offset (used to stamp disk signatures).
    public func pwriteDevice(_ device: String, _ bytes: [UInt8], offset: Int64) throws {
        try call("pwrite_device") { h in
            bytes.withUnsafeBufferPointer { buf in
                buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buf.count) {
                    guestfs_pwrite_device(h, device, $0, buf.count, offset)
                }
            }
        }
    }
}

private func withOptionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let s else { return body(nil) }
    return s.withCString { body($0) }
}

/// Watches the calls of a handle (see ``Guestfs/deadline``).
public protocol GuestfsDeadline: AnyObject {
    func begin(_ function: String)
    func end()
    /// Why the appliance was stopped, once it was (every later error of the handle says this).
    var expired: String? { get }
}
