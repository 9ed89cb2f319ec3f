import Crypto
import Foundation

/// A file in the image as inspection found it.
public struct GuestFile: Sendable, Equatable, Codable {
    /// The guest path as stored (case as on the volume).
    public var path: String
    public var size: Int64
    /// SHA-256 of the content, lowercase hex.
    public var sha256: String
    /// The content as text, for files rules merge into (`scripts.ini`, `gpt.ini`); nil otherwise.
    public var text: String?
    /// How `text` was encoded in the file.
    public var encoding: TextEncoding?

    public init(path: String, size: Int64, sha256: String, text: String? = nil, encoding: TextEncoding? = nil) {
        self.path = path
        self.size = size
        self.sha256 = sha256
        self.text = text
        self.encoding = encoding
    }
}

/// Encodings remedy writes text files in.
public enum TextEncoding: String, Sendable, Codable {
    /// ASCII / UTF-8 without a byte-order mark.
    case utf8 = "utf-8"
    /// UTF-16LE with a byte-order mark (what Windows' own tools write for `scripts.ini`).
    case utf16le = "utf-16le"
    /// Binary content carried as text: each byte one character U+0000-U+00FF (e.g. `Registry.pol`).
    case latin1 = "latin-1"

    public func encode(_ text: String) -> [UInt8] {
        switch self {
        case .utf8: Array(text.utf8)
        case .utf16le: [0xFF, 0xFE] + text.utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        case .latin1: text.unicodeScalars.map { UInt8(truncatingIfNeeded: $0.value) }
        }
    }

    /// Decodes bytes as Windows tools would: a UTF-16LE byte-order mark, else UTF-8 (else Latin-1).
    public static func decode(_ bytes: [UInt8]) -> (String, TextEncoding) {
        if bytes.count >= 2, bytes[0] == 0xFF, bytes[1] == 0xFE {
            var units: [UInt16] = []
            var i = 2
            while i + 1 < bytes.count {
                units.append(UInt16(bytes[i]) | UInt16(bytes[i + 1]) << 8)
                i += 2
            }
            return (String(decoding: units, as: UTF16.self), .utf16le)
        }
        let body = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? Array(bytes.dropFirst(3)) : bytes
        if let s = String(validating: body, as: UTF8.self) { return (s, .utf8) }
        return (String(body.map { Character(Unicode.Scalar($0)) }), .utf8)
    }
}

/// A file a rule needs to know about: present or not, its checksum, and for
/// `text` requirements its content.
public struct FileRequirement: Hashable, Sendable {
    public var path: String
    public var text: Bool
    public init(_ path: String, text: Bool = false) {
        self.path = path
        self.text = text
    }
}

/// What inspection found at the paths rules asked about: lowercased guest path -> the file, or nil when absent.
public struct FileSnapshot: Sendable, Equatable, Codable {
    public var files: [String: GuestFile?]
    public init(files: [String: GuestFile?] = [:]) { self.files = files }

    public static func key(_ path: String) -> String { path.lowercased() }

    /// The file at `path` (nil when absent or never read).
    public func file(_ path: String) -> GuestFile? { files[Self.key(path)] ?? nil }
    public func covers(_ path: String) -> Bool { files[Self.key(path)] != nil }

    public mutating func apply(_ c: FileChange) {
        guard c.volume == nil else { return }
        switch c.op {
        case .write:
            files[Self.key(c.path)] = .some(
                GuestFile(path: c.path, size: c.size, sha256: c.sha256, text: c.content, encoding: c.encoding))
        case .delete:
            files[Self.key(c.path)] = .some(nil)
        }
    }
}

/// One file remedy writes into (or removes from) the image. Copied files
/// name their `source` (`virtio-win:viostor/2k16/amd64/viostor.sys`,
/// `cloudbase-init:CloudbaseInitSetup_x64.msi`); generated files carry
/// their `content`. apply checks `before` (the file's SHA-256 now, nil when
/// absent) against the image and the source's checksum against `sha256`.
public struct FileChange: Sendable, Equatable, Codable {
    public enum Op: String, Sendable, Codable {
        case write = "write-file"
        case delete = "delete-file"
    }

    public var op: Op
    /// Guest path, e.g. `/Windows/System32/drivers/viostor.sys`.
    public var path: String
    public var source: String?
    public var content: String?
    public var encoding: TextEncoding?
    public var size: Int64
    public var sha256: String
    public var before: String?
    /// The filesystem `path` is on when it is not the Windows volume: `esp` (the EFI system partition). Omitted for
    /// the Windows volume. A `source` of `image:esp:<path>` is another file on that filesystem.
    public var volume: String?

    public init(
        op: Op = .write, path: String, source: String? = nil, content: String? = nil, encoding: TextEncoding? = nil,
        size: Int64, sha256: String, before: String?, volume: String? = nil
    ) {
        self.volume = volume
        self.op = op
        self.path = path
        self.source = source
        self.content = content
        self.encoding = encoding
        self.size = size
        self.sha256 = sha256
        self.before = before
    }

    /// A generated text file, unless the image already holds exactly this content.
    static func text(
        _ path: String, _ text: String, encoding: TextEncoding = .utf8, in files: FileSnapshot
    ) -> FileChange? {
        let bytes = encoding.encode(text)
        let sha = SHA256Hex.of(bytes)
        let now = files.file(path)
        if now?.sha256 == sha { return nil }
        return FileChange(
            path: now?.path ?? path, content: text, encoding: encoding, size: Int64(bytes.count), sha256: sha,
            before: now?.sha256)
    }

    /// A copied file, unless the image already holds exactly this content.
    static func copy(_ path: String, from file: PayloadFile, in files: FileSnapshot) -> FileChange? {
        let now = files.file(path)
        if now?.sha256 == file.sha256 { return nil }
        return FileChange(
            path: now?.path ?? path, source: file.source, size: file.size, sha256: file.sha256, before: now?.sha256)
    }

    /// The bytes of a generated file.
    public var contentBytes: [UInt8]? { content.map { (encoding ?? .utf8).encode($0) } }
}

/// A file of a payload (a driver file, an MSI) on the host, as a plan refers to it.
public struct PayloadFile: Sendable, Equatable, Codable {
    /// The file name, lowercased as remedy writes it.
    public var name: String
    /// `<payload>:<relative path>`, resolved by the session to a local file.
    public var source: String
    public var size: Int64
    public var sha256: String

    public init(name: String, source: String, size: Int64, sha256: String) {
        self.name = name
        self.source = source
        self.size = size
        self.sha256 = sha256
    }
}

/// SHA-256 as lowercase hex, by swift-crypto.
public enum SHA256Hex {
    public static func of(_ bytes: [UInt8]) -> String {
        hex(SHA256.hash(data: bytes))
    }

    /// A running checksum over pieces of a file.
    public struct Hasher: Sendable {
        private var state = SHA256()
        public init() {}
        public mutating func update(_ bytes: some DataProtocol) { state.update(data: bytes) }
        public func finalize() -> String { SHA256Hex.hex(state.finalize()) }
    }

    static func hex(_ digest: SHA256.Digest) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(2 * SHA256.Digest.byteCount)
        for b in digest {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
