import Foundation
import Testing

@testable import RemedyCore
@testable import RemedyPlanning

/// Image intake on the host: format detection never traps, qemu's own view
/// decides what is opened, nothing outside the image is read. No appliance:
/// these need qemu-img only.
@Suite struct IntakeTests {
    let dir: String
    let secret: String
    static let marker = "REMEDY-HOST-SECRET-MARKER"

    init() throws {
        dir = NSTemporaryDirectory() + "/remedy-intake-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir + "/img", withIntermediateDirectories: true)
        // A "host file" outside the image's directory, 4 KiB, with a known marker.
        secret = dir + "/secret.txt"
        var bytes = Data(String(repeating: Self.marker + "\n", count: 100).utf8)
        bytes.count = 4096
        try bytes.write(to: URL(fileURLWithPath: secret))
    }

    func write(_ name: String, _ data: Data) throws -> String {
        let p = dir + "/img/" + name
        try data.write(to: URL(fileURLWithPath: p))
        return p
    }

    func descriptor(_ extentLine: String, extra: String = "") -> Data {
        Data(
            """
            # Disk DescriptorFile
            version=1
            CID=12345678
            parentCID=ffffffff
            createType="monolithicFlat"
            \(extra)
            # Extent description
            \(extentLine)

            ddb.adapterType = "ide"

            """.utf8)
    }

    /// A sparse VMDK header (512 bytes) with the given fields, followed by `tail`.
    func sparseHeader(
        capacity: UInt64, descriptorOffset: UInt64, descriptorSize: UInt64, tail: Data = Data(), total: Int = 4096
    ) -> Data {
        var h = [UInt8](repeating: 0, count: 512)
        func put32(_ o: Int, _ v: UInt32) {
            for i in 0..<4 { h[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
        }
        func put64(_ o: Int, _ v: UInt64) {
            for i in 0..<8 { h[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
        }
        h[0..<4] = [0x4B, 0x44, 0x4D, 0x56]  // KDMV
        put32(4, 1)
        put32(8, 3)
        put64(12, capacity)
        put64(20, 128)
        put64(28, descriptorOffset)
        put64(36, descriptorSize)
        put32(44, 512)
        put64(48, 0)
        put64(56, 0)
        put64(64, 128)
        h[73] = 0x0A
        h[74] = 0x20
        h[75] = 0x0D
        h[76] = 0x0A
        var d = Data(h) + tail
        if d.count < total { d.count = total }
        return d
    }

    func code(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch let e as RemedyError { return e.code.rawValue } catch { return "other: \(error)" }
    }

    /// The checks a session and `remedy convert` run before qemu opens anything.
    func intake(_ path: String) throws -> QemuView {
        try QemuView.inspect(path, format: try DiskFormat.detect(path: path))
    }

    /// Converting must fail with `code`, write no output, leave the input as it was, and never carry the marker anywhere.
    func expectRefused(_ path: String, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        let out = dir + "/out-\(UUID().uuidString.prefix(6)).raw"
        #expect(code { _ = try intake(path) } == expected, sourceLocation: sourceLocation)
        #expect(code { try Converter.convert(path, to: .raw, output: out) } == expected, sourceLocation: sourceLocation)
        #expect(!FileManager.default.fileExists(atPath: out), sourceLocation: sourceLocation)
        #expect(!FileManager.default.fileExists(atPath: out + ".remedy-partial"), sourceLocation: sourceLocation)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before, sourceLocation: sourceLocation)
    }

    @Test func tabSeparatedExtentPointingAtAHostFileIsRefused() throws {
        let p = try write("tab.vmdk", descriptor("RW\t8 FLAT \"\(secret)\" 0"))
        try expectRefused(p, "unsafe-image")
    }

    @Test func extentThroughASymlinkOutOfTheDirectoryIsRefusedByQemusView() throws {
        // The descriptor text names a plain file beside it (the first look lets it by); qemu resolves it outside.
        try FileManager.default.createSymbolicLink(atPath: dir + "/img/link-flat.vmdk", withDestinationPath: secret)
        let p = try write("link.vmdk", descriptor("RW 8 FLAT \"link-flat.vmdk\" 0"))
        try expectRefused(p, "unsafe-image")
    }

    @Test func extentInTheImagesDirectoryIsAccepted() throws {
        var flat = Data(count: 4096)
        flat[0] = 1
        _ = try write("good-flat.vmdk", flat)
        let p = try write("good.vmdk", descriptor("RW  \t 8 FLAT \"good-flat.vmdk\" 0"))
        let view = try intake(p)
        #expect(view.format == .vmdk)
        #expect(view.files.count == 2 && view.files[1].hasSuffix("/img/good-flat.vmdk"))
        #expect(view.writableInPlace)
    }

    /// Issue 12 review: a descriptor may name as its extent another image of the same directory (another customer's
    /// disk in a batch directory). The extent is locked as the image is: two images that share a file are never
    /// written at the same time, nor one read while the other is written.
    @Test func anExtentIsLockedLikeTheImage() throws {
        var other = Data(count: 4096)
        other[510] = 0x55
        other[511] = 0xAA
        let raw = try write("other-customer.raw", other)
        let vmdk = try write("names-other.vmdk", descriptor("RW 8 FLAT \"other-customer.raw\" 0"))
        // Writing the VMDK holds the other image: it can be neither written nor read meanwhile.
        let writing = try PreparedImage.prepare(vmdk, writable: true)
        #expect(writing.extentLockFDs.count == 1)
        #expect(code { _ = try PreparedImage.prepare(raw, writable: true) } == "image-locked")
        #expect(code { _ = try PreparedImage.prepare(raw, writable: false) } == "image-locked")
        writing.unlock()
        // Writing the other image keeps the VMDK from being opened; reading both at once is fine.
        let raw1 = try PreparedImage.prepare(raw, writable: true)
        #expect(code { _ = try PreparedImage.prepare(vmdk, writable: false) } == "image-locked")
        raw1.unlock()
        let r1 = try PreparedImage.prepare(raw, writable: false)
        let r2 = try PreparedImage.prepare(vmdk, writable: false)
        r1.unlock()
        r2.unlock()
        let again = try PreparedImage.prepare(raw, writable: true)
        again.unlock()
    }

    @Test func protocolAndParentExtentsAreRefused() throws {
        for (name, text) in [
            (
                "json.vmdk",
                descriptor("RW 8 FLAT \"json:{\\\"driver\\\":\\\"file\\\",\\\"filename\\\":\\\"\(secret)\\\"}\" 0")
            ),
            ("dotdot.vmdk", descriptor("RW 8 FLAT \"../secret.txt\" 0")),
            ("nbd.vmdk", descriptor("RDONLY 8 FLAT \"nbd://127.0.0.1:1/x\" 0")),
            // parentFileNameHint not at the start of a line: qemu finds it anywhere.
            (
                "parent.vmdk",
                descriptor(
                    "RW 8 FLAT \"p-flat.vmdk\" 0", extra: "ddb.comment = \"x\" \tparentFileNameHint=\"\(secret)\"")
            ),
        ] {
            try expectRefused(try write(name, text), "unsafe-image")
        }
    }

    @Test func embeddedDescriptorWithCapacityZeroIsChecked() throws {
        // qemu reads a sparse header with capacity 0 as a pointer to a full descriptor, extents included.
        let desc = descriptor("RW 8 FLAT \"\(secret)\" 0")
        let p = try write(
            "embedded.vmdk", sparseHeader(capacity: 0, descriptorOffset: 1, descriptorSize: 1, tail: desc))
        try expectRefused(p, "unsafe-image")
        // Through a symlink beside it, which the text check cannot see: qemu's view refuses it.
        try FileManager.default.createSymbolicLink(atPath: dir + "/img/e-flat.vmdk", withDestinationPath: secret)
        let q = try write(
            "embedded2.vmdk",
            sparseHeader(
                capacity: 0, descriptorOffset: 1, descriptorSize: 1,
                tail: descriptor("RW 8 FLAT \"e-flat.vmdk\" 0")))
        try expectRefused(q, "unsafe-image")
    }

    @Test func hugeDescriptorOffsetDoesNotTrap() throws {
        // The 4 KiB reproduction: descriptor offset near 2^64 sectors (the old reader's multiplication trapped).
        let p = try write(
            "huge.vmdk", sparseHeader(capacity: 2048, descriptorOffset: UInt64.max - 3, descriptorSize: UInt64.max))
        #expect(try DiskFormat.detect(path: p) == .vmdk)
        try expectRefused(p, "unsupported-format")
        // The descriptor at offset 1 (sector), size 1, read as such (the size is at byte 36, not 32, the high half of
        // the offset): its extent naming a host file is seen and refused before qemu-img is asked.
        let q = try write(
            "size.vmdk",
            sparseHeader(
                capacity: 2048, descriptorOffset: 1, descriptorSize: 1,
                tail: descriptor("RW 8 FLAT \"\(secret)\" 0")))
        #expect(code { _ = try DiskFormat.detect(path: q) } == "unsafe-image")
    }

    /// qemu (`vmdk_read_desc`) reads a capacity-0 embedded descriptor from its offset to the end of the file, at most
    /// 1 MiB, whatever descriptorSize says; and a plain descriptor's first 1 MiB. The first look reads as much, so
    /// qemu-img never opens an extent (here nbd://) that remedy has not looked at.
    @Test func descriptorsAreReadAsFarAsQemuReadsThem() throws {
        let nbd = "RW 8 FLAT \"nbd://127.0.0.1:1/x\" 0"
        // descriptorSize 0: the old check skipped the text.
        let zero = try write(
            "size0.vmdk", sparseHeader(capacity: 0, descriptorOffset: 1, descriptorSize: 0, tail: descriptor(nbd)))
        #expect(code { _ = try DiskFormat.detect(path: zero) } == "unsafe-image")
        // descriptorSize 1 (512 bytes), the extent line 8 KiB further on.
        let pad = String(repeating: "# padding padding padding padding padding padding padding padding\n", count: 128)
        let long = try write(
            "size1.vmdk",
            sparseHeader(
                capacity: 0, descriptorOffset: 1, descriptorSize: 1,
                tail: descriptor(nbd, extra: pad), total: 64 << 10))
        #expect(code { _ = try DiskFormat.detect(path: long) } == "unsafe-image")
        // A plain descriptor whose extent line is past the first 64 KiB.
        let plain = try write("plain-long.vmdk", descriptor(nbd, extra: String(repeating: pad, count: 10)))
        #expect(try Data(contentsOf: URL(fileURLWithPath: plain)).count > 80 << 10)
        #expect(code { _ = try DiskFormat.detect(path: plain) } == "unsafe-image")
        // qemu looks for a parent at byte 512 of a sparse extent whatever the header's descriptor offset says.
        let parent = try write(
            "parent-at-512.vmdk",
            sparseHeader(
                capacity: 2048, descriptorOffset: 0, descriptorSize: 0,
                tail: Data("parentCID=1\nparentFileNameHint=\"\(secret)\"\n".utf8)))
        #expect(code { _ = try DiskFormat.detect(path: parent) } == "unsafe-image")
    }

    @Test func headerReaderNeverTrapsOnAnyBytes() throws {
        var rng = SystemRandomNumberGenerator()
        let seed = UInt64.random(in: 0...UInt64.max, using: &rng)
        var state = seed
        func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state
        }
        let magics: [[UInt8]] = [
            [0x4B, 0x44, 0x4D, 0x56], [0x51, 0x46, 0x49, 0xFB], Array("QED\0".utf8), Array("vhdxfile".utf8),
            Array("conectix".utf8), Array("# Disk DescriptorFile\n".utf8),
        ]
        let p = dir + "/img/fuzz.bin"
        for i in 0..<300 {
            var bytes = (0..<(512 + Int(next() % 4096))).map { _ in UInt8(truncatingIfNeeded: next() >> 33) }
            let m = magics[i % magics.count]
            bytes.replaceSubrange(0..<m.count, with: m)
            try Data(bytes).write(to: URL(fileURLWithPath: p))
            _ = try? DiskFormat.detect(path: p)  // any answer or error, never a trap (seed \(seed) replays it)
        }
    }

    @Test func backingFilesAndExternalDataFilesAreRefused() throws {
        let base = dir + "/base.qcow2"
        try QemuImg.run(["create", "-q", "-f", "qcow2", base, "1M"], image: base)
        let overlay = dir + "/img/overlay.qcow2"
        try QemuImg.run(["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay], image: overlay)
        try expectRefused(overlay, "unsafe-image")
        let withData = dir + "/img/datafile.qcow2"
        try QemuImg.run(
            ["create", "-q", "-f", "qcow2", "-o", "data_file=\(secret)", withData, "4096"], image: withData)
        try expectRefused(withData, "unsafe-image")
    }

    @Test func qemuDecidesWhatIsWritableInPlace() throws {
        let raw = dir + "/phony.raw"
        var mbr = Data(count: 1 << 20)
        mbr[510] = 0x55
        mbr[511] = 0xAA
        try mbr.write(to: URL(fileURLWithPath: raw))
        var cases: [(String, [String], Bool)] = [
            ("stream.vmdk", ["-O", "vmdk", "-o", "subformat=streamOptimized"], false),
            ("sparse.vmdk", ["-O", "vmdk", "-o", "subformat=monolithicSparse"], true),
            ("flat.vmdk", ["-O", "vmdk", "-o", "subformat=monolithicFlat"], true),
            ("split.vmdk", ["-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse"], true),
            ("c.qcow2", ["-O", "qcow2", "-c"], true),
            ("d.vhd", ["-O", "vpc"], true),
            ("e.vhdx", ["-O", "vhdx"], true),
        ]
        cases.append(("ro.qcow2", ["-O", "qcow2"], false))
        for (name, args, writable) in cases {
            let p = dir + "/img/" + name
            try QemuImg.run(["convert", "-q", "-f", "raw"] + args + [raw, p], image: p)
            if name == "ro.qcow2" { chmod(p, 0o444) }
            let view = try intake(p)
            #expect(view.writableInPlace == writable, "\(name): \(view.readOnlyReason ?? "writable")")
            let before = try Data(contentsOf: URL(fileURLWithPath: p))
            let result = code {
                let img = try PreparedImage.prepare(p, writable: true)
                img.unlock()
            }
            #expect(result == (writable ? nil : "image-read-only"), "\(name)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: p)) == before)
            // Read-only use (plan, --output) is always fine.
            let ro = try PreparedImage.prepare(p, writable: false)
            #expect(ro.writableInPlace == writable)
            #expect(ro.drivePath.hasPrefix("/"))
            ro.unlock()
        }
    }

    // MARK: OVA / OVF

    func sh(_ script: String, _ args: [String] = []) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script, "sh"] + args
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(script)")
    }

    /// An OVF with one raw disk beside it (and a manifest).
    func makeOVF(_ sub: String, disks: [String] = ["disk1.raw"], firmware: String? = "bios") throws -> String {
        let d = dir + "/" + sub
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        for name in disks {
            var mbr = Data(count: 1 << 20)
            mbr[510] = 0x55
            mbr[511] = 0xAA
            try mbr.write(to: URL(fileURLWithPath: d + "/" + name))
        }
        let refs = disks.enumerated().map { "<File ovf:href=\"\($0.element)\" ovf:id=\"f\($0.offset)\"/>" }.joined()
        let ds = disks.indices.map {
            "<Disk ovf:capacity=\"1\" ovf:capacityAllocationUnits=\"byte * 2^20\" ovf:diskId=\"d\($0)\" ovf:fileRef=\"f\($0)\"/>"
        }.joined()
        let fw = firmware.map { "<vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"\($0)\"/>" } ?? ""
        let ovf = """
            <?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:rasd="x">
            <References>\(refs)</References><DiskSection><Info>x</Info>\(ds)</DiskSection>
            <VirtualSystem ovf:id="v"><OperatingSystemSection ovf:id="112"><Description>Windows Server 2016</Description></OperatingSystemSection>
            <VirtualHardwareSection><Item><rasd:ResourceSubType>E1000e</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>\(fw)</VirtualHardwareSection></VirtualSystem></Envelope>
            """
        try ovf.write(toFile: d + "/vm.ovf", atomically: true, encoding: .utf8)
        try sh(
            "cd \"$1\" && for f in vm.ovf \"$2\"; do echo \"SHA256($f)= $(sha256sum $f | cut -d' ' -f1)\"; done > vm.mf",
            [d, disks[0]])
        return d + "/vm.ovf"
    }

    @Test func ovfIsResolvedToTheDiskBesideItWithItsFacts() throws {
        let ovf = try makeOVF("ovf1", disks: ["disk1.raw", "disk2.raw"])
        let source = try ImageSource.resolve(ovf, kind: .ovf)
        #expect(source.format == .raw)
        #expect(source.diskPath.hasSuffix("/ovf1/disk1.raw") && source.diskOffset == nil)
        #expect(source.facts.disks.map(\.file) == ["disk1.raw", "disk2.raw"])
        #expect(source.facts.disks.first?.capacityBytes == 1 << 20)
        #expect(
            source.facts.firmware == "bios" && source.facts.nics == ["E1000e"]
                && source.facts.osType == "Windows Server 2016")
        #expect(source.facts.manifest == "vm.mf")
        let img = try PreparedImage.prepare(ovf, writable: false)
        #expect(img.drivePath == source.diskPath && img.driveFormat == "raw" && !img.writableInPlace)
        img.unlock()
        #expect(code { _ = try PreparedImage.prepare(ovf, writable: true) } == "image-read-only")
    }

    @Test func ovaIsReadInPlaceAndItsManifestChecked() throws {
        let ovf = try makeOVF("ova1")
        let d = (ovf as NSString).deletingLastPathComponent
        try sh("cd \"$1\" && tar --format=ustar -cf vm.ova vm.ovf vm.mf disk1.raw", [d])
        let source = try ImageSource.resolve(d + "/vm.ova", kind: .ova)
        #expect(source.format == .raw && source.diskOffset != nil && source.qemuSpec.hasPrefix("json:"))
        let (drive, format, view) = try source.attach()
        #expect(format == "qcow2" && FileManager.default.fileExists(atPath: drive) && !view.writableInPlace)
        #expect(view.virtualSize == 1 << 20)
        source.cleanup()
        // A VMDK member's extents must be the member's own raw node, compared as parsed JSON (qemu's spelling, keys in
        // any order), never as text: a name that merely contains `"offset": N` is another file.
        let (off, size, file) = (source.diskOffset!, source.diskSize!, source.diskPath)
        #expect(
            source.isMemberSpec(
                "json:{\"offset\": \(off), \"driver\": \"raw\", \"size\": \(size), \"file\": {\"driver\": \"file\", \"filename\": \"\(file)\"}}"
            ))
        for forged in [
            "json:{\"offset\": \(off), \"driver\": \"raw\", \"size\": \(size), \"file\": {\"driver\": \"file\", \"filename\": \"\(secret)\"}}",
            "json:{\"driver\": \"file\", \"filename\": \"\(secret)\", \"x-\\\"offset\\\": \(off)\": 1}",
            "json:{\"offset\": \(off), \"driver\": \"raw\", \"size\": \(size), \"file\": {\"driver\": \"nbd\", \"filename\": \"\(file)\"}}",
            "json:{\"offset\": \(off + 512), \"driver\": \"raw\", \"size\": \(size), \"file\": {\"driver\": \"file\", \"filename\": \"\(file)\"}}",
            "/tmp/x \"offset\": \(off)",
        ] {
            #expect(!source.isMemberSpec(forged), "\(forged)")
        }
        #expect(!FileManager.default.fileExists(atPath: drive))
        // Tampered disk: the manifest names it.
        try sh(
            "cd \"$1\" && printf X > disk1.raw.new && cat disk1.raw >> disk1.raw.new && head -c 1048576 disk1.raw.new > disk1.raw && tar --format=ustar -cf bad.ova vm.ovf vm.mf disk1.raw",
            [d])
        do {
            _ = try ImageSource.resolve(d + "/bad.ova", kind: .ova)
            Issue.record("tampered OVA accepted")
        } catch let e as RemedyError {
            #expect(e.code == .unsafeImage && e.message.contains("disk1.raw") && e.message.contains("SHA256"), "\(e)")
        }
        // And the unpacked OVF beside it too.
        #expect(code { _ = try ImageSource.resolve(ovf, kind: .ovf) } == "unsafe-image")
    }

    @Test func ovaMembersThatEscapeOrAreNotRegularFilesAreNeverUsed() throws {
        let ovf = try makeOVF("ova2", firmware: nil)
        let d = (ovf as NSString).deletingLastPathComponent
        // A symlink member named like the disk: not a regular file, so the disk is "missing".
        try sh(
            "cd \"$1\" && mkdir -p s && cp vm.ovf s/ && ln -s /etc/passwd s/disk1.raw && cd s && tar --format=ustar -cf ../link.ova vm.ovf disk1.raw",
            [d])
        #expect(code { _ = try ImageSource.resolve(d + "/link.ova", kind: .ova) } == "unsafe-image")
        // A member whose path climbs out.
        try sh(
            "cd \"$1\" && mkdir -p x && cp vm.ovf x/ && cd x && tar --format=ustar -P -cf ../escape.ova vm.ovf ../disk1.raw",
            [d])
        do {
            _ = try ImageSource.resolve(d + "/escape.ova", kind: .ova)
            Issue.record("escaping member accepted")
        } catch let e as RemedyError {
            #expect(e.code == .unsafeImage && e.message.contains("escapes"), "\(e)")
        }
        // A descriptor with a DTD (entity expansion) is not read.
        let bomb = d + "/bomb.ovf"
        try "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\">]><Envelope>&a;</Envelope>".write(
            toFile: bomb, atomically: true, encoding: .utf8)
        #expect(code { _ = try ImageSource.resolve(bomb, kind: .ovf) } == "unsafe-image")
    }
}
