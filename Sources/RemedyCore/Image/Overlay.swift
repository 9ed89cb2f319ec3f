import Foundation
import Synchronization
import SystemPackage

/// Where `apply --output` writes, and in which format (qemu's name).
public struct OutputTarget: Sendable, Equatable {
    public var path: String
    public var format: DiskFormat
    /// A progress line on stderr while qemu-img copies (on a terminal).
    public var progress: Bool

    public init(path: String, format: DiskFormat, progress: Bool = false) {
        self.path = path
        self.format = format
        self.progress = progress
    }

    /// The format a file name asks for (`.raw`/`.img` raw, `.vhd` vhd, ...), or nil.
    public static func format(forExtension path: String) -> DiskFormat? {
        switch (FilePath(path).extension ?? "").lowercased() {
        case "raw", "img": .raw
        case "qcow2": .qcow2
        case "vmdk": .vmdk
        case "vhd": .vhd
        case "vhdx": .vhdx
        case "vdi": .vdi
        case "qed": .qed
        default: nil
        }
    }
}

/// Crash-safe writing. The appliance never writes an image: it writes a qcow2 overlay whose backing file is the
/// image, opened read-only. After the appliance has synced and exited cleanly, the overlay is checked, a commit
/// marker is written (and fsynced), the overlay is committed into the image with `qemu-img commit`, and the
/// written ranges are compared between the overlay and the image file. Then marker and overlay are removed.
///
/// A crash before the marker leaves the image untouched (the next run removes the overlay); a crash after it
/// leaves a complete, checked overlay that the next remedy run commits again (a commit is idempotent: it copies
/// the same clusters to the same places). With `--output`, the overlay's backing is the source and one
/// `qemu-img convert` of the overlay writes the new image under a temporary name, renamed when it is proven.
final class Overlay {
    let base: String
    let baseFormat: DiskFormat
    let path: String
    let output: OutputTarget?
    private(set) var finished = false
    /// The commit marker is written: from here on the overlay is the only complete copy of the writes and is kept
    /// until the commit is proven (this run, or the next one).
    private(set) var marked = false

    static let markerSchema = "remedy.commit/1"

    struct Marker: Codable {
        var schema: String = Overlay.markerSchema
        var overlay: String
        var overlaySize: Int64
        var overlaySHA256: String
        /// Guest byte ranges the overlay holds ([start, length]), compared after the commit.
        var ranges: [[Int64]]
        var createdAt: Date
    }

    static func overlayPath(beside file: String) -> String {
        let (dir, name) = stateLocation(for: file)
        return dir + "/." + name + ".remedy-overlay.qcow2"
    }

    static func markerPath(for image: String) -> String {
        let (dir, name) = stateLocation(for: image)
        return dir + "/." + name + ".remedy-commit"
    }

    /// Where the overlay and the commit marker of an image live: beside a file, in its directory. A block device's
    /// directory is /dev, a tmpfs that a power cut empties (and with it the marker that makes an interrupted commit
    /// finishable), so theirs live in remedy's state directory, `REMEDY_STATE_DIR` (default `/var/lib/remedy`),
    /// under `block-devices/`, named after the device path as given (not with symlinks resolved: a
    /// `/dev/disk/by-id/...` or LVM path stays the same across reboots where `/dev/sdb` may not).
    static func stateLocation(for image: String) -> (directory: String, name: String) {
        if isBlockDevice(image) {
            let name =
                "blockdev"
                + absolutePath(image).replacingOccurrences(of: "%", with: "%25").replacingOccurrences(
                    of: "/", with: "%2F")
            return (blockDeviceStateDirectory, name)
        }
        let dir = FilePath(image).removingLastComponent().string
        return (dir.isEmpty ? "." : dir, (FilePath(image).lastComponent?.string ?? ""))
    }

    static var blockDeviceStateDirectory: String {
        let base =
            ProcessInfo.processInfo.environment["REMEDY_STATE_DIR"].flatMap { $0.isEmpty ? nil : $0 }
            ?? "/var/lib/remedy"
        return FilePath(base).appending("block-devices").string
    }

    /// The path made absolute against the working directory and tidied (`.`, `..`, `//`), symlinks left as given.
    static func absolutePath(_ path: String) -> String {
        FilePath(path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path)
            .lexicallyNormalized().string
    }

    static func isBlockDevice(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFBLK
    }

    static func temporaryOutput(_ output: String) -> String { output + ".tmp" }

    /// Is there an overlay or a commit marker of an earlier run beside the image?
    static func pending(_ image: String) -> Bool {
        FileManager.default.fileExists(atPath: markerPath(for: image))
            || FileManager.default.fileExists(atPath: overlayPath(beside: image))
    }

    private init(base: String, baseFormat: DiskFormat, path: String, output: OutputTarget?) {
        self.base = base
        self.baseFormat = baseFormat
        self.path = path
        self.output = output
    }

    /// A new, empty overlay on top of `base` (beside it, or beside the output).
    /// `backing` is what qemu reads for the source when it is not the file `base` itself (an OVA's disk: a `json:`
    /// spec of the tar member's byte range); an overlay for in-place writes always sits beside its image.
    static func create(
        base: String, backing qemuBacking: String? = nil, format: DiskFormat, output: OutputTarget?
    ) throws -> Overlay {
        let fm = FileManager.default
        let path: String
        let backing: String
        if let output {
            path = overlayPath(beside: output.path)
            backing = qemuBacking ?? URL(fileURLWithPath: base).standardizedFileURL.path
            try? fm.removeItem(atPath: temporaryOutput(output.path))
        } else if isBlockDevice(base) {
            path = overlayPath(beside: base)
            backing = absolutePath(base)
            do {
                try fm.createDirectory(
                    atPath: FilePath(path).removingLastComponent().string, withIntermediateDirectories: true,
                    attributes: [.posixPermissions: 0o700])
            } catch {
                throw RemedyError(
                    .writeFailed, image: base,
                    "cannot create remedy's state directory for block devices "
                        + "\(FilePath(path).removingLastComponent().string) (REMEDY_STATE_DIR): \(error.localizedDescription); the image is unchanged",
                    cause: error)
            }
        } else {
            path = overlayPath(beside: base)
            backing = (FilePath(base).lastComponent?.string ?? "")  // relative: the overlay lives beside its image
        }
        try? fm.removeItem(atPath: path)
        try QemuImg.run(["create", "-q", "-f", "qcow2", "-F", format.qemuName, "-b", backing, path], image: base)
        return Overlay(base: base, baseFormat: format, path: path, output: output)
    }

    /// Removes the overlay of an unfinished run (the image was never touched).
    func discard() {
        guard !finished, !marked else { return }
        try? FileManager.default.removeItem(atPath: path)
        if let output { try? FileManager.default.removeItem(atPath: Self.temporaryOutput(output.path)) }
        finished = true
    }

    /// After the appliance exited cleanly: commit into the image, or convert into the output.
    func finish() throws {
        guard !finished else { return }
        do {
            if let output { try convert(to: output) } else { try commit() }
        } catch {
            if output != nil { discard() }
            throw error
        }
        finished = true
    }

    // MARK: in place

    private func commit() throws {
        let marker = try mark()
        do {
            try Self.completeCommit(image: base, format: baseFormat, marker: marker)
        } catch let e as RemedyError {
            throw RemedyError(
                e.code, image: base,
                e.message + "; the checked overlay and its commit marker are kept beside the image: "
                    + "the next remedy command on this image finishes the commit", cause: e)
        }
    }

    /// Checks the overlay and writes the commit marker (fsynced): from here on the commit is always finished.
    func mark() throws -> Marker {
        try QemuImg.run(["check", "-q", "-f", "qcow2", path], image: base)
        let ranges = try Self.writtenRanges(path, image: base)
        try Fault.point("before-marker", image: base)
        let marker = Marker(
            overlay: (FilePath(path).lastComponent?.string ?? ""), overlaySize: Self.size(path),
            overlaySHA256: try PhaseTimes.measure("marker") { try Self.sha256(path, image: base) },
            ranges: ranges.map { [$0.start, $0.length] }, createdAt: Date())
        let markerFile = Self.markerPath(for: base)
        let temp = markerFile + ".tmp"
        try Self.durableWrite(try RemedyJSON.encoder().encode(marker), to: temp, image: base)
        guard rename(temp, markerFile) == 0 else {
            throw RemedyError(
                .writeFailed, image: base,
                "cannot write the commit marker \(markerFile): \(Errno.last); the image is unchanged")
        }
        Self.syncDirectory(of: markerFile)
        marked = true
        return marker
    }

    /// Commits a marked overlay into the image, proves the written ranges, removes marker and overlay. Also the
    /// recovery of an interrupted commit (every command that opens an image runs it first).
    static func completeCommit(image: String, format: DiskFormat, marker: Marker) throws {
        let overlay = overlayPath(beside: image)
        let markerFile = markerPath(for: image)
        let fm = FileManager.default
        guard fm.fileExists(atPath: overlay) else {
            // The overlay is removed only after a proven commit: the marker is all that was left.
            try? fm.removeItem(atPath: markerFile)
            syncDirectory(of: markerFile)
            return
        }
        guard size(overlay) == marker.overlaySize, try sha256(overlay, image: image) == marker.overlaySHA256 else {
            throw RemedyError(
                .writeFailed, image: image,
                "an interrupted remedy commit cannot be finished: \(overlay) is not the overlay "
                    + "\(markerFile) describes; the image may be partly written: keep both files and restore the image from a copy"
            )
        }
        let ranges = marker.ranges.compactMap { $0.count == 2 ? (start: $0[0], length: $0[1]) : nil }
        if Fault.hit("mid-commit") == "kill" {
            // A torn commit: part of the first written range already holds other bytes.
            if let r = ranges.first {
                _ = try? HostTool.run(
                    "/usr/bin/qemu-io",
                    ["-f", format.qemuName, "-c", "write -q -P 0x5a \(r.start) \(min(r.length, 65536))", image],
                    image: image)
            }
            Fault.die()
        }
        try PhaseTimes.measure("commit") {
            try QemuImg.run(["commit", "-q", "-t", "writeback", "-f", "qcow2", "-d", overlay], image: image)
            fsyncFile(image)
        }
        try PhaseTimes.measure("proof-commit") { try prove(ranges, overlay: overlay, target: image, format: format) }
        try Fault.point("after-commit", image: image)
        try? fm.removeItem(atPath: markerFile)
        syncDirectory(of: markerFile)
        try? fm.removeItem(atPath: overlay)
    }

    /// Finishes or discards what an earlier run left beside the image. The caller holds the image's exclusive lock.
    static func recover(_ image: String, format: DiskFormat, notice: (String) -> Void) throws {
        let fm = FileManager.default
        let markerFile = markerPath(for: image)
        if let data = fm.contents(atPath: markerFile) {
            let marker: Marker
            do {
                marker = try RemedyJSON.decoder().decode(Marker.self, from: data)
            } catch {
                throw RemedyError(
                    .writeFailed, image: image,
                    "the remedy commit marker \(markerFile) cannot be read (\(error)); the image may be partly written")
            }
            notice("\(image): finishing the commit of an apply that was interrupted (\(markerFile))")
            try completeCommit(image: image, format: format, marker: marker)
        }
        try? fm.removeItem(atPath: markerFile + ".tmp")
        let overlay = overlayPath(beside: image)
        if fm.fileExists(atPath: overlay) {
            notice(
                "\(image): removing the overlay of an apply that was interrupted before its commit (the image was not changed)"
            )
            try? fm.removeItem(atPath: overlay)
        }
    }

    // MARK: --output

    private func convert(to output: OutputTarget) throws {
        let temp = Self.temporaryOutput(output.path)
        try? FileManager.default.removeItem(atPath: temp)
        let ranges = try Self.writtenRanges(path, image: base)
        var args = ["convert", "-t", "writeback", "-f", "qcow2", "-O", output.format.qemuName]
        if output.progress { args.append("-p") }
        args += [path, temp]
        do {
            try Self.runQemuImg(args, image: base, progress: output.progress)
            Self.fsyncFile(temp)
            try PhaseTimes.measure("proof-commit") {
                try Self.prove(ranges, overlay: path, target: temp, format: output.format)
            }
            guard rename(temp, output.path) == 0 else {
                throw RemedyError(.writeFailed, image: base, "cannot rename \(temp) to \(output.path): \(Errno.last)")
            }
        } catch {
            try? FileManager.default.removeItem(atPath: temp)
            throw error
        }
        Self.syncDirectory(of: output.path)
        try? FileManager.default.removeItem(atPath: path)
    }

    // MARK: proof

    struct Extent {
        var start: Int64
        var length: Int64
        var zero: Bool
        var offset: Int64?
    }

    /// The guest ranges the overlay itself holds (depth 0 of `qemu-img map`), merged.
    static func writtenRanges(_ overlay: String, image: String) throws -> [(start: Int64, length: Int64)] {
        var merged: [(start: Int64, length: Int64)] = []
        for e in try extents(overlay, image: image) {
            if let last = merged.last, last.start + last.length == e.start {
                merged[merged.count - 1].length += e.length
            } else {
                merged.append((e.start, e.length))
            }
        }
        return merged
    }

    static func extents(_ overlay: String, image: String) throws -> [Extent] {
        let out = try capture("/usr/bin/qemu-img", ["map", "--output=json", "-f", "qcow2", overlay], image: image)
        guard let list = try? JSONSerialization.jsonObject(with: out) as? [[String: Any]] else {
            throw RemedyError(.verifyFailed, image: image, "qemu-img map of the overlay gave no readable answer")
        }
        return list.compactMap { e in
            guard (e["depth"] as? Int) == 0, let s = (e["start"] as? NSNumber)?.int64Value,
                let l = (e["length"] as? NSNumber)?.int64Value
            else { return nil }
            let data = (e["data"] as? Bool) ?? false
            return Extent(
                start: s, length: l, zero: (e["zero"] as? Bool) ?? false && !data,
                offset: data ? (e["offset"] as? NSNumber)?.int64Value : nil)
        }
    }

    /// Compares every range the overlay holds with the same range of `target` read from its file (raw: directly;
    /// other formats: through `qemu-img dd`), so success means the bytes are in the file.
    static func prove(
        _ ranges: [(start: Int64, length: Int64)], overlay: String, target: String, format: DiskFormat
    ) throws {
        let extents = try Self.extents(overlay, image: target)
        guard let ov = FileHandle(forReadingAtPath: overlay) else {
            throw RemedyError(.verifyFailed, image: target, "cannot read the overlay \(overlay) to check the commit")
        }
        defer { try? ov.close() }
        // Windows of the target read at once (ranges closer than 1 MiB share one read).
        var windows: [(start: Int64, end: Int64)] = []
        for r in ranges {
            if let last = windows.last, r.start - last.end < 1 << 20 {
                windows[windows.count - 1].end = r.start + r.length
            } else {
                windows.append((r.start, r.start + r.length))
            }
        }
        let work = NSTemporaryDirectory() + "/remedy-prove-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: work) }
        var raw: FileHandle?
        if format == .raw { raw = FileHandle(forReadingAtPath: target) }
        defer { try? raw?.close() }
        for w in windows {
            let bytes: Data
            if let raw {
                try raw.seek(toOffset: UInt64(w.start))
                bytes = try raw.read(upToCount: Int(w.end - w.start)) ?? Data()
            } else {
                let bs: Int64 = (w.start % 65536 == 0 && w.end % 65536 == 0) ? 65536 : 512
                // qemu-img dd (7.2) applies count before skip: count is the block where the read ends.
                try HostTool.run(
                    "/usr/bin/qemu-img",
                    [
                        "dd", "-f", format.qemuName, "-O", "raw", "bs=\(bs)", "skip=\(w.start / bs)",
                        "count=\((w.end + bs - 1) / bs)", "if=\(target)", "of=\(work)",
                    ], image: target)
                bytes = (try? Data(contentsOf: URL(fileURLWithPath: work))) ?? Data()
                try? FileManager.default.removeItem(atPath: work)
            }
            for e in extents where e.start >= w.start && e.start + e.length <= w.end {
                let lo = Int(e.start - w.start), hi = Int(e.start - w.start + e.length)
                guard hi <= bytes.count else { throw mismatch(target, e.start) }
                let expected: Data
                if let off = e.offset {
                    try ov.seek(toOffset: UInt64(off))
                    expected = try ov.read(upToCount: Int(e.length)) ?? Data()
                } else if e.zero {
                    expected = Data(count: Int(e.length))
                } else {
                    continue
                }
                guard bytes[bytes.startIndex + lo..<bytes.startIndex + hi] == expected else {
                    throw mismatch(target, e.start)
                }
            }
        }
    }

    static func mismatch(_ target: String, _ offset: Int64) -> RemedyError {
        RemedyError(
            .verifyFailed, image: target,
            "the image file does not hold what was written (first difference in the range at byte \(offset))")
    }

    // MARK: host helpers

    static func size(_ path: String) -> Int64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? -1
    }

    static func sha256(_ path: String, image: String) throws -> String {
        let out = try capture("/usr/bin/sha256sum", ["-b", path], image: image)
        return String(decoding: out.prefix(64), as: UTF8.self)
    }

    static func durableWrite(_ data: Data, to path: String, image: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw RemedyError(.writeFailed, image: image, "cannot write \(path): \(Errno.last)") }
        defer { close(fd) }
        let n = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n == data.count, fsync(fd) == 0 else {
            throw RemedyError(.writeFailed, image: image, "cannot write \(path): \(Errno.last)")
        }
    }

    static func fsyncFile(_ path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }

    static func syncDirectory(of path: String) {
        let dir = FilePath(path).removingLastComponent().string
        fsyncFile(dir.isEmpty ? "." : dir)
    }

    static func capture(_ executable: String, _ args: [String], image: String) throws -> Data {
        try HostTool.run(executable, args, image: image)
    }

    /// qemu-img with its progress line (`-p`, written to stdout) sent to stderr, where remedy's notices go.
    static func runQemuImg(_ args: [String], image: String, progress: Bool) throws {
        try HostTool.run("/usr/bin/qemu-img", args, image: image, output: progress ? .standardError : .discard)
    }
}

/// Seconds spent in the steps of the overlay and the proof, for the benchmark (`REMEDY_TIMINGS=1` prints them).
public enum PhaseTimes {
    private static let seconds = Mutex<[String: Double]>([:])

    static func measure<T>(_ phase: String, _ body: () throws -> T) rethrows -> T {
        let start = Date()
        defer {
            let elapsed = Date().timeIntervalSince(start)
            seconds.withLock { $0[phase, default: 0] += elapsed }
        }
        return try body()
    }

    /// Adds `elapsed` to `phase` and counts it (`REMEDY_TIMINGS=1` prints each appliance call's total as
    /// `call:NAME=seconds` and its count as `calls:NAME=n`).
    static func add(_ phase: String, _ elapsed: Double) {
        seconds.withLock {
            $0[phase, default: 0] += elapsed
            if phase.hasPrefix("call:") { $0["calls:" + phase.dropFirst(5), default: 0] += 1 }
        }
    }

    /// `phase=seconds` pairs, sorted by phase (counts as whole numbers).
    public static var summary: String {
        seconds.withLock {
            $0.sorted { $0.key < $1.key }.map {
                "\($0.key)=\($0.key.hasPrefix("calls:") ? String(Int($0.value)) : String(format: "%.2f", $0.value))"
            }
            .joined(separator: " ")
        }
    }

    public static var requested: Bool {
        ["1", "true", "yes"].contains(ProcessInfo.processInfo.environment["REMEDY_TIMINGS"] ?? "")
    }
}
