import Foundation
import Testing

@testable import RemedyCore
@testable import RemedyPlanning

/// Every Cloudbase-Init configuration remedy writes, checked against the names in Cloudbase-Init's own source
/// (Tests/Fixtures/cloudbase-init/names.txt): no unknown option, no option deprecated for removal, no plugin or
/// metadata service that does not exist.
@Suite struct CloudbaseInitOracleTests {
    struct Names {
        var options: Set<String> = []  // "group.name", lowercased group
        var deprecated: [String: (String, Bool)] = [:]
        var plugins: Set<String> = []
        var services: Set<String> = []
    }

    static func names() throws -> Names {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/cloudbase-init/names.txt").path
        var n = Names()
        for line in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n") where !line.hasPrefix("#")
        {
            let f = line.split(separator: " ").map(String.init)
            switch f.first {
            case "option": n.options.insert("\(f[1].lowercased()).\(f[2])")
            case "deprecated":
                n.deprecated["\(f[1].lowercased()).\(f[2])"] = (f[4], f.count > 5 && f[5] == "for-removal")
            case "plugin": n.plugins.insert(f[1])
            case "service": n.services.insert(f[1])
            default: break
            }
        }
        return n
    }

    @Test func theOracleHasWhatItShould() throws {
        let n = try Self.names()
        #expect(
            n.options.contains("default.plugins") && n.options.contains("default.log_dir")
                && n.options.contains("config_drive.types"))
        #expect(n.plugins.contains("cloudbaseinit.plugins.common.mtu.MTUPlugin"))
        #expect(n.services.contains("cloudbaseinit.metadata.services.httpservice.HttpService"))
        #expect(n.deprecated["default.config_drive_raw_hhd"]?.1 == true)
        #expect(!n.options.contains("default.verbose"))
    }

    @Test func everyVariantUsesOnlyRealOptionsAndClasses() throws {
        let n = try Self.names()
        let manifest = try #require(PayloadManifest.named("cloudbase-init"))
        let variants = try #require(manifest.variants)
        #expect(!variants.isEmpty)
        var checked = 0
        for variant in variants {
            let rule = try PayloadRule(manifest: manifest, parameters: PolicyParameters(["variant": .string(variant)]))
            let files = rule.rendered()
            #expect(files.count == 2, "\(variant)")
            for file in files {
                let at = "\(variant)/\(file.name)"
                var group = ""
                for raw in file.text.components(separatedBy: "\r\n") {
                    let line = raw.trimmingCharacters(in: .whitespaces)
                    if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
                    if line.hasPrefix("[") {
                        group = line.dropFirst().dropLast().lowercased()
                        continue
                    }
                    guard let eq = line.firstIndex(of: "=") else {
                        Issue.record("\(at): not an option line: \(line)")
                        continue
                    }
                    let name = String(line[..<eq]).trimmingCharacters(in: .whitespaces)
                    let value = String(line[line.index(after: eq)...])
                    let key = "\(group).\(name)"
                    checked += 1
                    if let (replacement, removal) = n.deprecated[key] {
                        #expect(!removal, "\(at): \(key) is deprecated for removal (use \(replacement))")
                        #expect(Bool(false), "\(at): \(key) is a deprecated name of \(replacement)")
                    } else {
                        #expect(n.options.contains(key), "\(at): \(key) is not a Cloudbase-Init option")
                    }
                    if name == "plugins" {
                        for p in value.split(separator: ",") {
                            #expect(n.plugins.contains(String(p)), "\(at): no plugin \(p)")
                        }
                    }
                    if name == "metadata_services" {
                        for s in value.split(separator: ",") {
                            #expect(n.services.contains(String(s)), "\(at): no metadata service \(s)")
                        }
                    }
                }
            }
        }
        #expect(checked > 40)
    }
}
