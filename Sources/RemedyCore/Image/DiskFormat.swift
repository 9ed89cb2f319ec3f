import Foundation
import SystemPackage

extension DiskFormat {
    /// Reads the file's header (and footer) to tell its format. Refuses
    /// images that would make qemu open other files (backing files,
    /// differencing disks, external VMDK extents outside the image's
    /// directory) and files that cannot be a disk at all.
    public static func detect(path: String) throws -> DiskFormat {
        try detect(path: path, offset: 0, length: nil)
    }

    /// The same for a disk stored as a byte range of a file (a member of an OVA's tar).
    static func detect(path: String, offset base: UInt64, length: UInt64?) throws -> DiskFormat {
        guard let fh = FileHandle(forReadingAtPath: path) else {
            throw RemedyError(.imageUnreadable, image: path, "cannot open the file for reading: \(Errno.last)")
        }
        defer { try? fh.close() }
        let size = length ?? ((try? fh.seekToEnd()) ?? 0)
        try? fh.seek(toOffset: base)
        let head = [UInt8]((try? fh.read(upToCount: 4096)) ?? Data())
        guard !head.isEmpty else {
            throw RemedyError(.unsupportedFormat, image: path, "the file is empty")
        }
        func be32(_ o: Int) -> UInt32 { o + 4 <= head.count ? head[o..<o + 4].reduce(0) { $0 << 8 | UInt32($1) } : 0 }
        func be64(_ o: Int) -> UInt64 { o + 8 <= head.count ? head[o..<o + 8].reduce(0) { $0 << 8 | UInt64($1) } : 0 }
        func le32(_ o: Int) -> UInt32 {
            o + 4 <= head.count ? head[o..<o + 4].reversed().reduce(0) { $0 << 8 | UInt32($1) } : 0
        }
        func le64(_ o: Int) -> UInt64 {
            o + 8 <= head.count ? head[o..<o + 8].reversed().reduce(0) { $0 << 8 | UInt64($1) } : 0
        }
        func starts(_ s: String) -> Bool { head.starts(with: Array(s.utf8)) }

        // Huawei Cloud's own formats (their qemu driver's cookies "z2strm" and "stream"): recognised, not readable here.
        for (cookie, name) in [("z2strm", "ZVHD2"), ("stream", "ZVHD")]
        where starts(cookie) && head.count > 6 && head[6] == 0 {
            throw RemedyError(
                .unsupportedFormat, image: path,
                "a \(name) image (Huawei Cloud's own format): the cloud imports it as it is, but remedy cannot "
                    + "open it; convert it to qcow2 or raw with the cloud's image tool (qemu-img with its zvhd driver) to remediate it"
            )
        }
        if head.starts(with: [0x51, 0x46, 0x49, 0xFB]) {  // "QFI\xfb"
            let version = be32(4)
            if be64(8) != 0 {
                throw RemedyError(
                    .unsafeImage, image: path,
                    "the qcow\(version == 1 ? "" : "2") image has a backing file; remedy edits self-contained images only (flatten it with qemu-img convert first)"
                )
            }
            if version == 3, be64(72) & 4 != 0 {  // incompatible feature bit 2: an external data file
                throw RemedyError(
                    .unsafeImage, image: path,
                    "the qcow2 image keeps its data in an external file; remedy edits self-contained images only (convert it with qemu-img first)"
                )
            }
            switch version {
            case 1: return .qcow
            case 2, 3: return .qcow2
            default: throw RemedyError(.unsupportedFormat, image: path, "qcow image of unknown version \(version)")
            }
        }
        if starts("QED\0") {
            if le64(16) & 1 != 0 {
                throw RemedyError(
                    .unsafeImage, image: path,
                    "the QED image has a backing file; remedy edits self-contained images only")
            }
            return .qed
        }
        if starts("vhdxfile") { return .vhdx }
        if le32(0x40) == 0xBEDA_107F { return .vdi }
        if starts("KDMV") {
            // Sparse extent header: capacity @12, grainSize @20, descriptorOffset @28, descriptorSize @36 (sectors).
            // Any bytes are possible here: every product is checked for overflow and bounded by the file's size.
            // The text is read as qemu reads it (`vmdk_read_desc`): from the offset to the end of the file, at most
            // 1 MiB, whatever descriptorSize says (with capacity 0 qemu ignores the size and takes all of it).
            let offset = le64(28)
            if offset > 0 {
                let (byteOffset, overflow) = offset.multipliedReportingOverflow(by: 512)
                if !overflow, byteOffset < size {
                    try? fh.seek(toOffset: base + byteOffset)
                    let text = String(
                        decoding: (try? fh.read(upToCount: Int(min(size - byteOffset, descriptorReadLimit)))) ?? Data(),
                        as: UTF8.self)
                    try checkVMDKDescriptor(text, path: path)
                }
            }
            // qemu also looks for a parent in the 10 KiB at byte 512 of every sparse extent (`vmdk_parent_open`,
            // `desc_offset` 0x200), wherever the header puts the descriptor.
            if size > 512 {
                try? fh.seek(toOffset: base + 512)
                let area = (try? fh.read(upToCount: Int(min(size - 512, 10 * 1024)))) ?? Data()
                if String(decoding: area, as: UTF8.self).contains("parentFileNameHint") {
                    throw RemedyError(
                        .unsafeImage, image: path,
                        "the VMDK is a snapshot (it names a parent disk); consolidate it first")
                }
            }
            return .vmdk
        }
        if starts("# Disk DescriptorFile") {
            try? fh.seek(toOffset: base)
            let text = String(
                decoding: (try? fh.read(upToCount: Int(min(size, descriptorReadLimit)))) ?? Data(), as: UTF8.self)
            try checkVMDKDescriptor(text, path: path)
            return .vmdk
        }
        var footer = head
        if !starts("conectix"), size >= 512 {
            try? fh.seek(toOffset: base + size - 512)
            footer = [UInt8]((try? fh.read(upToCount: 512)) ?? Data())
        }
        if footer.starts(with: Array("conectix".utf8)), footer.count >= 64 {
            let diskType = footer[60..<64].reduce(0) { $0 << 8 | UInt32($1) }
            if diskType == 4 {
                throw RemedyError(
                    .unsafeImage, image: path, "the VHD is a differencing disk (it needs its parent); merge it first")
            }
            return .vhd
        }
        // Raw: a disk with a partition table or a boot sector ends its first sector with 55 AA.
        guard size >= 512, head.count >= 512, head[510] == 0x55, head[511] == 0xAA else {
            throw RemedyError(
                .unsupportedFormat, image: path,
                "not a disk image: no known image format header and no partition table or boot sector in a raw disk")
        }
        return .raw
    }

    /// How much of a VMDK descriptor qemu reads (`vmdk_read_desc`: 1 MiB), embedded or plain.
    static let descriptorReadLimit: UInt64 = 1 << 20

    /// A first, conservative look at a VMDK descriptor (plain or embedded in
    /// a sparse extent), before qemu-img is even asked: a parent, or an extent
    /// name that is absolute, has a protocol prefix (`json:`, `nbd:`...) or
    /// climbs out of the directory, is refused. Lines are split on any line
    /// break and fields on any whitespace, as qemu does; the authority is
    /// qemu's own parse (``QemuView``), this only keeps qemu-img from opening
    /// such names while it is being asked.
    static func checkVMDKDescriptor(_ text: String, path: String) throws {
        if text.contains("parentFileNameHint") {
            throw RemedyError(
                .unsafeImage, image: path, "the VMDK is a snapshot (it names a parent disk); consolidate it first")
        }
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\u{0B}" || $0 == "\u{0C}" })
            guard let first = words.first, ["RW", "RDONLY", "NOACCESS"].contains(first),
                let q1 = line.firstIndex(of: "\"")
            else { continue }
            let rest = line[line.index(after: q1)...]
            let file = String(rest[..<(rest.firstIndex(of: "\"") ?? rest.endIndex)])
            if file.isEmpty || file.hasPrefix("/") || file.contains(":") || file.split(separator: "/").contains("..") {
                throw RemedyError(
                    .unsafeImage, image: path, "the VMDK descriptor points at an extent outside its directory (\(file))"
                )
            }
        }
    }
}
