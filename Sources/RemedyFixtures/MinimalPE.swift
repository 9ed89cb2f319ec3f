/// A minimal, valid Windows PE executable with one code section that returns
/// zero. libguestfs reads the machine type of `System32\cmd.exe` to decide
/// the guest's architecture, so phony images carry one of these.
public enum MinimalPE {
    public enum Machine: Sendable {
        case i386, amd64
        var code: UInt16 { self == .amd64 ? 0x8664 : 0x014C }
    }

    public static func bytes(machine: Machine, subsystem: UInt16 = 3) -> [UInt8] {
        let pe32plus = machine == .amd64
        var w = ByteWriter(count: 0x400)
        // DOS header.
        w.ascii("MZ", at: 0)
        w.u16(0x90, at: 2)  // bytes on last page
        w.u16(3, at: 4)  // pages
        w.u16(4, at: 8)  // header paragraphs
        w.u16(0xFFFF, at: 12)
        w.u16(0xB8, at: 16)
        w.u16(0x40, at: 0x18)  // relocation table offset >= 0x40: a "new" executable follows
        w.u32(0x80, at: 0x3C)  // e_lfanew
        w.ascii("This program cannot be run in DOS mode.", at: 0x4E)

        // PE signature and COFF header.
        let pe = 0x80
        w.ascii("PE", at: pe)
        let coff = pe + 4
        w.u16(machine.code, at: coff)
        w.u16(1, at: coff + 2)  // sections
        w.u32(0x5000_0000, at: coff + 4)  // timestamp
        let optSize: UInt16 = pe32plus ? 240 : 224
        w.u16(optSize, at: coff + 16)
        w.u16(pe32plus ? 0x0022 : 0x0102, at: coff + 18)

        // Optional header.
        let opt = coff + 20
        w.u16(pe32plus ? 0x20B : 0x10B, at: opt)
        w.u8(14, at: opt + 2)  // linker version
        w.u32(0x200, at: opt + 4)  // size of code
        w.u32(0x1000, at: opt + 16)  // entry point
        w.u32(0x1000, at: opt + 20)  // base of code
        var p: Int
        if pe32plus {
            w.u64(0x1_4000_0000, at: opt + 24)
            p = opt + 32
        } else {
            w.u32(0x1000, at: opt + 24)  // base of data
            w.u32(0x40_0000, at: opt + 28)
            p = opt + 32
        }
        w.u32(0x1000, at: p)  // section alignment
        w.u32(0x200, at: p + 4)  // file alignment
        w.u16(6, at: p + 8)  // OS version
        w.u16(6, at: p + 16)  // subsystem version
        w.u32(0x2000, at: p + 24)  // size of image
        w.u32(0x200, at: p + 28)  // size of headers
        w.u16(subsystem, at: p + 36)  // console
        w.u16(0x8160, at: p + 38)  // DLL characteristics
        let sizes = p + 40
        let numberOfRva: Int
        if pe32plus {
            w.u64(0x10_0000, at: sizes)
            w.u64(0x1000, at: sizes + 8)
            w.u64(0x10_0000, at: sizes + 16)
            w.u64(0x1000, at: sizes + 24)
            numberOfRva = sizes + 36
        } else {
            w.u32(0x10_0000, at: sizes)
            w.u32(0x1000, at: sizes + 4)
            w.u32(0x10_0000, at: sizes + 8)
            w.u32(0x1000, at: sizes + 12)
            numberOfRva = sizes + 20
        }
        w.u32(16, at: numberOfRva)

        // Section table.
        let section = opt + Int(optSize)
        w.ascii(".text", at: section)
        w.u32(0x10, at: section + 8)  // virtual size
        w.u32(0x1000, at: section + 12)  // virtual address
        w.u32(0x200, at: section + 16)  // raw size
        w.u32(0x200, at: section + 20)  // raw pointer
        w.u32(0x6000_0020, at: section + 36)  // code, execute, read

        // Code: xor eax, eax; ret
        w.put([0x31, 0xC0, 0xC3], at: 0x200)
        return w.bytes
    }
}
