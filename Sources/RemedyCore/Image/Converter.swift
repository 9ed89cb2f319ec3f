import Foundation
import SystemPackage

/// `remedy convert`: a disk image to RAW or QCOW2 with qemu-img, the input
/// format detected from content (and refused when unsafe, as everywhere in
/// remedy). Written under a temporary name and renamed, so a failed
/// conversion never leaves a half-written output.
public enum Converter {
    public enum Target: String, Sendable, CaseIterable { case raw, qcow2 }

    public static func convert(
        _ input: String, to target: Target, output: String, overwrite: Bool = false,
        progress: Bool = false
    ) throws {
        // qemu is given only what its own parse showed to be self-contained (the canonical path, the detected
        // format); an OVA/OVF gives its system disk (manifest checked, read from the tar in place).
        let format: DiskFormat
        let source: String
        if let kind = ImageSource.Kind(path: input) {
            let ovf = try ImageSource.resolve(input, kind: kind)
            defer { ovf.cleanup() }
            _ = try ovf.attach()
            (format, source) = (ovf.format, ovf.qemuSpec)
        } else {
            format = try DiskFormat.detect(path: input)
            source = try QemuView.inspect(input, format: format).files[0]
        }
        let fm = FileManager.default
        if fm.fileExists(atPath: output) && !overwrite {
            throw RemedyError(.invalidArgument, image: input, "\(output) exists (use --force to replace it)")
        }
        let temp = output + ".remedy-partial"
        try? fm.removeItem(atPath: temp)
        var args = ["convert", "-f", format.qemuName, "-O", target.rawValue]
        if progress { args.append("-p") }
        if target == .qcow2 { args += ["-c"] }  // compressed: smaller uploads
        args += [source, temp]
        do {
            try QemuImg.run(args, image: input)
        } catch {
            try? fm.removeItem(atPath: temp)
            throw error
        }
        guard rename(temp, output) == 0 else {
            try? fm.removeItem(atPath: temp)
            throw RemedyError(
                .writeFailed, image: input, "cannot rename the converted image to \(output): \(Errno.last)")
        }
    }
}

/// Runs qemu-img; a failure is an error naming the image, with what qemu-img said.
public enum QemuImg {
    public static func run(_ args: [String], image: String) throws {
        try HostTool.run("/usr/bin/qemu-img", args, image: image)
    }
}
