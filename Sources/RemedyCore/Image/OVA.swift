import Foundation

/// Where an image's system disk comes from (see the full description in ``ImageSource/resolve(_:kind:)``).
public struct ImageSource: Sendable {
    public enum Kind: String, Sendable, Codable {
        case ova, ovf
        init?(path: String) { return nil }
    }
    public var kind: Kind
    public var format: DiskFormat
    static func resolve(_ path: String, kind: Kind) throws -> ImageSource { throw RemedyError(.unsupportedFormat, image: path, "not yet") }
    func attach() throws -> (String, String, QemuView) { throw RemedyError(.unsupportedFormat, "not yet") }
    func cleanup() {}
}
