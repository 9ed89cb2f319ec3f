import Foundation
import Guestfs
import RemedyCore
import Testing

/// Every format users bring, made by qemu-img from ONE phony image, applied
/// in ONE batch appliance and read back in ONE independent guestfs launch
/// (hivexget on the downloaded SYSTEM hive); an OVA planned with its
/// descriptor's facts. Part of the serialized end-to-end suite.
@Suite(.serialized) struct IntakeEndToEndTests {
    static func intakeBase(_ f: Fixtures) -> String { f.dir + "/intake-base.qcow2" }

    static func qemuImg(_ args: [String]) throws {
        try QemuImg.run(args, image: args.last ?? "")
    }

    static func sh(_ script: String, _ args: [String] = []) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script, "sh"] + args
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw CocoaError(.fileReadUnknown) }
        return String(decoding: data, as: UTF8.self)
    }

    /// An OVA (descriptor first, manifest, disks) in `dir`: disk1 is the phony Windows as a streamOptimized VMDK.
    static func makeOVA(
        _ f: Fixtures, in dir: String, name: String = "vm", twoDisks: Bool, firmware: String = "efi"
    ) throws -> String {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try qemuImg([
            "convert", "-q", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized", intakeBase(f),
            dir + "/disk1.vmdk",
        ])
        var disks = ["disk1.vmdk"]
        if twoDisks {
            try qemuImg(["create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", dir + "/disk2.vmdk", "64M"])
            disks.append("disk2.vmdk")
        }
        let refs = disks.enumerated().map { "<File ovf:href=\"\($0.element)\" ovf:id=\"file\($0.offset + 1)\"/>" }
            .joined(separator: "\n    ")
        let diskItems = disks.indices.map {
            "<Disk ovf:capacity=\"\($0 == 0 ? 128 : 64)\" ovf:capacityAllocationUnits=\"byte * 2^20\" ovf:diskId=\"vmdisk\($0 + 1)\" ovf:fileRef=\"file\($0 + 1)\" ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>"
        }.joined(separator: "\n    ")
        let ovf = """
            <?xml version="1.0" encoding="UTF-8"?>
            <Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
              <References>
                \(refs)
              </References>
              <DiskSection>
                <Info>Virtual disk information</Info>
                \(diskItems)
              </DiskSection>
              <VirtualSystem ovf:id="vm">
                <Info>A virtual machine</Info>
                <OperatingSystemSection ovf:id="112" vmw:osType="windows9Server64Guest">
                  <Info>The kind of installed guest operating system</Info>
                  <Description>Microsoft Windows Server 2016 (64-bit)</Description>
                </OperatingSystemSection>
                <VirtualHardwareSection>
                  <Info>Virtual hardware requirements</Info>
                  <Item><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
                  <Item><rasd:ElementName>Network adapter 2</rasd:ElementName><rasd:InstanceID>6</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
                  <Item><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>7</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>
                  <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="\(firmware)"/>
                </VirtualHardwareSection>
              </VirtualSystem>
            </Envelope>

            """
        try ovf.write(toFile: "\(dir)/\(name).ovf", atomically: true, encoding: .utf8)
        var mf =
            "SHA256(\(name).ovf)= "
            + (try sh("sha256sum \"$1\" | cut -d' ' -f1", ["\(dir)/\(name).ovf"])).trimmingCharacters(
                in: .whitespacesAndNewlines) + "\n"
        for d in disks {
            mf +=
                "SHA1(\(d))= "
                + (try sh("sha1sum \"$1\" | cut -d' ' -f1", ["\(dir)/\(d)"])).trimmingCharacters(
                    in: .whitespacesAndNewlines) + "\n"
        }
        try mf.write(toFile: "\(dir)/\(name).mf", atomically: true, encoding: .utf8)
        let ova = "\(dir)/\(name).ova"
        _ = try sh(
            "cd \"$1\" && tar --format=ustar -cf \"$2\" \"$3.ovf\" \"$3.mf\" " + disks.joined(separator: " "),
            [dir, ova, name])
        return ova
    }

    @Test func everyFormatIsAppliedInOneBatchAndReadBackIndependently() throws {
        let f = try Fixtures.get()
        let dir = f.dir + "/formats"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let inPlace: [(String, String, [String])] = [
            ("raw.raw", "raw", ["-O", "raw"]),
            ("v2.qcow2", "qcow2", ["-O", "qcow2", "-o", "compat=0.10"]),
            ("v3.qcow2", "qcow2", ["-O", "qcow2", "-o", "compat=1.1"]),
            ("old.qcow", "qcow", ["-O", "qcow"]),
            ("sparse.vmdk", "vmdk", ["-O", "vmdk", "-o", "subformat=monolithicSparse"]),
            ("flat.vmdk", "vmdk", ["-O", "vmdk", "-o", "subformat=monolithicFlat"]),
            ("split.vmdk", "vmdk", ["-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse"]),
            ("dynamic.vhd", "vpc", ["-O", "vpc", "-o", "subformat=dynamic"]),
            ("fixed.vhd", "vpc", ["-O", "vpc", "-o", "subformat=fixed"]),
            ("disk.vhdx", "vhdx", ["-O", "vhdx"]),
            ("disk.vdi", "vdi", ["-O", "vdi"]),
            ("disk.qed", "qed", ["-O", "qed"]),
        ]
        for (name, _, args) in inPlace {
            try Self.qemuImg(["convert", "-q", "-f", "qcow2"] + args + [Self.intakeBase(f), "\(dir)/\(name)"])
        }
        // Not writable in place: refused before any appliance, bytes unchanged (they go through --output).
        try Self.qemuImg([
            "convert", "-q", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized", Self.intakeBase(f),
            dir + "/stream.vmdk",
        ])
        let ova = try Self.makeOVA(f, in: f.dir + "/ova-one", twoDisks: false)
        try FileManager.default.copyItem(atPath: ova, toPath: dir + "/vm.ova")
        try FileManager.default.createSymbolicLink(atPath: dir + "/link.qcow2", withDestinationPath: dir + "/v3.qcow2")
        let untouched = try ["stream.vmdk", "vm.ova"].map { try fileBytes("\(dir)/\($0)") }

        let reportPath = f.dir + "/formats-report.json"
        let r = try remedy([
            "batch", dir, "--apply", "--report", reportPath, "--format", "json", "--jobs", "1", "--per-appliance", "16",
        ])
        #expect(r.status != 0, "\(r.stderr)")
        let report = try readReport(reportPath)
        let statuses = reportStatuses(report)
        for (name, _, _) in inPlace {
            let entry = try #require(
                report.entries.first { $0.path.hasSuffix("/" + name) }, "\(name) missing: \(statuses)")
            #expect(
                entry.runID != nil && (entry.status == .fixed || entry.status == .needsManual),
                "\(name): \(statuses[name] ?? "?") \(entry.error?.message ?? "")")
            #expect(entry.actions.contains { $0.rule == "nic-dhcp" }, "\(name)")
        }
        #expect(statuses["stream.vmdk"] == "failed:image-read-only", "\(statuses)")
        #expect(statuses["vm.ova"] == "failed:image-read-only", "\(statuses)")
        #expect(report.entries.first { $0.path.hasSuffix("stream.vmdk") }?.error?.message.contains("--output") == true)
        #expect(try ["stream.vmdk", "vm.ova"].map { try fileBytes("\(dir)/\($0)") } == untouched)
        let skips = Dictionary(
            uniqueKeysWithValues: report.skipped.map { (($0.path as NSString).lastPathComponent, $0.reason) })
        #expect(skips["link.qcow2"]?.contains("symbolic link") == true, "\(skips)")
        #expect(skips["flat-flat.vmdk"] != nil && skips["split-s001.vmdk"] != nil, "\(skips)")

        // Read back through another path: one guestfs launch with every result, inspect_os, hivexget on SYSTEM.
        let g = try Guestfs()
        try g.setBackend("direct")
        try g.setBackendSettings(["force_tcg"])
        for (name, format, _) in inPlace { try g.addDrive("\(dir)/\(name)", format: format, readonly: true) }
        try g.launch()
        defer { g.close() }
        let devices = try g.listDevices()
        let roots = try g.inspectOS()
        #expect(roots.count == inPlace.count, "\(roots)")
        let key = "ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\\(Fixtures.guidA)"
        var checked: Set<String> = []
        for root in roots {
            let disk = root.replacingOccurrences(of: #"\d+$"#, with: "", options: .regularExpression)
            let index = try #require(devices.firstIndex(of: disk), "\(root)")
            let name = inPlace[index].0
            try g.mountReadOnly(root, at: "/")
            defer { try? g.umountAll() }
            let local = f.dir + "/readback-\(name)-SYSTEM"
            try g.download(try g.caseSensitivePath("/Windows/System32/config/SYSTEM"), to: local)
            let dhcp = try Self.sh("hivexget \"$1\" \"$2\" EnableDHCP", [local, key]).trimmingCharacters(
                in: .whitespacesAndNewlines)
            #expect(dhcp == "1", "\(name): EnableDHCP \(dhcp)")
            #expect(try g.isDir(try g.caseSensitivePath("/Windows/remedy")), "\(name): no run record")
            checked.insert(name)
        }
        #expect(checked == Set(inPlace.map(\.0)))
    }

    /// apply reads the OVA's system disk from inside the tar and writes a new image; its plan (in the report) has
    /// the descriptor's facts; the OVA stays as it was; a tampered OVA is refused before any appliance; the result
    /// re-plans with nothing left to change and reads back through another path (hivexget on its SYSTEM), in one
    /// launch.
    @Test func ovaIsPlannedWithItsDescriptorFactsAndATamperedManifestIsRefused() throws {
        let f = try Fixtures.get()
        let ova = try Self.makeOVA(f, in: f.dir + "/ova-two", twoDisks: true, firmware: "efi")
        let before = try fileBytes(ova)
        let out = f.dir + "/ova-two/vm-fixed.qcow2"
        let a = try remedy(["apply", ova, "--output", out, "--format", "json"])
        #expect(a.status == 0 || a.status == 2, "\(a.stderr)")
        #expect(try fileBytes(ova) == before)
        #expect(FileManager.default.fileExists(atPath: out) && !FileManager.default.fileExists(atPath: out + ".tmp"))
        #expect(try DiskFormat.detect(path: out) == .qcow2)
        let doc = try #require(try json(a.stdout)["plan"] as? [String: Any], "\(a.stdout.prefix(400))")
        let source = try #require(doc["source"] as? [String: Any], "\(a.stdout.prefix(400))")
        #expect(source["kind"] as? String == "ova")
        #expect(source["manifest"] as? String == "vm.mf")
        #expect(source["firmware"] as? String == "efi")
        #expect(source["osType"] as? String == "windows9Server64Guest")
        #expect(source["nics"] as? [String] == ["VmxNet3", "E1000"])
        let disks = try #require(source["disks"] as? [[String: Any]])
        #expect(disks.map { $0["file"] as? String } == ["disk1.vmdk", "disk2.vmdk"])
        #expect(disks.first?["capacityBytes"] as? Int == 128 << 20)
        #expect((doc["os"] as? [String: Any])?["hostname"] as? String == "INTAKE")
        let ids = ((doc["findings"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }
        #expect(ids.contains("source-multiple-disks") && ids.contains("source-firmware-mismatch"), "\(ids)")
        #expect(((doc["actions"] as? [[String: Any]]) ?? []).contains { $0["rule"] as? String == "nic-dhcp" })

        // One byte of the system disk changed inside the OVA: refused before any appliance, naming the file.
        let listing = try Self.sh("tar -tvRf \"$1\" | grep ' disk1.vmdk$' | sed 's/^block \\([0-9]*\\):.*/\\1/'", [ova])
        let block = try #require(Int(listing.trimmingCharacters(in: .whitespacesAndNewlines)), "\(listing)")
        var bytes = before
        bytes[(block + 1) * 512 + 1000] ^= 0xFF
        let tampered = f.dir + "/ova-two/tampered.ova"
        try bytes.write(to: URL(fileURLWithPath: tampered))
        let t = try remedy(["plan", tampered, "--format", "json"])
        #expect(t.status == 1)
        let err = try json(t.stdout)
        #expect(err["code"] as? String == "unsafe-image", "\(t.stdout)")
        #expect((err["message"] as? String)?.contains("disk1.vmdk") == true, "\(t.stdout)")

        // The result: nothing left to change; then, in the same appliance, its SYSTEM read with libguestfs and hivexget.
        let session = try ImageSession.open(image: out, writable: false, options: Fixtures.options)
        defer { session.close() }
        #expect(
            try !session.plan(policy: PolicyLoader.load("huawei-ims")).hasChanges, "the output does not re-plan clean")
        let g = session.appliance.guestfs
        try g.umountAll()
        let root = try #require(try g.inspectOS().first)
        try g.mountReadOnly(root, at: "/")
        let local = f.dir + "/ova-two/readback-SYSTEM"
        try g.download(try g.caseSensitivePath("/Windows/System32/config/SYSTEM"), to: local)
        let key = "ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\\(Fixtures.guidA)"
        let dhcp = try Self.sh("hivexget \"$1\" \"$2\" EnableDHCP", [local, key]).trimmingCharacters(
            in: .whitespacesAndNewlines)
        #expect(dhcp == "1", "EnableDHCP \(dhcp)")
    }
}
