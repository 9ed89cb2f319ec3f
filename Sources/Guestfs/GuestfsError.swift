import CGuestfs
import SystemPackage

/// An error reported by libguestfs, carrying the C function that failed,
/// libguestfs's own message and the errno it recorded (0 when none).
public struct GuestfsError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The libguestfs call that failed, without the `guestfs_` prefix (e.g. `"launch"`).
    public var function: String
    /// The message libguestfs recorded for the failure.
    public var message: String
    /// The errno libguestfs recorded, nil when it recorded none.
    public var errno: Errno?
    /// The call failed because the appliance was stopped when a call overran its deadline.
    public var timedOut: Bool

    public init(function: String, message: String, errno: Int32 = 0, timedOut: Bool = false) {
        self.function = function
        self.message = message
        self.errno = errno == 0 ? nil : Errno(rawValue: errno)
        self.timedOut = timedOut
    }

    public var description: String {
        errno.map { "guestfs_\(function): \(message) (\($0))" } ?? "guestfs_\(function): \(message)"
    }
}
