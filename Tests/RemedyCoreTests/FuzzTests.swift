import Foundation
import RemedyFixtures
import Testing

@testable import RemedyCore
@testable import RemedyPlanning

/// Fuzz targets for every parser of untrusted (or user-written) input on the host: INF files, disk-format
/// detection, policies, payload manifests, plan JSON (hives and logs: `RegistryFuzzTests`). Each runs a few
/// seconds in the suite from a printed seed (see ``Fuzz``); `REMEDY_FUZZ_SECONDS=600` fuzzes for longer.
/// A crash or hang is the failure these exist to find; an input must otherwise end in a result or the error
/// type the caller handles.
@Suite struct FuzzTests {
    static let yamlTokens = [
        "&a ", "*a", "<<: *a", "[", "]", "{", "}", ": ", "- ", "!!binary ", "!!str ", "? ", "|", ">", "\"", "'",
        "０１", "\u{1B}[2J", "%", "#", "\t", "    ", "\u{FEFF}", "~", "null", "1e999", "-0x8000000000000000",
        "REG_BINARY", "REG_DWORD", "data: 99999999999999999999", "extends: huawei-ims", "$nla", "{{x}}",
    ]

    static func expectClean(_ s: Fuzz.Summary) {
        #expect(s.rounds > 0)
        for f in s.failures.prefix(5) { Issue.record("\(f)") }
    }

    @Test func infFiles() throws {
        let root = FakeTrees.root + "/iso"
        let bases = try [
            "viostor/2k16/amd64/viostor.inf", "NetKVM/2k16/amd64/netkvm.inf", "Balloon/2k16/amd64/balloon.inf",
        ]
        .map { try String(contentsOfFile: root + "/" + $0, encoding: .utf8) }
        let tokens = [
            "[", "]", "[Manufacturer]", "[Strings]", "%a%", "%%", "\"", "\"\"", ",", "=", "\\", ";",
            "NTamd64.10.0...99999999999",
            "AddService = x,0x2,y", "CopyFiles=@a.sys", "DriverVer = 99/99/9999,1.2.3.4", "%Strings%", "\u{0}", "\r",
        ]
        let s = Fuzz.run("inf") { rng in
            let base = bases[Int.random(in: 0..<bases.count, using: &rng)]
            let text =
                Bool.random(using: &rng)
                ? Fuzz.mutateLines(base, tokens: tokens, limit: 64 << 10, using: &rng)
                : String(decoding: Fuzz.mutate(Array(base.utf8), limit: 64 << 10, using: &rng), as: UTF8.self)
            do {
                _ = try DriverINF(
                    name: "x.inf", text: text, arch: Bool.random(using: &rng) ? .x86_64 : .i386, osMajor: 10,
                    osMinor: 0,
                    build: Int.random(in: 0...30000, using: &rng))
            } catch {}  // any error is an answer; INFs are wrapped by the caller
            return nil
        }
        Self.expectClean(s)
    }

    @Test func diskFormatDetection() throws {
        let dir = NSTemporaryDirectory() + "/remedy-fuzz-disk-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func header(_ magic: [UInt8], size: Int = 4096) -> [UInt8] {
            magic + [UInt8](repeating: 0, count: size - magic.count)
        }
        var vdi = header([])
        vdi.replaceSubrange(0x40..<0x44, with: [0x7F, 0x10, 0xDA, 0xBE])
        var mbr = header([])
        mbr[510] = 0x55
        mbr[511] = 0xAA
        var vmdk = header(Array("KDMV".utf8))
        // Sparse header (little-endian UInt64s): capacity @12, grainSize @20, descriptorOffset @28, descriptorSize @36.
        vmdk.replaceSubrange(28..<36, with: [1, 0, 0, 0, 0, 0, 0, 0])
        vmdk.replaceSubrange(36..<44, with: [1, 0, 0, 0, 0, 0, 0, 0])
        let bases: [[UInt8]] = [
            header([0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 3]), header(Array("QED\0".utf8)), header(Array("vhdxfile".utf8)),
            vdi, vmdk,
            Array("# Disk DescriptorFile\nversion=1\nparentCID=ffffffff\nRW 8 FLAT \"x.raw\" 0\n".utf8),
            header(Array("conectix".utf8), size: 1024),
            header(Array("z2strm\0".utf8)), mbr, header([]),
        ]
        let s = Fuzz.run("disk-format") { rng in
            let path = dir + "/img"
            let bytes = Fuzz.mutate(bases[Int.random(in: 0..<bases.count, using: &rng)], limit: 64 << 10, using: &rng)
            #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
            do { _ = try DiskFormat.detect(path: path) } catch is RemedyError {} catch {
                return "threw \(type(of: error)): \(error)"
            }
            return nil
        }
        Self.expectClean(s)
    }

    @Test func policies() throws {
        var bases: [String] = []
        for dir in PolicyLoader.policyDirectories() {
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
            where name.hasSuffix(".yaml") {
                // `extends` is replaced by an inline copy: mutated text never names other host files.
                bases.append(
                    try String(contentsOfFile: dir + "/" + name, encoding: .utf8).replacingOccurrences(
                        of: "extends:", with: "#extends:"))
            }
        }
        try #require(!bases.isEmpty, "no built-in policies found")
        bases.append(
            """
            name: p
            description: d
            parameters: {a: &x [1, 2, 3]}
            rules:
              - id: r
                registry:
                  hive: SOFTWARE
                  key: ACME\\Key
                  values: [{name: B, type: REG_BINARY, data: "01 ff"}, {name: D, type: REG_DWORD, data: 4}, {name: M, data: [a, b]}]
            """)
        let tokens = Self.yamlTokens
        let s = Fuzz.run("policy") { rng in
            let text = Fuzz.mutateLines(
                bases[Int.random(in: 0..<bases.count, using: &rng)], tokens: tokens, limit: 128 << 10, using: &rng
            )
            .replacingOccurrences(of: "extends:", with: "#extends:")
            do { _ = try PolicyLoader.parse(text, source: "/nonexistent/fuzz.yaml") } catch is RemedyError {} catch {
                return "threw \(type(of: error)), not a policy-invalid error: \(error)"
            }
            return nil
        }
        Self.expectClean(s)
    }

    @Test func payloadManifests() throws {
        let dir = NSTemporaryDirectory() + "/remedy-fuzz-manifest-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var bases: [(folder: String, text: String)] = []
        for root in PayloadManifest.directories() {
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted()
            where FileManager.default.fileExists(atPath: "\(root)/\(name)/manifest.yaml") {
                try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                try FileManager.default.copyItem(atPath: "\(root)/\(name)", toPath: "\(dir)/\(name)")
                bases.append(
                    ("\(dir)/\(name)", try String(contentsOfFile: "\(root)/\(name)/manifest.yaml", encoding: .utf8)))
            }
        }
        try #require(!bases.isEmpty, "no payload manifests found")
        let tokens =
            Self.yamlTokens + [
                "template: ../../../etc/passwd", "{variant}", "known: [{file: a, version: b, sha256: c}]",
            ]
        let s = Fuzz.run("manifest") { rng in
            let base = bases[Int.random(in: 0..<bases.count, using: &rng)]
            let text = Fuzz.mutateLines(base.text, tokens: tokens, limit: 128 << 10, using: &rng)
            #expect(FileManager.default.createFile(atPath: base.folder + "/manifest.yaml", contents: Data(text.utf8)))
            do { _ = try PayloadManifest.load(base.folder + "/manifest.yaml") } catch is RemedyError {} catch {
                return "threw \(type(of: error)): \(error)"
            }
            return nil
        }
        Self.expectClean(s)
    }

    @Test func planJSON() throws {
        let w = try LocalWindows(
            PhonyWindows(
                release: .server2008R2, nics: [.staticIP("{3F2504E0-4F89-41D3-9A0C-0305E82C3301}", "10.0.0.5")],
                states: [.vmwareTools, .ideDisabled]))
        let plan = try w.plan(try PolicyLoader.load("openstack-kvm"))
        let base = [UInt8](try RemedyJSON.encoder().encode(plan))
        #expect(try RemedyJSON.decoder().decode(Plan.self, from: Data(base)).actions.count == plan.actions.count)
        let tokens = [
            "null", "[]", "{}", "\"\\u001b[2J\"", "1e999", "-1", "18446744073709551616", "\"REG_BINARY\"", "\"\u{0}\"",
            "true",
        ]
        let s = try Fuzz.run("plan-json") { rng in
            let bytes =
                Bool.random(using: &rng)
                ? Fuzz.mutate(base, limit: 4 << 20, using: &rng)
                : Array(
                    Fuzz.mutateLines(String(decoding: base, as: UTF8.self), tokens: tokens, limit: 4 << 20, using: &rng)
                        .utf8)
            guard let p = try? RemedyJSON.decoder().decode(Plan.self, from: Data(bytes)) else { return nil }
            // What decodes is rendered and encoded again, as apply --plan would use it.
            _ = TextRenderer.plan(p)
            _ = try RemedyJSON.encoder().encode(p)
            return nil
        }
        Self.expectClean(s)
    }
}
