import Foundation

extension SHA256Hex {
    /// The checksum of a local regular file, read in 1 MiB pieces (a FIFO or device is refused, never waited on;
    /// `followLinks: false` refuses a symbolic link too).
    public static func ofFile(
        _ path: String, followLinks: Bool = true, code: RemedyError.Code = .invalidArgument
    ) throws -> (sha256: String, size: Int64) {
        let h: FileHandle
        do { h = try HostFile.open(path, followLinks: followLinks) } catch {
            throw RemedyError(code, "\(error)")
        }
        defer { try? h.close() }
        var hasher = SHA256Hex.Hasher()
        var size: Int64 = 0
        while let chunk = try h.read(upToCount: 1 << 20), !chunk.isEmpty {
            hasher.update(chunk)
            size += Int64(chunk.count)
        }
        return (hasher.finalize(), size)
    }
}
