import Foundation
import Testing

@testable import RemedyCore
@testable import RemedyPlanning

/// The overlay, its commit marker, the proof and the recovery of an interrupted commit, without an appliance:
/// writes go into the overlay with qemu-io, and the result is compared with a reference copy that took the same
/// writes directly (`qemu-img compare`, an independent reader).
@Suite final class OverlayTests {
    let dir: String

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    init() throws {
        dir =
            URL(fileURLWithPath: NSTemporaryDirectory() + "/remedy-overlay-\(UUID().uuidString)").standardizedFileURL
            .path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    @discardableResult
    func run(_ tool: String, _ args: [String]) throws -> String { try runTool(tool, args) }

    static let writes = [
        "write -q -P 0xab 1M 64k", "write -q -P 0x11 3M 200k", "write -q -z 8M 64k", "write -q -P 0x77 40M 4k",
    ]

    /// A base image with content everywhere the writes land, and a reference copy that took the writes directly.
    func makeBase(_ format: DiskFormat) throws -> (base: String, reference: String) {
        let raw = dir + "/content.raw"
        try run("/usr/bin/qemu-img", ["create", "-q", "-f", "raw", raw, "64M"])
        try run("/usr/bin/qemu-io", ["-f", "raw", "-c", "write -q -P 0x42 0 64M", raw])
        let base = dir + "/disk.\(format.rawValue)", reference = dir + "/reference.raw"
        try run("/usr/bin/qemu-img", ["convert", "-f", "raw", "-O", format.qemuName, raw, base])
        try FileManager.default.copyItem(atPath: raw, toPath: reference)
        try run("/usr/bin/qemu-io", ["-f", "raw"] + Self.writes.flatMap { ["-c", $0] } + [reference])
        return (base, reference)
    }

    func writeOverlay(_ o: Overlay) throws {
        try run("/usr/bin/qemu-io", ["-f", "qcow2"] + Self.writes.flatMap { ["-c", $0] } + [o.path])
    }

    func same(_ a: String, _ af: DiskFormat, _ b: String) throws -> Bool {
        (try? run("/usr/bin/qemu-img", ["compare", "-q", "-f", af.qemuName, "-F", "raw", a, b])) != nil
    }

    @Test(arguments: [DiskFormat.raw, .qcow2, .vmdk])
    func commitPutsTheWritesInTheFileAndCleansUp(_ format: DiskFormat) throws {
        let (base, reference) = try makeBase(format)
        #expect(try !same(base, format, reference))
        let o = try Overlay.create(base: base, format: format, output: nil)
        #expect(o.path == dir + "/.disk.\(format.rawValue).remedy-overlay.qcow2")
        try writeOverlay(o)
        try o.finish()
        #expect(try same(base, format, reference))
        #expect(
            !FileManager.default.fileExists(atPath: o.path)
                && !FileManager.default.fileExists(atPath: Overlay.markerPath(for: base)))
    }

    @Test func aTornCommitIsFinishedFromItsMarker() throws {
        let (base, reference) = try makeBase(.qcow2)
        let o = try Overlay.create(base: base, format: .qcow2, output: nil)
        try writeOverlay(o)
        _ = try o.mark()
        // Killed in the middle of the commit: part of the image holds neither the old nor the new bytes.
        try run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write -q -P 0x5a 1M 32k", base])
        o.discard()  // a marked overlay is never discarded
        #expect(FileManager.default.fileExists(atPath: o.path))
        #expect(Overlay.pending(base))
        var notes: [String] = []
        try Overlay.recover(base, format: .qcow2) { notes.append($0) }
        #expect(try same(base, .qcow2, reference))
        #expect(!Overlay.pending(base))
        #expect(notes.first?.contains("finishing the commit") == true)
    }

    @Test func anUnmarkedOverlayIsDroppedAndTheImageUntouched() throws {
        let (base, _) = try makeBase(.raw)
        let before = try Data(contentsOf: URL(fileURLWithPath: base))
        let o = try Overlay.create(base: base, format: .raw, output: nil)
        try writeOverlay(o)
        try Overlay.recover(base, format: .raw) { _ in }
        #expect(!FileManager.default.fileExists(atPath: o.path))
        #expect(try Data(contentsOf: URL(fileURLWithPath: base)) == before)
    }

    @Test func aMarkerWhoseOverlayChangedIsRefused() throws {
        let (base, _) = try makeBase(.raw)
        let o = try Overlay.create(base: base, format: .raw, output: nil)
        try writeOverlay(o)
        _ = try o.mark()
        try run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write -q -P 0x01 5M 64k", o.path])
        #expect(throws: RemedyError.self) { try Overlay.recover(base, format: .raw) { _ in } }
        #expect(Overlay.pending(base), "marker and overlay are kept")
    }

    @Test func theProofSeesARangeThatIsNotInTheFile() throws {
        let (base, _) = try makeBase(.raw)
        let o = try Overlay.create(base: base, format: .raw, output: nil)
        try writeOverlay(o)
        let ranges = try Overlay.writtenRanges(o.path, image: base)
        #expect(ranges.count == 4 && ranges[0].start == 1 << 20)
        try run("/usr/bin/qemu-img", ["commit", "-q", "-d", "-f", "qcow2", o.path])
        try Overlay.prove(ranges, overlay: o.path, target: base, format: .raw)
        try run("/usr/bin/qemu-io", ["-f", "raw", "-c", "write -q -P 0x00 3M 512", base])
        #expect(throws: RemedyError.self) { try Overlay.prove(ranges, overlay: o.path, target: base, format: .raw) }
    }

    /// The read-back reads a folder this run created in one `checksums_out` call, which runs coreutils' sha256sum
    /// over `find -type f` in the folder. Its real output, made here the same way, is what the parser gets: files by
    /// their path below the folder; escaped names (sha256sum's leading backslash) left out, so that those are read
    /// one by one.
    @Test func theOneCallReadBackParsesSha256sumAsItPrintsIt() throws {
        let folder = dir + "/sums"
        try FileManager.default.createDirectory(atPath: folder + "/sub", withIntermediateDirectories: true)
        let files = [
            "viostor.sys": "a", "name with spaces.inf": "b", "back\\slash.cat": "c", "new\nline.dll": "d",
            "sub/inner.sys": "e",
        ]
        for (name, text) in files {
            #expect(FileManager.default.createFile(atPath: folder + "/" + name, contents: Data(text.utf8)))
        }
        let out = try run("/bin/sh", ["-c", "cd \"$1\" && find . -type f -print0 | xargs -0 sha256sum", "sh", folder])
        let parsed = Applier.parseChecksums(out)
        let sha = { (text: String) in
            try self.run("/bin/sh", ["-c", "printf %s \"$1\" | sha256sum | cut -c1-64", "sh", text]).trimmingCharacters(
                in: .whitespacesAndNewlines)
        }
        #expect(
            parsed == [
                "viostor.sys": try sha("a"), "name with spaces.inf": try sha("b"), "sub/inner.sys": try sha("e"),
            ], "\(out)")
    }

    /// Which folders the read-back reads in one call: the topmost new folder above enough written files; never a
    /// folder that existed before, never one with few files (those are read file by file).
    @Test func theReadBackReadsOnlyNewFoldersWithManyFiles() {
        let n = Applier.folderReadMinimum
        let virtio = (1...n + 1).map { "/Windows/Drivers/VirtIO/f\($0).sys" }
        let firstboot =
            ["/Windows/remedy/firstboot/run.cmd"] + (1..<n).map { "/Windows/remedy/firstboot/scripts/\($0).cmd" }
        let other = [
            "/Windows/System32/drivers/viostor.sys", "/Windows/System32/config/SYSTEM",
            "/Windows/remedy/payloads/x/a.msi",
        ]
        let new: Set<String> = [
            "/Windows/Drivers/VirtIO", "/Windows/remedy/firstboot", "/Windows/remedy/firstboot/scripts",
            "/Windows/remedy/payloads", "/Windows/remedy/payloads/x",
        ]
        let folders = Applier.foldersToRead(virtio + firstboot + other, newDirectories: new)
        #expect(folders.map(\.folder) == ["/Windows/Drivers/VirtIO", "/Windows/remedy/firstboot"])
        #expect(folders.map { Set($0.paths) } == [Set(virtio), Set(firstboot)])
        #expect(Applier.foldersToRead(Array(virtio.prefix(n - 1)), newDirectories: new).isEmpty)
    }

    /// A small file is read back whole and hashed on the host: the digest is the one coreutils' sha256sum prints.
    @Test func theHostHashOfAReadBackIsSha256sums() throws {
        let bytes = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let file = dir + "/small.sys"
        #expect(FileManager.default.createFile(atPath: file, contents: Data(bytes)))
        let expected = try run("/usr/bin/sha256sum", [file]).prefix(64)
        #expect(SHA256Hex.of(bytes) == String(expected))
        #expect(SHA256Hex.of([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test func outputIsOneConversionOfTheOverlayAndTheSourceIsOnlyRead() throws {
        let (base, reference) = try makeBase(.qcow2)
        let sourceBytes = try Data(contentsOf: URL(fileURLWithPath: base))
        let out = dir + "/out/result.vmdk"
        try FileManager.default.createDirectory(atPath: dir + "/out", withIntermediateDirectories: true)
        let o = try Overlay.create(base: base, format: .qcow2, output: OutputTarget(path: out, format: .vmdk))
        #expect(o.path == dir + "/out/.result.vmdk.remedy-overlay.qcow2")
        try writeOverlay(o)
        try o.finish()
        #expect(try same(out, .vmdk, reference))
        #expect(try Data(contentsOf: URL(fileURLWithPath: base)) == sourceBytes)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/out") == ["result.vmdk"])
    }
}

/// Runs a host tool and returns what it printed (standard output and error); throws when it exits non-zero.
@discardableResult
func runTool(_ tool: String, _ args: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    guard p.terminationStatus == 0 else { throw RemedyError(.writeFailed, "\(tool) \(args): \(text)") }
    return text
}
