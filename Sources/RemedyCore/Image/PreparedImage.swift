import Foundation
import Guestfs
import SystemPackage

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
            throw RemedyError(.imageNotFound, image: path, "cannot access the image: \(Errno.last)")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG || (st.st_mode & S_IFMT) == S_IFBLK else {
            throw RemedyError(.imageUnreadable, image: path, "not a regular file or block device")
        }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RemedyError(.imageUnreadable, image: path, "cannot open: \(Errno.last)") }
        // A block device's stat size is 0: its size is where its end is.
        let fileSize = (st.st_mode & S_IFMT) == S_IFBLK ? max(0, Int64(lseek(fd, 0, SEEK_END))) : Int64(st.st_size)
        // An earlier apply that was interrupted left an overlay or a commit marker: finished or discarded first,
        // under the exclusive lock (so never while another remedy process works on the image).
        let pending = Overlay.pending(path)
        if flock(fd, (writable || pending ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 {
            Glibc.close(fd)
            throw RemedyError(
                .imageLocked, image: path, "the image is locked by another process (another remedy apply?)")
        }
        do {
            var image: PreparedImage
            if let kind = ImageSource.Kind(path: path) {
                let source = try ImageSource.resolve(path, kind: kind)
                image = PreparedImage(path: path, format: source.format, fileSize: fileSize, lockFD: fd)
                image.source = source
                (image.drivePath, image.driveFormat, image.qemu) = try source.attach()
            } else {
                let format = try DiskFormat.detect(path: path)
                if pending {
                    do { try Overlay.recover(path, format: format, notice: notice) } catch {
                        throw RemedyError.wrap(error, image: path)
                    }
                }
                let view = try QemuView.inspect(path, format: format)
                image = PreparedImage(path: path, format: format, fileSize: fileSize, lockFD: fd)
                image.extentLockFDs = try lockExtents(Array(view.files.dropFirst()), exclusive: writable, image: path)
                (image.drivePath, image.driveFormat, image.qemu) = (view.files[0], format.qemuName, view)
            }
            if pending && !writable { flock(fd, LOCK_SH) }
            if writable, let reason = image.readOnlyReason {
                image.source?.cleanup()
                for fd in image.extentLockFDs { Glibc.close(fd) }
                throw RemedyError(
                    .imageReadOnly, image: path,
                    "remedy cannot apply in place: \(reason); write the result to a new image with --output OUT")
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
                let why =
                    fd < 0
                    ? "cannot be opened: \(Errno.last)" : "is locked by another process or another image that uses it"
                if fd >= 0 { Glibc.close(fd) }
                for d in fds { Glibc.close(d) }
                throw RemedyError(
                    fd < 0 ? .imageUnreadable : .imageLocked, image: image, "the image's extent \(f) \(why)")
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
