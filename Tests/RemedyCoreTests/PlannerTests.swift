import Foundation
import RemedyCore
import Testing

let ifacesPath = "Services\\Tcpip\\Parameters\\Interfaces"

func staticIface(_ guid: String, ip: String = "10.0.0.5") -> RegistryKey {
    RegistryKey(
        name: guid,
        values: [
            HiveValue(name: "EnableDHCP", value: .dword(0)),
            HiveValue(name: "IPAddress", value: .multiString([ip])),
            HiveValue(name: "SubnetMask", value: .multiString(["255.255.255.0"])),
            HiveValue(name: "DefaultGateway", value: .multiString(["10.0.0.1"])),
            HiveValue(name: "DefaultGatewayMetric", value: .multiString(["0"])),
            HiveValue(name: "NameServer", value: .string("8.8.8.8,8.8.4.4")),
            HiveValue(name: "DhcpIPAddress", value: .string("192.168.1.9")),
        ])
}

func dhcpIface(_ guid: String) -> RegistryKey {
    RegistryKey(
        name: guid,
        values: [
            HiveValue(name: "EnableDHCP", value: .dword(1)),
            HiveValue(name: "NameServer", value: .string("1.1.1.1")),
            HiveValue(name: "DhcpIPAddress", value: .string("192.168.1.9")),
        ])
}

func facts(_ sets: [String: [RegistryKey]], version: (Int, Int) = (10, 0), arch: Architecture = .x86_64) -> ImageFacts {
    let names = sets.keys.sorted()
    let os = OSFacts(
        root: "/dev/sda1", product: "Windows Server 2016 Datacenter", variant: "Server",
        majorVersion: version.0, minorVersion: version.1, build: "14393", arch: arch, hostname: "H",
        systemRoot: "/Windows", currentControlSet: names[0],
        controlSets: names.enumerated().map {
            ControlSet(name: $1, roles: $0 == 0 ? [.current, .default] : [.lastKnownGood])
        })
    var snap = RegistrySnapshot()
    for (cs, ifaces) in sets {
        snap.insert(.system, RegistryPath("\(cs)\\\(ifacesPath)"), RegistryKey(name: "Interfaces", subkeys: ifaces))
    }
    return ImageFacts(image: ImageInfo(path: "x.qcow2", format: .qcow2, fileSize: 1), os: os, registry: snap)
}

func policy(_ yaml: String) throws -> Policy { try PolicyLoader.parse(yaml, source: "test.yaml") }

let basicPolicy = """
    name: t
    description: test
    applies-to:
      versions: ["6.1", "10.0"]
      arch: [x86_64]
    rules:
      - id: nic-dhcp
    """

@Suite struct NicDhcpTests {
    @Test func staticInterfacesInEveryControlSetBecomeDHCP() throws {
        let f = facts(["ControlSet001": [staticIface("{A}"), dhcpIface("{B}")], "ControlSet002": [staticIface("{A}")]])
        let plan = Planner.plan(facts: f, policy: try policy(basicPolicy))
        #expect(plan.actions.map(\.target) == ["{A}", "{A}"])
        #expect(
            plan.actions.map { $0.changes[0].key.description } == [
                "ControlSet001\\\(ifacesPath)\\{A}", "ControlSet002\\\(ifacesPath)\\{A}",
            ])
        let byName = Dictionary(uniqueKeysWithValues: plan.actions[0].changes.map { ($0.name!, $0) })
        #expect(
            Set(byName.keys) == [
                "EnableDHCP", "IPAddress", "SubnetMask", "DefaultGateway", "DefaultGatewayMetric", "NameServer",
            ])
        #expect(byName["EnableDHCP"]?.before == .dword(0))
        #expect(byName["EnableDHCP"]?.after == .dword(1))
        #expect(byName["IPAddress"]?.after == .multiString(["0.0.0.0"]))
        #expect(byName["SubnetMask"]?.after == .multiString(["0.0.0.0"]))
        #expect(byName["DefaultGateway"]?.after == .multiString([]))
        #expect(byName["NameServer"]?.before == .string("8.8.8.8,8.8.4.4"))
        #expect(byName["NameServer"]?.after == .string(""))
        #expect(plan.actions.allSatisfy { $0.changes.allSatisfy { $0.hive == .system && $0.op == .setValue } })
        #expect(plan.findings.isEmpty)
    }

    @Test func dhcpOnlyImageNeedsNothing() throws {
        let plan = Planner.plan(facts: facts(["ControlSet001": [dhcpIface("{B}")]]), policy: try policy(basicPolicy))
        #expect(!plan.hasChanges)
        #expect(plan.actions.isEmpty)
    }

    @Test func keepStaticDNSLeavesNameServer() throws {
        let p = try policy(basicPolicy + "\n    with:\n      keep-static-dns: true\n")
        let plan = Planner.plan(facts: facts(["ControlSet001": [staticIface("{A}")]]), policy: p)
        #expect(plan.changes.count == 5)
        #expect(!plan.changes.contains { $0.name == "NameServer" })
    }

    @Test func interfaceWithoutAddressIsNotStatic() throws {
        let unused = RegistryKey(name: "{C}", values: [HiveValue(name: "EnableDHCP", value: .dword(0))])
        let plan = Planner.plan(facts: facts(["ControlSet001": [unused]]), policy: try policy(basicPolicy))
        #expect(plan.actions.isEmpty)
    }

    @Test func unsupportedVersionAndArchAreBlockingFindings() throws {
        let plan = Planner.plan(
            facts: facts(["ControlSet001": []], version: (6, 0), arch: .i386), policy: try policy(basicPolicy))
        #expect(plan.findings.map(\.id) == ["os-arch-unsupported", "os-version-unsupported"])
        #expect(plan.blockers.count == 2)
        #expect(plan.findings.first { $0.id == "os-version-unsupported" }?.measured == "6.0")
    }

    @Test func planJSONHasTheDocumentedShape() throws {
        let plan = Planner.plan(facts: facts(["ControlSet001": [staticIface("{A}")]]), policy: try policy(basicPolicy))
        let data = try RemedyJSON.encoder().encode(plan)
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(json["schema"] as? String == "remedy.plan/1")
        let os = try #require(json["os"] as? [String: Any])
        #expect(os["currentControlSet"] as? String == "ControlSet001")
        #expect(os["majorVersion"] as? Int == 10)
        let action = try #require((json["actions"] as? [[String: Any]])?.first)
        #expect(action["rule"] as? String == "nic-dhcp")
        let change = try #require((action["changes"] as? [[String: Any]])?.first)
        #expect(Set(change.keys) == ["op", "hive", "key", "name", "before", "after"])
        #expect(change["hive"] as? String == "SYSTEM")
        #expect((change["after"] as? [String: Any])?["type"] as? String == "REG_DWORD")
        // Round trip.
        let back = try RemedyJSON.decoder().decode(Plan.self, from: data)
        #expect(back == plan)
    }
}

@Suite struct PolicyTests {
    @Test func builtInPoliciesLoad() throws {
        let p = try PolicyLoader.load("huawei-ims")
        #expect(p.name == "huawei-ims")
        #expect(
            p.rules.map(\.id) == [
                "nic-dhcp", "pv-cleanup", "input-devices", "ide-boot", "crash-settings", "uefi-fallback",
                "driver-restrictions", "virtio-drivers", "guest-agent", "multi-queue", "cloudbase-init",
                "image-acceptance", "image-metadata",
            ])
        #expect(p.versions.contains("10.0"))
    }

    @Test func typeErrorsNameFileLineAndColumn() throws {
        let yaml = "name: t\ndescription: d\nrules:\n  - id: nic-dhcp\n    with:\n      keep-static-dns: maybe\n"
        do {
            _ = try policy(yaml)
            Issue.record("accepted")
        } catch let e as RemedyError {
            #expect(e.code == .policyInvalid)
            #expect(e.message.hasPrefix("test.yaml:4:"), "\(e.message)")
            #expect(e.message.contains("keep-static-dns"))
        }
    }

    @Test func missingKeysAndUnknownRulesAreErrors() throws {
        #expect(throws: RemedyError.self) { try policy("name: t\nrules: []\n") }
        do {
            _ = try policy("name: t\ndescription: d\nrules:\n  - id: no-such-rule\n")
            Issue.record("accepted")
        } catch let e as RemedyError {
            #expect(e.message.contains("test.yaml:4:"), "\(e.message)")
            #expect(e.message.contains("unknown rule no-such-rule"))
        }
    }

    @Test func malformedYAMLIsAnError() {
        #expect(throws: RemedyError.self) { try policy("name: [unclosed\n") }
    }

    @Test func unknownNamedPolicyListsTheBuiltIns() {
        do {
            _ = try PolicyLoader.load("nope")
            Issue.record("found")
        } catch let e as RemedyError {
            #expect(e.code == .policyNotFound)
            #expect(e.message.contains("huawei-ims"))
        } catch { Issue.record("\(error)") }
    }
}

@Suite struct DiskFormatTests {
    func write(_ bytes: [UInt8]) throws -> String {
        let path = NSTemporaryDirectory() + "/remedy-fmt-\(UUID().uuidString)"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        return path
    }

    @Test func garbageIsNotADiskImage() throws {
        let path = try write((0..<4096).map { UInt8(truncatingIfNeeded: $0 * 7) })
        #expect { try DiskFormat.detect(path: path) } throws: { ($0 as? RemedyError)?.code == .unsupportedFormat }
        let empty = try write([])
        #expect { try DiskFormat.detect(path: empty) } throws: { ($0 as? RemedyError)?.code == .unsupportedFormat }
    }

    @Test func rawNeedsABootSectorSignature() throws {
        var mbr = [UInt8](repeating: 0, count: 1024)
        mbr[510] = 0x55
        mbr[511] = 0xAA
        #expect(try DiskFormat.detect(path: write(mbr)) == .raw)
    }

    @Test func qcow2WithABackingFileIsRefused() throws {
        var h = [UInt8](repeating: 0, count: 512)
        h[0...3] = [0x51, 0x46, 0x49, 0xFB]
        h[7] = 3
        #expect(try DiskFormat.detect(path: write(h)) == .qcow2)
        h[15] = 0x68  // backing_file_offset != 0
        #expect { try DiskFormat.detect(path: write(h)) } throws: { ($0 as? RemedyError)?.code == .unsafeImage }
    }

    @Test func huaweiFormatsAreRecognisedAndRefusedByName() throws {
        for (cookie, name) in [("z2strm", "ZVHD2"), ("stream", "ZVHD")] {
            let path = try write(Array(cookie.utf8) + [0] + [UInt8](repeating: 7, count: 4089))
            #expect { try DiskFormat.detect(path: path) } throws: {
                ($0 as? RemedyError)?.code == .unsupportedFormat && "\($0)".contains(name + " image")
            }
        }
    }

    @Test func otherFormatsAreDetectedByContent() throws {
        var vhdx = [UInt8](repeating: 0, count: 512)
        vhdx[0..<8] = ArraySlice("vhdxfile".utf8)
        #expect(try DiskFormat.detect(path: write(vhdx)) == .vhdx)
        var vdi = [UInt8](repeating: 0, count: 512)
        vdi[0x40...0x43] = [0x7F, 0x10, 0xDA, 0xBE]
        #expect(try DiskFormat.detect(path: write(vdi)) == .vdi)
        var vhd = [UInt8](repeating: 0, count: 2048)
        vhd[1536..<1544] = ArraySlice("conectix".utf8)
        vhd[1536 + 63] = 2
        #expect(try DiskFormat.detect(path: write(vhd)) == .vhd)
        vhd[1536 + 63] = 4
        #expect { try DiskFormat.detect(path: write(vhd)) } throws: { ($0 as? RemedyError)?.code == .unsafeImage }
        let desc = "# Disk DescriptorFile\nversion=1\nparentCID=ffffffff\nRW 2048 SPARSE \"/etc/shadow\"\n"
        #expect { try DiskFormat.detect(path: write(Array(desc.utf8))) } throws: {
            ($0 as? RemedyError)?.code == .unsafeImage
        }
    }
}
