import Foundation

/// A payload's manifest (`Payloads/<name>/manifest.yaml`): what the user
/// supplies, how it is installed at first boot, which files are written
/// from the folder's templates, which registry state is cleared. A new
/// payload is a new folder, not new code.
public struct PayloadManifest: Sendable, Equatable, Decodable {
    public struct Known: Sendable, Equatable, Decodable {
        public var file: String
        public var version: String
        public var arch: String?
        public var sha256: String
    }

    public struct Input: Sendable, Equatable, Decodable {
        /// `msi` or `exe`.
        public var kind: String
        /// Releases whose SHA-256 is known; another file is used with a warning.
        public var known: [Known]?
    }

    public struct Install: Sendable, Equatable, Decodable {
        /// The first-boot command; `%PAYLOAD%` is the staged file, `%LOG%` a log file beside it.
        public var command: String
        /// Commands run after a successful install (`%FILES%` is the staged template output).
        public var after: [String]?
        /// Position among first-boot steps (lower runs first).
        public var order: Int?
    }

    public struct Detect: Sendable, Equatable, Decodable {
        /// Installed when this service exists in the current control set.
        public var service: String?
    }

    public struct Template: Sendable, Equatable, Decodable {
        /// Path of the template in the payload folder; `{variant}` is the variant the policy chose.
        public var template: String
        /// Where the file belongs in Windows (`%ProgramFiles%\...`, `%SystemRoot%\...`).
        public var target: String
        public var encoding: TextEncoding?
    }

    public struct KnownIssue: Sendable, Equatable, Decodable {
        /// NT versions concerned (`6.1`).
        public var windows: [String]
        /// Only when none of these updates is installed (Component Based Servicing package names contain `KBnnnnnnn`).
        public var unlessUpdates: [String]?
        /// Only for drivers at or above this version (`100.85.104.20800`).
        public var fromDriverVersion: String?
        public var severity: String?
        public var message: String
        public var reference: String?

        enum CodingKeys: String, CodingKey {
            case windows, message, reference, severity
            case unlessUpdates = "unless-updates"
            case fromDriverVersion = "from-driver-version"
        }
    }

    public var name: String
    public var description: String
    public var documentation: [String]?
    public var input: Input?
    public var detect: Detect?
    public var install: Install?
    public var variants: [String]?
    public var variables: [String: String]?
    public var files: [Template]?
    public var removeKeys: [String]?
    public var knownIssues: [KnownIssue]?
    /// The folder it was read from.
    public var directory: String = ""
    /// Template text by template path (after `{variant}` expansion), read with the manifest.
    public var templates: [String: String] = [:]

    enum CodingKeys: String, CodingKey {
        case name, description, documentation, input, detect, install, variants, variables, files
        case removeKeys = "remove-keys"
        case knownIssues = "known-issues"
    }

    /// `{{name}}` replaced by the variable's value; an unknown variable is an error.
    public static func render(_ template: String, _ variables: [String: String]) throws -> String {
        var out = ""
        var rest = Substring(template)
        while let open = rest.range(of: "{{") {
            out += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].range(of: "}}") else { break }
            let name = rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            guard let v = variables[name] else {
                throw PolicyParameterError(message: "template variable \(name) has no value")
            }
            out += v
            rest = rest[close.upperBound...]
        }
        return out + rest
    }
}
