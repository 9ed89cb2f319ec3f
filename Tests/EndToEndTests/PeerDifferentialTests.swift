import Foundation
import Guestfs
import RemedyCore
import RemedyFixtures
import Testing

/// Differential test against the peer (virt-v2v): `virt-v2v-in-place -i disk` and `remedy apply` on copies of the
/// same phony Server 2016 image with the same (fake) virtio-win. Every registry value virt-v2v writes for the storage
/// driver (the viostor service, the CriticalDeviceDatabase, the DriverDatabase) must be in remedy's result with the
/// same data, or be listed in ``PeerDifferences/intentional``. Both results are read back with `hivexregedit --export`
/// (not with remedy's reader). `.ci/setup` installs virt-v2v and nbdkit.
enum PeerDifferences {
    /// What remedy writes differently from virt-v2v, on purpose (the README has the same table).
    static let intentional: [(what: String, why: String)] = [
        (
            "DriverDatabase names: virt-v2v publishes `guestor.inf`, package `guestor.inf_tmp`, configuration `guestor_conf`",
            "remedy publishes as Windows does: the next free `oemN.inf` (OemInfMap honoured and marked), the package as "
                + "`<inf>_<arch>_<hash>`, the configuration named after the INF's install section (`scsi_inst`); values are compared "
                + "under these names"
        ),
        (
            "DriverPackages\\<package>\\Version bytes 24-39 (driver date and version)",
            "virt-v2v leaves them zero; remedy writes the INF's DriverVer date (FILETIME) and version, as a real Windows 10 hive has them"
        ),
        (
            "Services\\viostor ImagePath letter case (`system32\\drivers\\viostor.sys` vs `System32\\drivers\\viostor.sys`)",
            "Windows paths are case-insensitive; remedy writes the casing real hives have"
        ),
        ("virt-v2v writes the service only in the current control set", "remedy writes every control set (a superset)"),
    ]

    /// A value as `hivexregedit --export` prints it: type and data bytes.
    struct Value: Equatable, CustomStringConvertible {
        var type: String
        var bytes: [UInt8]
        var description: String { "\(type):\(bytes.map { String(format: "%02x", $0) }.joined(separator: ","))" }
    }

    /// Parses `hivexregedit --export` output: `[\key]`, then `"name"=` / `@=` with `dword:`, `hex(N):`, `hex:` or a string.
    static func parse(_ text: String) -> [String: [String: Value]] {
        var out: [String: [String: Value]] = [:]
        var key = ""
        var pending = ""
        for raw in text.components(separatedBy: "\n") {
            var line = pending + raw.trimmingCharacters(in: CharacterSet(charactersIn: "\r"))
            pending = ""
            if line.hasSuffix("\\") && !line.hasPrefix("[") {
                pending = String(line.dropLast())
                continue
            }
            line = line.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("[") && line.hasSuffix("]") {
                key = String(line.dropFirst().dropLast()).trimmingCharacters(in: CharacterSet(charactersIn: "\\"))
                    .lowercased()
                out[key, default: [:]] = out[key] ?? [:]
                continue
            }
            let name: String, rest: Substring
            if line.hasPrefix("@=") {
                name = ""
                rest = line.dropFirst(2)
            } else if line.hasPrefix("\""),
                let close = line.range(of: "\"=", range: line.index(after: line.startIndex)..<line.endIndex)
            {
                name = String(line[line.index(after: line.startIndex)..<close.lowerBound]).replacingOccurrences(
                    of: "\\\\", with: "\\")
                rest = line[close.upperBound...]
            } else {
                continue
            }
            let v: Value
            if rest.hasPrefix("dword:"), let n = UInt32(rest.dropFirst(6), radix: 16) {
                v = Value(
                    type: "4", bytes: [UInt8(n & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 24)])
            } else if rest.hasPrefix("hex"), let colon = rest.firstIndex(of: ":") {
                let t = rest[..<colon]
                let type = t == "hex" ? "3" : String(t.dropFirst(4).dropLast())
                let bytes = rest[rest.index(after: colon)...].split(separator: ",").compactMap {
                    UInt8($0.trimmingCharacters(in: .whitespaces), radix: 16)
                }
                v = Value(type: type, bytes: bytes)
            } else {
                v = Value(type: "1", bytes: Array(rest.utf8))
            }
            out[key, default: [:]][name.lowercased()] = v
        }
        return out
    }

    /// The storage driver's registry, as far as the comparison goes.
    static func inScope(_ key: String) -> Bool {
        let parts = key.split(separator: "\\")
        guard let first = parts.first else { return false }
        if first == "driverdatabase" { return true }
        guard first.hasPrefix("controlset"), parts.count >= 3 else { return false }
        return (parts[1] == "services" && parts[2] == "viostor")
            || (parts[1] == "control" && parts[2] == "criticaldevicedatabase")
    }
}

@Suite(.serialized) struct PeerDifferentialTests {
    @Test func whatVirtV2VWritesForTheStorageDriverRemedyWritesToo() throws {
        let f = try Fixtures.get()
        let v2vTool = "/usr/bin/virt-v2v-in-place"
        try #require(
            FileManager.default.isExecutableFile(atPath: v2vTool),
            "virt-v2v-in-place is missing: run .ci/setup (it installs virt-v2v and nbdkit)")
        let dir = f.dir + "/peer"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir + "/virt-tools", withIntermediateDirectories: true)
        let v2vImage = dir + "/v2v.qcow2", remedyImage = dir + "/remedy.qcow2"
        // The shared pristine Server 2016 image (never written by the other tests), copied for each side.
        for copy in [v2vImage, remedyImage] { try FileManager.default.copyItem(atPath: f.driversWrongOS, toPath: copy) }

        // virt-v2v: Debian ships no rhsrvany.exe (it refuses Windows without one): a stand-in file, as Benchmarks/run.sh does.
        try Data("MZ".utf8).write(to: URL(fileURLWithPath: dir + "/virt-tools/rhsrvany.exe"))
        var env = ProcessInfo.processInfo.environment
        env["VIRTIO_WIN"] = f.virtioTree
        env["VIRT_TOOLS_DATA_DIR"] = dir + "/virt-tools"
        env["LIBGUESTFS_BACKEND"] = "direct"
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
        let log = dir + "/v2v.log"
        let status = try runInOwnGroup(v2vTool, ["-i", "disk", v2vImage], environment: env, log: log, timeout: 1200)
        try #require(status == 0, "virt-v2v-in-place failed (\(status)); see \(log)")

        // remedy, same image, same virtio-win.
        let r = try remedy(["apply", remedyImage, "--virtio-win", f.virtioTree])
        // 0, or 2 when blocking findings remain (this phony disk is under the cloud's 40 GB minimum).
        try #require(r.status == 0 || r.status == 2, "\(r.stderr)")

        // Read the three SYSTEM hives back in one launch, exported with hivexregedit.
        let g = try Guestfs()
        try g.setBackend("direct")
        try g.setBackendSettings(["force_tcg"])
        let images = [f.driversWrongOS, v2vImage, remedyImage]
        for image in images { try g.addDrive(image, format: "qcow2", readonly: true) }
        try g.launch()
        defer { g.close() }
        var exports: [[String: [String: PeerDifferences.Value]]] = []
        for (i, device) in ["/dev/sda", "/dev/sdb", "/dev/sdc"].enumerated() {
            let root = try #require(try g.inspectOS().first { $0.hasPrefix(device) }, "no Windows on \(images[i])")
            try g.umountAll()
            try g.mountReadOnly(root, at: "/")
            let hive = dir + "/SYSTEM-\(i)"
            try g.download(try g.caseSensitivePath("/Windows/System32/config/SYSTEM"), to: hive)
            let out = Pipe()
            let x = Process()
            x.executableURL = URL(fileURLWithPath: "/usr/bin/hivexregedit")
            x.arguments = ["--export", hive, "\\"]
            x.standardOutput = out
            try x.run()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            x.waitUntilExit()
            exports.append(PeerDifferences.parse(text))
        }
        let (original, peer, mine) = (exports[0], exports[1], exports[2])

        // remedy's names for what virt-v2v calls guestor.inf / guestor.inf_tmp / guestor_conf.
        let viostor = mine.first { entry in
            entry.key.hasPrefix("driverdatabase\\driverinffiles\\oem")
                && utf16(entry.value["active"]?.bytes ?? []).lowercased().hasPrefix("viostor.inf_")
        }
        let published = try #require(viostor, "remedy published no viostor package")
        let oem = String(published.key.split(separator: "\\").last!)
        let label = utf16(published.value["active"]?.bytes ?? []).lowercased()
        func rename(_ s: String) -> String {
            s.replacingOccurrences(of: "guestor.inf_tmp", with: label).replacingOccurrences(
                of: "guestor.inf", with: oem
            )
            .replacingOccurrences(of: "guestor_conf", with: "scsi_inst")
        }

        var compared = 0
        for (key, values) in peer where PeerDifferences.inScope(key) {
            for (name, value) in values where original[key]?[name] != value {
                compared += 1
                let k = rename(key), n = rename(name)
                guard let theirs = mine[k]?[n] else {
                    Issue.record("virt-v2v wrote \(key)\\\(name) = \(value); remedy has no \(k)\\\(n)")
                    continue
                }
                var expected = value
                if n == "version", k.hasPrefix("driverdatabase\\driverpackages\\"), expected.bytes.count == 48,
                    theirs.bytes.count == 48
                {
                    // intentional: DriverVer date and version
                    expected.bytes.replaceSubrange(24..<40, with: theirs.bytes[24..<40])
                }
                if n == "imagepath" {  // intentional: letter case
                    let a = utf16(expected.bytes).lowercased()
                    let b = utf16(theirs.bytes).lowercased()
                    #expect(a == b && expected.type == theirs.type, "\(k)\\\(n): virt-v2v \(value), remedy \(theirs)")
                    continue
                }
                // The multi-string of guestor names, renamed.
                if expected.type == "7" || expected.type == "1" {
                    let text = rename(utf16(expected.bytes).lowercased())
                    let mineText = utf16(theirs.bytes).lowercased()
                    #expect(
                        text == mineText && expected.type == theirs.type,
                        "\(k)\\\(n): virt-v2v \(value), remedy \(theirs)")
                    continue
                }
                #expect(expected == theirs, "\(k)\\\(n): virt-v2v \(value), remedy \(theirs)")
            }
        }
        // virt-v2v did write the storage driver (else the comparison proves nothing).
        #expect(compared >= 10, "virt-v2v wrote only \(compared) storage-driver values; see \(log)")
        #expect(peer.keys.contains { $0.hasSuffix("services\\viostor") })
    }
}

/// A registry string's bytes (UTF-16LE), without the terminating NULs (a multi-string's separators become `|`).
func utf16(_ bytes: [UInt8]) -> String {
    var units = stride(from: 0, to: bytes.count - bytes.count % 2, by: 2).map {
        UInt16(bytes[$0]) | UInt16(bytes[$0 + 1]) << 8
    }
    while units.last == 0 { units.removeLast() }
    return String(decoding: units.map { $0 == 0 ? 0x7C : $0 }, as: UTF16.self)
}
