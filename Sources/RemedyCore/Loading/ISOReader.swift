import Foundation
import Guestfs

/// Reads the virtio-win ISO while it is mounted at `/` in the appliance: its files (``leaves(_:)``), a check that
/// what is taken from it is a regular file, and copies out of it (one tar stream per directory).
struct ISOReader {
    let g: Guestfs
    /// The image whose session reads the ISO (errors name it).
    let image: String
    /// Where a tar stream is written while it is unpacked.
    let workDirectory: String

    /// Refuses the first of `paths` (relative, in the mounted ISO) that is not a regular file: a Rock Ridge symbolic
    /// link (whose target would be read on the host once extracted), a device or a FIFO. One lstat call per directory.
    func requireRegular(_ paths: [String], source: String) throws {
        let byDirectory = Dictionary(grouping: paths) { GuestPath.parent($0) }
        for (dir, files) in byDirectory.sorted(by: { $0.key < $1.key }) {
            let names = files.map { GuestPath.name($0) }
            let modes: [Int64]
            do {
                modes = try g.lstatModes("/" + dir, names)
            } catch let e as GuestfsError {
                throw RemedyError(
                    .virtioWinInvalid, image: image, "cannot read \(dir) in the virtio-win ISO \(source): \(e.message)",
                    cause: e)
            }
            for (name, mode) in zip(names, modes) {
                let kind: HostFile.Kind? = mode < 0 ? nil : HostFile.kind(mode_t(truncatingIfNeeded: mode))
                guard kind == .regular else {
                    throw RemedyError(
                        .virtioWinInvalid, image: image,
                        "\(source): \(dir.isEmpty ? "" : dir + "/")\(name) is "
                            + "\(kind.map { "a \($0.rawValue)" } ?? "missing"), not a regular file; only regular files are taken from virtio-win"
                    )
                }
            }
        }
    }

    /// Copies files from the mounted ISO: one tar stream per directory (a round trip per file costs more than the
    /// bytes), unpacked below `cache` with the host's tar.
    func fetch(_ paths: [String], into cache: String) throws {
        let byDirectory = Dictionary(grouping: paths) { GuestPath.parent($0) }
        for (dir, files) in byDirectory.sorted(by: { $0.key < $1.key }) {
            let local = "\(cache)/\(dir)"
            try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
            let tar = workDirectory + "/iso.tar"
            do {
                try g.tarOut("/" + dir, to: tar)
            } catch let e as GuestfsError {
                throw RemedyError(
                    .virtioWinInvalid, image: image, "cannot read \(dir) from the virtio-win ISO: \(e.message)",
                    cause: e)
            }
            try HostTool.run(
                "/usr/bin/tar",
                ["-x", "-f", tar, "-C", local, "--no-same-owner", "--no-same-permissions"]
                    + files.map { "./" + GuestPath.name($0) }, image: image,
                failure: .virtioWinInvalid)
            try? FileManager.default.removeItem(atPath: tar)
        }
    }

    /// The entries of a `find` listing that have nothing below them (the files), without asking the appliance
    /// about each one: an ISO lists a thousand entries, and each call costs a round trip.
    static func leaves(_ paths: [String]) -> [String] {
        var parents = Set<String>()
        for p in paths {
            var dir = GuestPath.parent(p)
            while !dir.isEmpty && parents.insert(dir).inserted { dir = GuestPath.parent(dir) }
        }
        return paths.filter { !parents.contains($0) }
    }
}
