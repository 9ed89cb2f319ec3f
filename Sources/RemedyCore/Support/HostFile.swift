import Foundation
import SystemPackage

/// Reading untrusted files on the host: only regular files, never blocking on a FIFO or device, never through a
/// symbolic link where the caller forbids it, never more than a stated size.
///
/// A virtio-win tree (or the local copy of files taken from an ISO) may hold a symbolic link to a host file, a FIFO
/// or a device node: following the link would put a host file into the image, opening a FIFO would wait forever.
/// The file is opened with `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat` on the open descriptor (no window
/// between the check and the read), then read normally.
public enum HostFile {
    /// What a directory entry is, from `lstat` (a link is never followed).
    enum Kind: String {
        case regular = "regular file"
        case directory
        case symlink = "symbolic link"
        case fifo = "FIFO"
        case device = "device"
        case socket, other
    }

    static func kind(_ mode: mode_t) -> Kind {
        switch mode & S_IFMT {
        case S_IFREG: .regular
        case S_IFDIR: .directory
        case S_IFLNK: .symlink
        case S_IFIFO: .fifo
        case S_IFCHR, S_IFBLK: .device
        case S_IFSOCK: .socket
        default: .other
        }
    }

    /// The entry's kind without following a link, nil when it does not exist.
    static func kind(atPath path: String) -> Kind? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return kind(st.st_mode)
    }

    public struct Refused: Error, CustomStringConvertible {
        public var description: String
        /// The file is larger than the limit (it exists and is a regular file).
        public var tooLarge = false
    }

    /// Opens a regular file for reading. `followLinks: false` refuses a symbolic link as the last component (a
    /// user-named input may be a link the user made; a file inside virtio-win media may not).
    public static func open(_ path: String, followLinks: Bool) throws -> FileHandle {
        let fd = Glibc.open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | (followLinks ? 0 : O_NOFOLLOW))
        guard fd >= 0 else {
            let e = errno
            if e == ELOOP, !followLinks { throw Refused(description: "\(path) is a symbolic link, not a regular file") }
            throw Refused(description: "cannot read \(path): \(Errno(rawValue: e))")
        }
        var st = stat()
        guard fstat(fd, &st) == 0, kind(st.st_mode) == .regular else {
            let k = kind(st.st_mode)
            Glibc.close(fd)
            throw Refused(description: "\(path) is a \(k.rawValue), not a regular file")
        }
        // Reads of a regular file never block; clear the flag anyway so the handle behaves as an ordinary one.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    }

    /// A regular file's bytes, refusing one larger than `limit`.
    public static func read(_ path: String, followLinks: Bool, limit: Int) throws -> [UInt8] {
        let h = try open(path, followLinks: followLinks)
        defer { try? h.close() }
        var st = stat()
        if fstat(h.fileDescriptor, &st) == 0, Int(st.st_size) > limit {
            throw Refused(
                description: "\(path) is \(st.st_size) bytes, more than the \(limit) remedy accepts", tooLarge: true)
        }
        var out: [UInt8] = []
        while let chunk = try h.read(upToCount: 1 << 20), !chunk.isEmpty {
            out += chunk
            if out.count > limit {
                throw Refused(description: "\(path) is more than the \(limit) bytes remedy accepts", tooLarge: true)
            }
        }
        return out
    }
}

/// Sizes remedy accepts from untrusted inputs (documented in the README's threat model).
public enum Limits {
    /// An INF file from virtio-win (real ones are tens of KiB).
    public static let infFile = 4 << 20
    /// YAML nodes a policy or payload manifest may expand to, aliases included (a real policy has a few hundred).
    public static let yamlNodes = 100_000
}
