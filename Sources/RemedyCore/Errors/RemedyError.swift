import Guestfs
import Hivex
import RegistryFormat

/// Every failure remedy reports to a user. `code` is stable (scripts may
/// match on it); `message` is one line that says what went wrong; `image`
/// names the image when there is one; `cause` keeps the underlying error.
public struct RemedyError: Error, CustomStringConvertible, Sendable {
    /// The documented error codes (README, "Exit codes and errors"): a closed set, so a script matching on them sees
    /// every code remedy can print, and a new one is a change of this list and of the README.
    public enum Code: String, CaseIterable, Hashable, Sendable, CustomStringConvertible, Codable {
        case imageNotFound = "image-not-found"
        case imageUnreadable = "image-unreadable"
        case imageLocked = "image-locked"
        case unsupportedFormat = "unsupported-format"
        case unsafeImage = "unsafe-image"
        /// qemu cannot update the image in place (streamOptimized/seSparse VMDK, compressed extents, a read-only
        /// file, an OVA/OVF): apply writes a new image with `--output` instead.
        case imageReadOnly = "image-read-only"
        case noOperatingSystem = "no-operating-system"
        case notWindows = "not-windows"
        case multipleOperatingSystems = "multiple-operating-systems"
        case hiveUnreadable = "hive-unreadable"
        case hiveUnrecoverable = "hive-unrecoverable"
        case hibernated = "hibernated"
        case encrypted = "encrypted"
        case applianceFailed = "appliance-failed"
        case applianceTimeout = "appliance-timeout"
        case policyInvalid = "policy-invalid"
        case policyNotFound = "policy-not-found"
        case planMismatch = "plan-mismatch"
        case writeFailed = "write-failed"
        case verifyFailed = "verify-failed"
        case invalidArgument = "invalid-argument"
        /// `--virtio-win` names nothing usable (missing, not an ISO or a virtio-win tree, unreadable INF).
        case virtioWinInvalid = "virtio-win-invalid"
        /// virtio-win has no drivers for the image's Windows version, edition and architecture.
        case virtioWinNoMatch = "virtio-win-no-match"
        /// A host-side step failed for a reason none of the codes above names (the host's temporary directory cannot
        /// be created, a host tool cannot be started): the message says what, and the image is unchanged.
        case hostFailed = "host-failed"
        /// An error remedy did not expect (a bug): the message carries the underlying error.
        case `internal` = "internal"

        public var description: String { rawValue }
    }

    public var code: Code
    public var image: String?
    public var message: String
    public var cause: (any Error)?

    public init(_ code: Code, image: String? = nil, _ message: String, cause: (any Error)? = nil) {
        // A call stopped by its deadline is a timeout, whatever the caller was doing.
        self.code = (cause as? GuestfsError)?.timedOut == true ? .applianceTimeout : code
        self.image = image
        self.message = message
        self.cause = cause
    }

    /// `IMAGE: message` (one line), or just the message when there is no image.
    public var description: String {
        let text = message.replacingOccurrences(of: "\n", with: " ")
        return image.map { "\($0): \(text)" } ?? text
    }

    /// Any error as a RemedyError naming the image (libguestfs errors become `image-unreadable`).
    static func wrap(_ error: any Error, image: String) -> RemedyError {
        switch error {
        case let e as RemedyError: e.with(image: image)
        case let e as GuestfsError:
            RemedyError(.imageUnreadable, image: image, "inspection failed: \(e.message)", cause: e)
        case let e as HivexError: RemedyError(.hiveUnreadable, image: image, "a hive cannot be read: \(e)", cause: e)
        case let e as RegfError: RemedyError(.hiveUnreadable, image: image, "a hive cannot be read: \(e)", cause: e)
        default: RemedyError(.internal, image: image, "\(error)", cause: error)
        }
    }

    func with(image: String) -> RemedyError {
        var copy = self
        if copy.image == nil { copy.image = image }
        return copy
    }
}
