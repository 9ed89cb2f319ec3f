import Glibc
import SystemPackage

extension Errno {
    /// The calling thread's errno after a failed POSIX call (read it before any other call).
    package static var last: Errno { Errno(rawValue: Glibc.errno) }
}
