import Foundation
import Synchronization
import SystemPackage

/// What qemu itself will open for an image, and whether it can write it,
/// from `qemu-img info --output=json --backing-chain -f FORMAT` (always an
/// explicit format, always an absolute path with symlinks resolved, so qemu
/// never guesses a format or reads a protocol prefix). remedy refuses an
/// image unless qemu's own parse says it opens nothing but the image itself
/// (and, for a VMDK, extent files in the image's own directory), and then
/// gives qemu exactly the path and format it checked.
public struct QemuView: Sendable, Equatable {
    public var format: DiskFormat
    public var virtualSize: Int64
    /// The VMDK create type (`monolithicSparse`, `streamOptimized`, ...), nil for other formats.
    public var createType: String?
    /// Every file qemu opens for the image (canonical paths): the image, then its VMDK extents.
    public var files: [String]
    /// Why qemu cannot update the image in place (nil when it can): a
    /// streamOptimized or seSparse VMDK, compressed extents, a read-only file.
    public var readOnlyReason: String?
    public var writableInPlace: Bool { readOnlyReason == nil }

    /// VMDK create types qemu writes in place. Everything else (streamOptimized,
    /// seSparse, vmfsSparse, custom...) is read-only to remedy.
    static let writableVMDK: Set<String> = [
        "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "vmfs",
    ]

    /// How long qemu-img info may take (a descriptor naming a FIFO or a device must never hang remedy).
    static let timeout: TimeInterval = 60

    /// Asks qemu about the image at `path` (made absolute and resolved here) in `format`.
    public static func inspect(_ path: String, format: DiskFormat) throws -> QemuView {
        guard let canonical = realpath(path, nil) else {
            throw RemedyError(.imageNotFound, image: path, "cannot resolve the image path: \(Errno.last)")
        }
        let file = String(cString: canonical)
        free(canonical)
        let top = try info(spec: file, format: format, image: path)
        var view = QemuView(
            format: format, virtualSize: (top["virtual-size"] as? NSNumber)?.int64Value ?? 0, createType: nil,
            files: [file], readOnlyReason: nil)
        let data = ((top["format-specific"] as? [String: Any])?["data"] as? [String: Any]) ?? [:]
        if format == .vmdk {
            view.createType = data["create-type"] as? String
            let dir = FilePath(file).removingLastComponent().string
            for extent in (data["extents"] as? [[String: Any]]) ?? [] {
                guard let name = extent["filename"] as? String else {
                    throw RemedyError(.unsafeImage, image: path, "qemu reports a VMDK extent without a file name")
                }
                let resolved = try checkExtent(name, directory: dir, image: path)
                if !view.files.contains(resolved) { view.files.append(resolved) }
                if (extent["compressed"] as? Bool) == true {
                    view.readOnlyReason =
                        view.readOnlyReason
                        ?? "its VMDK extents are compressed (\(view.createType ?? "streamOptimized")): qemu cannot update them in place"
                }
                if let f = (extent["format"] as? String)?.uppercased(), ["SESPARSE", "VMFSSPARSE"].contains(f) {
                    view.readOnlyReason = view.readOnlyReason ?? "its VMDK extents are \(f), which qemu only reads"
                }
            }
            if let type = view.createType, !writableVMDK.contains(type) {
                view.readOnlyReason = "it is a \(type) VMDK, which qemu cannot update in place"
            }
        }
        // access() says yes to root for any file; a file without any write permission bit is read-only to remedy too.
        func readOnly(_ f: String) -> Bool {
            var st = stat()
            return access(f, W_OK) != 0
                || (stat(f, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG && st.st_mode & 0o222 == 0)
        }
        if view.readOnlyReason == nil, let ro = view.files.first(where: readOnly) {
            view.readOnlyReason = ro == file ? "the file is read-only" : "its extent \(ro) is read-only"
        }
        return view
    }

    /// `qemu-img info` of a single image (a chain of one: no backing file, no
    /// external data file) in `format`; returns its JSON object.
    static func info(spec: String, format: DiskFormat, image: String) throws -> [String: Any] {
        let (status, out, err) = run(["info", "--output=json", "--backing-chain", "-f", format.qemuName, spec])
        guard status == 0 else {
            let text = err.trimmingCharacters(in: .whitespacesAndNewlines)
            if text.contains("lock") {
                throw RemedyError(.imageLocked, image: image, "the image is in use by another process: \(text)")
            }
            if status == -1 {
                throw RemedyError(
                    .unsafeImage, image: image,
                    "qemu-img info did not finish within \(Int(timeout)) s (does the image name a device or a FIFO?)")
            }
            throw RemedyError(
                .unsupportedFormat, image: image, "qemu cannot open the image as \(format.rawValue): \(text)")
        }
        guard let chain = (try? JSONSerialization.jsonObject(with: out)) as? [[String: Any]], let top = chain.first
        else {
            throw RemedyError(.imageUnreadable, image: image, "qemu-img info gave no answer remedy understands")
        }
        if chain.count != 1 || top["backing-filename"] != nil || top["full-backing-filename"] != nil {
            throw RemedyError(
                .unsafeImage, image: image,
                "the image has a backing file (\(top["backing-filename"] as? String ?? "a parent")); remedy edits self-contained images only (flatten it with qemu-img convert first)"
            )
        }
        if let f = top["format"] as? String, f != format.qemuName {
            throw RemedyError(.unsupportedFormat, image: image, "qemu reads the image as \(f), not \(format.qemuName)")
        }
        let data = ((top["format-specific"] as? [String: Any])?["data"] as? [String: Any]) ?? [:]
        if let dataFile = data["data-file"] {
            throw RemedyError(
                .unsafeImage, image: image,
                "the image keeps its data in an external file (\(dataFile)); remedy edits self-contained images only")
        }
        return top
    }

    /// A VMDK extent qemu opens must be the image or a regular file in the
    /// image's own directory, after symlinks are resolved.
    static func checkExtent(_ name: String, directory: String, image: String) throws -> String {
        guard name.hasPrefix("/") else {
            throw RemedyError(
                .unsafeImage, image: image,
                "the VMDK names an extent qemu would open through a protocol or a relative path (\(name))")
        }
        guard let c = realpath(name, nil) else {
            throw RemedyError(.imageUnreadable, image: image, "the VMDK's extent \(name) is missing")
        }
        let resolved = String(cString: c)
        free(c)
        var st = stat()
        guard FilePath(resolved).removingLastComponent().string == directory, stat(resolved, &st) == 0,
            (st.st_mode & S_IFMT) == S_IFREG
        else {
            throw RemedyError(
                .unsafeImage, image: image,
                "the VMDK names an extent outside its own directory or not a regular file (\(name))")
        }
        return resolved
    }

    /// Runs qemu-img with a deadline; status -1 when it was killed for taking too long.
    static func run(_ args: [String], timeout: TimeInterval = QemuView.timeout) -> (Int32, Data, String) {
        do {
            let r = try HostTool.execute("/usr/bin/qemu-img", args, timeout: timeout)
            return (r.timedOut ? -1 : r.status, r.stdout, r.stderr)
        } catch {
            return (127, Data(), "cannot run qemu-img: \(error)")
        }
    }
}
