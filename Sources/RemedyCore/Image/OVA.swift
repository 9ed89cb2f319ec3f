import Foundation
import Synchronization

#if canImport(FoundationXML)
    import FoundationXML
    import SystemPackage
#endif

/// An image given as an OVF package: a `.ova` (a tar of the `.ovf`
/// descriptor, an optional `.mf` manifest and the disks) or an unpacked
/// `.ovf` with its files beside it. ``resolve(_:kind:)`` checks the manifest
/// digests, reads the descriptor (untrusted: size-capped, no DTD or entities)
/// and picks the system disk; the disk is then read where it lies:
///
/// - `.ovf`: `diskPath` is the disk file beside the descriptor (a plain name,
///   no directory parts); it is checked like any image (``QemuView``).
/// - `.ova`: nothing is extracted. A tar member is one contiguous byte range,
///   so qemu reads it with its raw driver (`offset`/`size`) under the disk's
///   format driver: `qemuSpec` is that `json:` pseudo-filename. libguestfs only
///   attaches real files, so a plan attaches a private qcow2 overlay (in a
///   temporary directory removed by ``cleanup()``) whose backing file is
///   `qemuSpec`; the appliance opens it read-only.
///
/// The disk of an OVA/OVF is never written in place (`writableInPlace` is
/// false). To apply: `qemu-img convert -f <format.qemuName> <qemuSpec> ...` or
/// an overlay `qemu-img create -f qcow2 -b <qemuSpec> -F <format.qemuName>`,
/// which is what `remedy apply vm.ova --output OUT` needs.
public struct ImageSource: Sendable {
    public enum Kind: String, Sendable, Codable {
        case ova, ovf
        /// By extension: an OVA or OVF is named so (the content of a disk decides its format, not this).
        public init?(path: String) {
            switch (FilePath(path).extension ?? "").lowercased() {
            case "ova": self = .ova
            case "ovf": self = .ovf
            default: return nil
            }
        }
    }

    public var kind: Kind
    /// The OVA or OVF as the user named it.
    public var path: String
    /// The file that holds the system disk (canonical): the OVA itself, or the disk file beside the OVF.
    public var diskPath: String
    /// The disk's byte range inside the OVA (nil for an OVF's disk file).
    public var diskOffset: UInt64?
    public var diskSize: UInt64?
    /// The system disk's format, from its content.
    public var format: DiskFormat
    /// What qemu opens for the disk: `diskPath`, or the `json:` spec of the tar member.
    public var qemuSpec: String
    /// What the descriptor says (goes into the plan's `source` section).
    public var facts: SourceFacts
    private var work: WorkDirectory = WorkDirectory()

    /// Largest descriptor and manifest remedy reads (real ones are a few KiB).
    static let maxDescriptorBytes: UInt64 = 4 << 20
    /// Most tar members remedy walks.
    static let maxMembers = 10_000

    /// Reads an OVA or OVF: members, manifest, descriptor, system disk.
    public static func resolve(_ path: String, kind: Kind) throws -> ImageSource {
        guard let c = realpath(path, nil) else {
            throw RemedyError(.imageNotFound, image: path, "cannot resolve the path: \(Errno.last)")
        }
        let canonical = String(cString: c)
        free(c)
        let dir = FilePath(canonical).removingLastComponent().string
        // name -> where its bytes are: (file, offset, size)
        var files: [String: (file: String, offset: UInt64, size: UInt64)] = [:]
        let descriptorName: String
        if kind == .ova {
            let members = try TarIndex.read(canonical, image: path)
            guard let first = members.first(where: { $0.name.lowercased().hasSuffix(".ovf") }) else {
                throw RemedyError(.unsupportedFormat, image: path, "the OVA holds no .ovf descriptor")
            }
            descriptorName = first.name
            for m in members { files[m.name] = (canonical, m.offset, m.size) }
        } else {
            descriptorName = (FilePath(canonical).lastComponent?.string ?? "")
            files[descriptorName] = (canonical, 0, fileSize(canonical))
        }
        /// A file of the package: a member of the OVA, or a regular file beside the OVF (a plain name only).
        func locate(_ name: String) throws -> (file: String, offset: UInt64, size: UInt64) {
            if let f = files[name] { return f }
            guard kind == .ovf, TarIndex.isPlainName(name) else {
                throw RemedyError(
                    .unsafeImage, image: path, "the package names \(name), which is not a file of the package")
            }
            let p = dir + "/" + name
            var st = stat()
            guard lstat(p, &st) == 0 else {
                throw RemedyError(.imageNotFound, image: path, "\(name) is missing beside the OVF")
            }
            guard (st.st_mode & S_IFMT) == S_IFREG else {
                throw RemedyError(
                    .unsafeImage, image: path, "\(name) beside the OVF is not a regular file (a symlink?)")
            }
            return (p, 0, UInt64(st.st_size))
        }
        let descriptor = try read(try locate(descriptorName), image: path, what: descriptorName)

        // Manifest: every digest line checked; a mismatch names the file.
        let manifestName = FilePath(descriptorName).removingExtension + ".mf"
        var manifestChecked: [String] = []
        if kind == .ova ? files[manifestName] != nil : FileManager.default.fileExists(atPath: dir + "/" + manifestName)
        {
            let text = String(
                decoding: try read(try locate(manifestName), image: path, what: manifestName), as: UTF8.self)
            for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" })
            where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                guard let m = line.wholeMatch(of: /\s*(SHA1|SHA256|SHA512)\((.+)\)\s*=\s*([0-9a-fA-F]+)\s*/) else {
                    throw RemedyError(
                        .unsafeImage, image: path,
                        "the manifest \(manifestName) has a line remedy cannot check: \(line.prefix(80))")
                }
                let name = String(m.2)
                let actual = try digest(String(m.1), try locate(name), image: path)
                guard actual == m.3.lowercased() else {
                    throw RemedyError(
                        .unsafeImage, image: path,
                        "\(name) does not match its \(m.1) digest in \(manifestName) (tampered or corrupt)")
                }
                manifestChecked.append(name)
            }
        }

        var facts = try OVFDescriptor.parse(descriptor, image: path)
        facts.kind = kind.rawValue
        facts.descriptor = descriptorName
        facts.manifest = manifestChecked.isEmpty ? nil : manifestName
        guard let system = facts.disks.first else {
            throw RemedyError(.unsupportedFormat, image: path, "the OVF descriptor names no disk")
        }
        guard let href = system.file else {
            throw RemedyError(.unsupportedFormat, image: path, "the OVF's system disk \(system.id) has no file")
        }
        let disk = try locate(href)
        let format = try DiskFormat.detect(path: disk.file, offset: disk.offset, length: disk.size)
        let spec: String
        if kind == .ova {
            let inner: [String: Any] = [
                "driver": "raw", "offset": disk.offset, "size": disk.size,
                "file": ["driver": "file", "filename": canonical],
            ]
            let top: [String: Any] = ["driver": format.qemuName, "file": inner]
            let json = try JSONSerialization.data(withJSONObject: top, options: [.sortedKeys, .withoutEscapingSlashes])
            spec = "json:" + String(decoding: json, as: UTF8.self)
        } else {
            spec = disk.file
        }
        return ImageSource(
            kind: kind, path: path, diskPath: disk.file, diskOffset: kind == .ova ? disk.offset : nil,
            diskSize: kind == .ova ? disk.size : nil, format: format, qemuSpec: spec, facts: facts)
    }

    /// What the appliance attaches (path, qemu format) and qemu's view of the disk.
    func attach() throws -> (String, String, QemuView) {
        if kind == .ovf {
            let view = try QemuView.inspect(diskPath, format: format)
            return (view.files[0], format.qemuName, view)
        }
        let top = try QemuView.info(spec: qemuSpec, format: format, image: path)
        let data = ((top["format-specific"] as? [String: Any])?["data"] as? [String: Any]) ?? [:]
        // qemu must open the member and nothing else: every extent it names is the member's own raw node.
        for extent in (data["extents"] as? [[String: Any]]) ?? [] {
            guard let name = extent["filename"] as? String, isMemberSpec(name) else {
                throw RemedyError(
                    .unsafeImage, image: path, "the disk in the OVA names another file (\(extent["filename"] ?? "?"))")
            }
        }
        let view = QemuView(
            format: format, virtualSize: (top["virtual-size"] as? NSNumber)?.int64Value ?? 0,
            createType: data["create-type"] as? String, files: [diskPath], readOnlyReason: "it is inside an OVA")
        let dir = try work.make(image: path)
        let overlay = dir + "/disk.qcow2"
        try QemuImg.run(["create", "-q", "-f", "qcow2", "-b", qemuSpec, "-F", format.qemuName, overlay], image: path)
        return (overlay, "qcow2", view)
    }

    /// Whether a file name qemu reports (`json:{...}`) is exactly the member's raw node remedy gave it: driver raw at
    /// the member's offset and size over the OVA file itself, parsed (not matched as text).
    func isMemberSpec(_ name: String) -> Bool {
        guard name.hasPrefix("json:"), let offset = diskOffset, let size = diskSize,
            let object = try? JSONSerialization.jsonObject(with: Data(name.dropFirst(5).utf8)) as? [String: Any],
            Set(object.keys) == ["driver", "offset", "size", "file"], object["driver"] as? String == "raw",
            (object["offset"] as? NSNumber)?.uint64Value == UInt64(offset),
            (object["size"] as? NSNumber)?.uint64Value == UInt64(size),
            let file = object["file"] as? [String: Any], Set(file.keys) == ["driver", "filename"],
            file["driver"] as? String == "file",
            let filename = file["filename"] as? String
        else { return false }
        return filename == diskPath
    }

    /// Removes the temporary overlay (if any).
    func cleanup() { work.remove() }

    /// Adds the `source` section and the package's findings to a plan of its system disk.
    func annotate(_ plan: inout Plan) {
        plan.source = facts
        if facts.disks.count > 1 {
            plan.findings.append(
                Finding(
                    id: "source-multiple-disks", rule: "source", severity: .warning,
                    message:
                        "the \(kind.rawValue.uppercased()) has \(facts.disks.count) disks; the cloud takes one system disk: remedy reads the first (\(facts.disks[0].file ?? facts.disks[0].id)) as the system disk, the others must be imported as data disks",
                    measured: "\(facts.disks.count) disks", requirement: "1 system disk"))
        }
        if let fw = facts.firmware {
            let ovf = fw.lowercased() == "efi" ? "uefi" : fw.lowercased()
            if plan.os.firmware != .unknown, ovf != plan.os.firmware.rawValue {
                plan.findings.append(
                    Finding(
                        id: "source-firmware-mismatch", rule: "source", severity: .warning,
                        message:
                            "the descriptor says the VM boots with \(fw) but the disk is laid out for \(plan.os.firmware.rawValue); register the image with the disk's firmware",
                        measured: plan.os.firmware.rawValue, requirement: ovf))
            }
        }
    }

    static func fileSize(_ path: String) -> UInt64 {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_size) : 0
    }

    static func read(_ f: (file: String, offset: UInt64, size: UInt64), image: String, what: String) throws -> Data {
        guard f.size <= maxDescriptorBytes else {
            throw RemedyError(
                .unsupportedFormat, image: image,
                "\(what) is \(f.size) bytes; remedy reads descriptors and manifests up to \(maxDescriptorBytes)")
        }
        guard let fh = FileHandle(forReadingAtPath: f.file) else {
            throw RemedyError(.imageUnreadable, image: image, "cannot read \(what)")
        }
        defer { try? fh.close() }
        try fh.seek(toOffset: f.offset)
        return try fh.read(upToCount: Int(f.size)) ?? Data()
    }

    /// A hex digest of a byte range, by coreutils (fast on multi-GB disks).
    static func digest(
        _ algorithm: String, _ f: (file: String, offset: UInt64, size: UInt64), image: String
    ) throws -> String {
        let tool = "/usr/bin/" + algorithm.lowercased() + "sum"
        let r = try? HostTool.execute(
            "/bin/sh",
            [
                "-c", "tail -c +\"$2\" -- \"$1\" | head -c \"$3\" | \"$4\"", "sh", f.file,
                String(f.offset + 1), String(f.size), tool,
            ])
        guard let r, r.status == 0, let hex = String(decoding: r.stdout, as: UTF8.self).split(separator: " ").first
        else {
            throw RemedyError(.imageUnreadable, image: image, "cannot compute the \(algorithm) digest")
        }
        return hex.lowercased()
    }
}

/// A temporary directory shared by copies of an ``ImageSource``, removed once.
final class WorkDirectory: Sendable {
    private let path = Mutex<String?>(nil)

    func make(image: String) throws -> String {
        try path.withLock { path in
            if let path { return path }
            var template = Array((NSTemporaryDirectory() + "/remedy-ova-XXXXXX").utf8CString)
            guard let p = mkdtemp(&template) else {
                throw RemedyError(.hostFailed, image: image, "cannot make a temporary directory: \(Errno.last)")
            }
            let made = String(cString: p)
            path = made
            return made
        }
    }

    func remove() {
        path.withLock { path in
            if let path { try? FileManager.default.removeItem(atPath: path) }
            path = nil
        }
    }

    deinit { remove() }
}

/// Reads an OVF descriptor (untrusted): no DTD, no entities, prefixes ignored.
enum OVFDescriptor {
    static func parse(_ data: Data, image: String) throws -> SourceFacts {
        let head = String(decoding: data.prefix(1 << 20), as: UTF8.self)
        if head.contains("<!DOCTYPE") || head.contains("<!ENTITY") {
            throw RemedyError(
                .unsafeImage, image: image, "the OVF descriptor has a DTD or entities, which remedy does not read")
        }
        let reader = Reader()
        let parser = XMLParser(data: data)
        parser.shouldResolveExternalEntities = false
        parser.shouldProcessNamespaces = false
        parser.delegate = reader
        guard parser.parse() else {
            throw RemedyError(
                .unsupportedFormat, image: image,
                "the OVF descriptor is not well-formed XML: \(parser.parserError.map { "\($0)" } ?? "?")")
        }
        var facts = SourceFacts()
        var disks: [SourceFacts.Disk] = []
        for d in reader.disks {
            let unit = d["capacityAllocationUnits"] ?? "byte"
            var capacity = Int64(d["capacity"] ?? "")
            if let c = capacity, let m = unit.firstMatch(of: /2\s*\^\s*(\d+)/), let e = Int(m.1), e < 63 {
                capacity = c.multipliedReportingOverflow(by: Int64(1) << e).overflow ? nil : c << e
            }
            let href = d["fileRef"].flatMap { reader.files[$0] }
            disks.append(.init(id: d["diskId"] ?? "?", file: href, capacityBytes: capacity, format: d["format"]))
        }
        facts.disks = disks
        facts.firmware = reader.config["firmware"]
        facts.osType = reader.osType ?? reader.osDescription ?? reader.osID
        facts.nics = reader.nics
        return facts
    }

    final class Reader: NSObject, XMLParserDelegate {
        var files: [String: String] = [:]
        var disks: [[String: String]] = []
        var config: [String: String] = [:]
        var osType: String?, osDescription: String?, osID: String?
        var nics: [String] = []
        private var stack: [String] = []
        private var text = ""
        private var item: [String: String]?

        static func local(_ name: String) -> String { name.split(separator: ":").last.map(String.init) ?? name }
        static func attrs(_ a: [String: String]) -> [String: String] {
            var out: [String: String] = [:]
            for (k, v) in a { out[local(k)] = v }
            return out
        }

        func parser(
            _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
            qualifiedName qName: String?,
            attributes attributeDict: [String: String] = [:]
        ) {
            let name = Self.local(elementName)
            let a = Self.attrs(attributeDict)
            let parent = stack.last ?? ""
            stack.append(name)
            text = ""
            switch name {
            case "File" where parent == "References":
                if let id = a["id"], let href = a["href"] { files[id] = href }
            case "Disk" where parent == "DiskSection":
                disks.append(a)
            case "Config" where stack.contains("VirtualHardwareSection"):
                if let k = a["key"], let v = a["value"] { config[k] = v }
            case "OperatingSystemSection":
                osType = a["osType"]
                osID = a["id"]
            case "Item", "EthernetPortItem":
                if stack.contains("VirtualHardwareSection") { item = [:] }
            default: break
            }
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            if text.utf8.count < 4096 { text += string }
        }

        func parser(
            _ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName qName: String?
        ) {
            let name = Self.local(elementName)
            stack.removeLast()
            let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if name == "Description", stack.last == "OperatingSystemSection" { osDescription = value }
            if name == "Item" || name == "EthernetPortItem", let i = item {
                if i["ResourceType"] == "10" { nics.append(i["ResourceSubType"] ?? "unknown") }
                item = nil
            } else if item != nil, stack.last == "Item" || stack.last == "EthernetPortItem" {
                item?[name] = value
            }
            text = ""
        }
    }
}

/// The members of a tar file (ustar, pax and GNU long names): regular files
/// only, each a contiguous byte range. Nothing is extracted. A member whose
/// name is absolute or climbs out (`..`) makes the whole archive unsafe.
enum TarIndex {
    struct Member {
        var name: String
        var offset: UInt64
        var size: UInt64
    }

    static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && !name.hasPrefix("/") && !name.contains("\\") && !name.split(separator: "/").contains("..")
            && !name.contains(where: { $0.asciiValue.map { $0 < 0x20 } ?? false })
    }

    static func read(_ path: String, image: String) throws -> [Member] {
        guard let fh = FileHandle(forReadingAtPath: path) else {
            throw RemedyError(.imageUnreadable, image: image, "cannot open the OVA")
        }
        defer { try? fh.close() }
        let total = (try? fh.seekToEnd()) ?? 0
        var members: [Member] = []
        var offset: UInt64 = 0
        var longName: String?
        var paxName: String?, paxSize: UInt64?
        while offset + 512 <= total {
            guard members.count < ImageSource.maxMembers else {
                throw RemedyError(
                    .unsupportedFormat, image: image, "the OVA has more than \(ImageSource.maxMembers) members")
            }
            try fh.seek(toOffset: offset)
            let h = [UInt8](try fh.read(upToCount: 512) ?? Data())
            guard h.count == 512 else { break }
            if h.allSatisfy({ $0 == 0 }) { break }
            func field(_ o: Int, _ n: Int) -> String {
                let bytes = h[o..<(o + n)]
                return String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            // Header checksum: the sum of the header with the checksum field as spaces.
            let sum = h.enumerated().reduce(0) { $0 + (($1.offset >= 148 && $1.offset < 156) ? 32 : Int($1.element)) }
            guard
                let stored = Int(
                    field(148, 8).trimmingCharacters(in: .whitespaces.union(.init(charactersIn: "\0"))), radix: 8),
                stored == sum
            else {
                throw RemedyError(.unsupportedFormat, image: image, "not a tar archive (bad header at byte \(offset))")
            }
            var size: UInt64
            if h[124] & 0x80 != 0 {  // base-256
                size = h[125..<136].reduce(UInt64(0)) { ($0 << 8) | UInt64($1) }
            } else {
                guard let s = UInt64(field(124, 12).trimmingCharacters(in: .whitespaces), radix: 8) else {
                    throw RemedyError(.unsupportedFormat, image: image, "bad tar member size at byte \(offset)")
                }
                size = s
            }
            let type = h[156]
            let data = offset + 512
            guard size <= total, data <= total - size else {
                throw RemedyError(
                    .unsupportedFormat, image: image, "a tar member runs past the end of the OVA (truncated?)")
            }
            var name = field(0, 100)
            let prefix = field(345, 155)
            if field(257, 5) == "ustar", !prefix.isEmpty { name = prefix + "/" + name }
            if type == UInt8(ascii: "x") || type == UInt8(ascii: "L") {
                guard size <= 1 << 20 else {
                    throw RemedyError(.unsupportedFormat, image: image, "oversized tar extended header")
                }
                try fh.seek(toOffset: data)
                let body = try fh.read(upToCount: Int(size)) ?? Data()
                if type == UInt8(ascii: "L") {
                    longName = String(decoding: body.prefix(while: { $0 != 0 }), as: UTF8.self)
                } else {
                    for record in String(decoding: body, as: UTF8.self).split(separator: "\n") {
                        guard let sp = record.firstIndex(of: " ") else { continue }
                        let kv = record[record.index(after: sp)...]
                        if kv.hasPrefix("path=") { paxName = String(kv.dropFirst(5)) }
                        if kv.hasPrefix("size="), let s = UInt64(kv.dropFirst(5)) { paxSize = s }
                    }
                }
            } else {
                name = paxName ?? longName ?? name
                if let paxSize {
                    size = paxSize
                    guard size <= total, data <= total - size else {
                        throw RemedyError(
                            .unsupportedFormat, image: image, "a tar member runs past the end of the OVA (truncated?)")
                    }
                }
                (paxName, paxSize, longName) = (nil, nil, nil)
                if name.hasPrefix("./") { name.removeFirst(2) }
                if type == UInt8(ascii: "0") || type == 0 {
                    guard isPlainName(name) else {
                        throw RemedyError(
                            .unsafeImage, image: image, "the OVA has a member whose path escapes the archive (\(name))")
                    }
                    members.append(Member(name: name, offset: data, size: size))
                }
                // Directories, links, devices, FIFOs: never considered.
            }
            let padded = (size + 511) / 512 * 512
            guard data <= UInt64.max - padded else { break }
            offset = data + padded
        }
        return members
    }
}
