import Foundation
import RegistryFormat

/// Real SYSTEM hives captured from Windows machines (regipy's test data, MIT,
/// committed xz-compressed in `Tests/Fixtures/regipy`; see that folder's
/// README), made ready to use the way Windows would find them at boot:
/// decompressed, and clean.
///
/// - `SYSTEM` (Windows 7 / 2008 R2 family, two static NICs) is clean as shipped.
/// - `SYSTEM_2` (8.1 / 2012 R2) and `SYSTEM_WIN_10_1709` were copied from running
///   systems without their logs (secondary sequence one below the primary). The
///   clean copy is what an orderly shutdown leaves: the secondary sequence set
///   equal to the primary and the base-block checksum recomputed by Windows'
///   rule. The hive bins are not touched.
/// - `SYSTEM_B` (Windows 10) is dirty with its `.LOG1`/`.LOG2`: its logs are
///   replayed (remedy's replay, checked against Windows' own recovery), as
///   Windows does at boot.
public enum RealSystemHive: String, Sendable, Codable, CaseIterable {
    case windows7 = "SYSTEM"
    case windows81 = "SYSTEM_2"
    case windows10 = "SYSTEM_B"
    case windows10v1709 = "SYSTEM_WIN_10_1709"

    /// The phony release whose SOFTWARE hive goes with this SYSTEM (regipy has no
    /// SOFTWARE hives; the OS version facts come from SOFTWARE). Windows 10 client
    /// hives pair with the Server 2016 release, the nearest NT 10.0 server.
    public var release: WindowsRelease {
        switch self {
        case .windows7: .server2008R2
        case .windows81: .server2012R2
        case .windows10, .windows10v1709: .server2016
        }
    }

    /// The folder of the committed real hives (found from this source file's place in the package).
    public static var directory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("Tests/Fixtures/regipy").path
    }

    /// Writes a clean, ready-to-use copy of the hive to `path` and returns `path`.
    @discardableResult
    public func write(to path: String) throws -> String {
        var bytes = try Self.xz(Self.directory + "/\(rawValue).xz")
        switch self {
        case .windows7:
            break
        case .windows81, .windows10v1709:
            let base = try BaseBlock(bytes)
            BaseBlock.seal(&bytes, sequence: base.primarySequence)
        case .windows10:
            let logs = try ["LOG1", "LOG2"].map { ext in
                (name: "\(rawValue).\(ext)", bytes: try Self.xz(Self.directory + "/\(rawValue).\(ext).xz"))
            }
            bytes = try HiveRecovery.recover(primary: bytes, logs: logs).bytes
        }
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
        return path
    }

    /// `xz -dc FILE` (also for the other committed real hives, e.g. `SAM.xz`).
    public static func xz(_ file: String) throws -> [UInt8] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/xz")
        p.arguments = ["-dc", file]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0, !data.isEmpty else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSFilePathErrorKey: file])
        }
        return [UInt8](data)
    }
}
