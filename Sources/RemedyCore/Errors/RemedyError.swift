import Guestfs

/// Every failure remedy reports to a user. `code` is stable (scripts may
/// match on it); `message` is one line that says what went wrong; `image`
/// names the image when there is one; `cause` keeps the underlying error.
public struct RemedyError: Error, CustomStringConvertible, @unchecked Sendable {
    /// An extensible set of error codes.
    public struct Code: Hashable, Sendable, CustomStringConvertible, Codable {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let imageNotFound = Code("image-not-found")
        public static let imageUnreadable = Code("image-unreadable")
        public static let imageLocked = Code("image-locked")
        public static let unsupportedFormat = Code("unsupported-format")
        public static let unsafeImage = Code("unsafe-image")
        /// qemu cannot update the image in place (streamOptimized/seSparse VMDK, compressed extents, a read-only
        /// file, an OVA/OVF): apply writes a new image with `--output` instead.
        public static let imageReadOnly = Code("image-read-only")
        public static let noOperatingSystem = Code("no-operating-system")
        public static let notWindows = Code("not-windows")
        public static let multipleOperatingSystems = Code("multiple-operating-systems")
        public static let hiveUnreadable = Code("hive-unreadable")
        public static let hiveUnrecoverable = Code("hive-unrecoverable")
        public static let hibernated = Code("hibernated")
        public static let encrypted = Code("encrypted")
        public static let applianceFailed = Code("appliance-failed")
        public static let applianceTimeout = Code("appliance-timeout")
        public static let policyInvalid = Code("policy-invalid")
        public static let policyNotFound = Code("policy-not-found")
        public static let planMismatch = Code("plan-mismatch")
        public static let writeFailed = Code("write-failed")
        public static let verifyFailed = Code("verify-failed")
        public static let invalidArgument = Code("invalid-argument")
        /// `--virtio-win` names nothing usable (missing, not an ISO or a virtio-win tree, unreadable INF).
        public static let virtioWinInvalid = Code("virtio-win-invalid")
        /// virtio-win has no drivers for the image's Windows version, edition and architecture.
        public static let virtioWinNoMatch = Code("virtio-win-no-match")
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
        case let e as GuestfsError: RemedyError(.imageUnreadable, image: image, "inspection failed: \(e.message)", cause: e)
        default: RemedyError(.applianceFailed, image: image, "\(error)", cause: error)
        }
    }

    func with(image: String) -> RemedyError {
        var copy = self
        if copy.image == nil { copy.image = image }
        return copy
    }
}
