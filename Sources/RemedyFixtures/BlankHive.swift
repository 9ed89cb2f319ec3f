import RegistryFormat

/// Writes the bytes of an empty registry hive (regf format 1.x) from the
/// published file format: a base block, one 4 KiB hive bin holding the root
/// key (nk), its security record (sk) and a free cell. libhivex cannot create
/// hives, only open them; everything else is added through libhivex.
public enum BlankHive {
    /// 100-ns intervals since 1601-01-01 for a fixed, reproducible moment (2020-01-01).
    public static let fixedFileTime: UInt64 = 132_223_104_000_000_000

    /// - Parameters:
    ///   - rootName: the root key's name (Windows uses `ROOT` or `CMI-CreateHive{…}`).
    ///   - minorVersion: 3, 4, 5 or 6 (SYSTEM and SOFTWARE are 1.5 on modern Windows).
    ///   - fileName: the last part of the path Windows records in the base block.
    public static func bytes(
        rootName: String = "ROOT", minorVersion: UInt32 = 5,
        fileName: String = "\\SystemRoot\\System32\\Config\\SYSTEM",
        fileTime: UInt64 = fixedFileTime
    ) -> [UInt8] {
        let binSize = 4096
        var w = ByteWriter(count: 4096 + binSize)

        // Base block.
        w.ascii("regf", at: 0)
        w.u32(1, at: 4)  // primary sequence number
        w.u32(1, at: 8)  // secondary sequence number
        w.u64(fileTime, at: 12)
        w.u32(1, at: 20)  // major version
        w.u32(minorVersion, at: 24)
        w.u32(0, at: 28)  // file type: primary
        w.u32(1, at: 32)  // file format: direct memory load
        w.u32(0x20, at: 36)  // root cell offset
        w.u32(UInt32(binSize), at: 40)  // hive bins data size
        w.u32(1, at: 44)  // clustering factor
        w.utf16(String(fileName.suffix(31)), at: 48)

        // Hive bin header.
        let bin = 4096
        w.ascii("hbin", at: bin)
        w.u32(0, at: bin + 4)  // offset of this bin
        w.u32(UInt32(binSize), at: bin + 8)
        w.u64(fileTime, at: bin + 20)

        // Root key node.
        let nkOffset = 0x20
        let name = Array(rootName.utf8)
        let nkSize = align8(4 + 76 + name.count)
        let skOffset = nkOffset + nkSize
        let nk = bin + nkOffset
        w.i32(-Int32(nkSize), at: nk)
        w.ascii("nk", at: nk + 4)
        w.u16(0x0004 | 0x0008 | 0x0020, at: nk + 6)  // hive entry (root), no delete, ASCII name
        w.u64(fileTime, at: nk + 8)
        w.u32(0, at: nk + 16)  // access bits
        w.u32(0xFFFF_FFFF, at: nk + 20)  // parent (none)
        w.u32(0, at: nk + 24)  // subkeys
        w.u32(0, at: nk + 28)  // volatile subkeys
        w.u32(0xFFFF_FFFF, at: nk + 32)  // subkeys list
        w.u32(0xFFFF_FFFF, at: nk + 36)  // volatile subkeys list
        w.u32(0, at: nk + 40)  // values
        w.u32(0xFFFF_FFFF, at: nk + 44)  // values list
        w.u32(UInt32(skOffset), at: nk + 48)
        w.u32(0xFFFF_FFFF, at: nk + 52)  // class name
        w.u16(UInt16(name.count), at: nk + 76)
        w.u16(0, at: nk + 78)
        w.put(name, at: nk + 80)

        // Security record shared by every key.
        let sd = securityDescriptor()
        let skSize = align8(4 + 20 + sd.count)
        let sk = bin + skOffset
        w.i32(-Int32(skSize), at: sk)
        w.ascii("sk", at: sk + 4)
        w.u32(UInt32(skOffset), at: sk + 8)  // flink: itself (only record)
        w.u32(UInt32(skOffset), at: sk + 12)  // blink
        w.u32(1, at: sk + 16)  // reference count
        w.u32(UInt32(sd.count), at: sk + 20)
        w.put(sd, at: sk + 24)

        // The rest of the bin is one free cell.
        let freeOffset = skOffset + skSize
        w.i32(Int32(binSize - freeOffset), at: bin + freeOffset)

        var out = w.bytes
        RegfChecksum.stamp(&out)
        return out
    }

    static func align8(_ n: Int) -> Int { (n + 7) & ~7 }

    /// Owner Administrators, group SYSTEM; DACL: SYSTEM and Administrators
    /// full control, Everyone read; inherited by subkeys.
    static func securityDescriptor() -> [UInt8] {
        let system: [UInt8] = [1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]
        let admins: [UInt8] = [1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 0x02, 0, 0]
        let everyone: [UInt8] = [1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
        func ace(_ mask: UInt32, _ sid: [UInt8]) -> [UInt8] {
            var w = ByteWriter(count: 8 + sid.count)
            w.u8(0, at: 0)  // ACCESS_ALLOWED_ACE_TYPE
            w.u8(0x02, at: 1)  // CONTAINER_INHERIT_ACE
            w.u16(UInt16(8 + sid.count), at: 2)
            w.u32(mask, at: 4)
            w.put(sid, at: 8)
            return w.bytes
        }
        let aces = ace(0xF003F, system) + ace(0xF003F, admins) + ace(0x20019, everyone)
        var acl = ByteWriter(count: 8)
        acl.u8(2, at: 0)
        acl.u16(UInt16(8 + aces.count), at: 2)
        acl.u16(3, at: 4)
        let dacl = acl.bytes + aces
        var head = ByteWriter(count: 20)
        head.u8(1, at: 0)
        head.u16(0x8004, at: 2)  // self-relative, DACL present
        let ownerOffset = 20 + dacl.count
        head.u32(UInt32(ownerOffset), at: 4)
        head.u32(UInt32(ownerOffset + admins.count), at: 8)
        head.u32(0, at: 12)
        head.u32(20, at: 16)
        return head.bytes + dacl + admins + system
    }
}

/// The base block checksum as Windows computes it: XOR of the first 127
/// dwords, with 0xFFFFFFFF stored as 0xFFFFFFFE and 0 stored as 1; stamped into fixtures (the computation lives in RegistryFormat).
public enum RegfChecksum {
    public static func compute(_ base: [UInt8]) -> UInt32 { BaseBlock.checksum(base) }

    public static func stamp(_ file: inout [UInt8]) {
        file.put32(compute(file), at: 508)
    }
}
