import Foundation

/// Disk image formats, detected from content (never from the file name).
public enum DiskFormat: String, Sendable, Codable, CaseIterable {
    case raw, qcow2, qcow, vmdk, vhd, vhdx, vdi, qed

    /// qemu's driver name.
    public var qemuName: String {
        switch self {
        case .vhd: "vpc"
        default: rawValue
        }
    }

    /// Reads the file's header (and footer) to tell its format. Refuses
    /// images that would make qemu open other files (backing files,
    /// differencing disks, external VMDK extents outside the image's
    /// directory) and files that cannot be a disk at all.
    public static func detect(path: String) throws -> DiskFormat {
        guard let fh = FileHandle(forReadingAtPath: path) else {
            throw RemedyError(.imageUnreadable, image: path, "cannot open the file for reading: \(String(cString: strerror(errno)))")
        }
        defer { try? fh.close() }
        let size = (try? fh.seekToEnd()) ?? 0
        try? fh.seek(toOffset: 0)
        let head = [UInt8]((try? fh.read(upToCount: 4096)) ?? Data())
        guard !head.isEmpty else {
            throw RemedyError(.unsupportedFormat, image: path, "the file is empty")
        }
        func be32(_ o: Int) -> UInt32 { o + 4 <= head.count ? head[o..<o + 4].reduce(0) { $0 << 8 | UInt32($1) } : 0 }
        func be64(_ o: Int) -> UInt64 { o + 8 <= head.count ? head[o..<o + 8].reduce(0) { $0 << 8 | UInt64($1) } : 0 }
        func le32(_ o: Int) -> UInt32 { o + 4 <= head.count ? head[o..<o + 4].reversed().reduce(0) { $0 << 8 | UInt32($1) } : 0 }
        func le64(_ o: Int) -> UInt64 { o + 8 <= head.count ? head[o..<o + 8].reversed().reduce(0) { $0 << 8 | UInt64($1) } : 0 }
        func starts(_ s: String) -> Bool { head.starts(with: Array(s.utf8)) }

        // Huawei Cloud's own formats (their qemu driver's cookies "z2strm" and "stream"): recognised, not readable here.
        for (cookie, name) in [("z2strm", "ZVHD2"), ("stream", "ZVHD")] where starts(cookie) && head.count > 6 && head[6] == 0 {
            throw RemedyError(.unsupportedFormat, image: path, "a \(name) image (Huawei Cloud's own format): the cloud imports it as it is, but remedy cannot "
                              + "open it; convert it to qcow2 or raw with the cloud's image tool (qemu-img with its zvhd driver) to remediate it")
        }
        if head.starts(with: [0x51, 0x46, 0x49, 0xFB]) {  // "QFI\xfb"
            let version = be32(4)
            if be64(8) != 0 {
                throw RemedyError(.unsafeImage, image: path, "the qcow\(version == 1 ? "" : "2") image has a backing file; remedy edits self-contained images only (flatten it with qemu-img convert first)")
            }
            switch version {
            case 1: return .qcow
            case 2, 3: return .qcow2
            default: throw RemedyError(.unsupportedFormat, image: path, "qcow image of unknown version \(version)")
            }
        }
        if starts("QED\0") {
            if le64(16) & 1 != 0 {
                throw RemedyError(.unsafeImage, image: path, "the QED image has a backing file; remedy edits self-contained images only")
            }
            return .qed
        }
        if starts("vhdxfile") { return .vhdx }
        if le32(0x40) == 0xBEDA_107F { return .vdi }
        if starts("KDMV") {
            if le64(28) > 0, le64(32) > 0, le64(28) < UInt64(size) / 512 {   // an offset past the file (or one that overflows) is not read
                try? fh.seek(toOffset: le64(28) * 512)
                let text = String(decoding: (try? fh.read(upToCount: Int(min(le64(32), 2048)) * 512)) ?? Data(), as: UTF8.self)
                try checkVMDKDescriptor(text, path: path, embedded: true)
            }
            return .vmdk
        }
        if starts("# Disk DescriptorFile") {
            try? fh.seek(toOffset: 0)
            let text = String(decoding: (try? fh.read(upToCount: 64 * 1024)) ?? Data(), as: UTF8.self)
            try checkVMDKDescriptor(text, path: path, embedded: false)
            return .vmdk
        }
        var footer = head
        if !starts("conectix"), size >= 512 {
            try? fh.seek(toOffset: size - 512)
            footer = [UInt8]((try? fh.read(upToCount: 512)) ?? Data())
        }
        if footer.starts(with: Array("conectix".utf8)), footer.count >= 64 {
            let diskType = footer[60..<64].reduce(0) { $0 << 8 | UInt32($1) }
            if diskType == 4 {
                throw RemedyError(.unsafeImage, image: path, "the VHD is a differencing disk (it needs its parent); merge it first")
            }
            return .vhd
        }
        // Raw: a disk with a partition table or a boot sector ends its first sector with 55 AA.
        guard size >= 512, head.count >= 512, head[510] == 0x55, head[511] == 0xAA else {
            throw RemedyError(.unsupportedFormat, image: path, "not a disk image: no known image format header and no partition table or boot sector in a raw disk")
        }
        return .raw
    }

    /// A VMDK descriptor must not name a parent or extents outside the image's directory.
    static func checkVMDKDescriptor(_ text: String, path: String, embedded: Bool) throws {
        for line in text.split(separator: "\n") {
            let l = line.trimmingCharacters(in: .whitespaces)
            if l.hasPrefix("parentFileNameHint") {
                throw RemedyError(.unsafeImage, image: path, "the VMDK is a snapshot (it names a parent disk); consolidate it first")
            }
            if l.hasPrefix("parentCID"), let v = l.split(separator: "=").last?.trimmingCharacters(in: .whitespaces), v.lowercased() != "ffffffff" {
                throw RemedyError(.unsafeImage, image: path, "the VMDK is a snapshot (parentCID \(v)); consolidate it first")
            }
            guard !embedded, l.hasPrefix("RW ") || l.hasPrefix("RDONLY ") || l.hasPrefix("NOACCESS ") else { continue }
            // RW <sectors> <type> "file" [offset]
            guard let q1 = l.firstIndex(of: "\""), let q2 = l[l.index(after: q1)...].firstIndex(of: "\"") else { continue }
            let file = String(l[l.index(after: q1)..<q2])
            if file.hasPrefix("/") || file.contains("..") {
                throw RemedyError(.unsafeImage, image: path, "the VMDK descriptor points at an extent outside its directory (\(file))")
            }
            let dir = (path as NSString).deletingLastPathComponent
            let extent = (dir.isEmpty ? "." : dir) + "/" + file
            if !FileManager.default.fileExists(atPath: extent) {
                throw RemedyError(.imageUnreadable, image: path, "the VMDK descriptor's extent \(file) is missing")
            }
        }
    }
}
