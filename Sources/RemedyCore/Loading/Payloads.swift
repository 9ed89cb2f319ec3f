import Foundation
import SystemPackage
import Yams

/// What the user hands remedy to inject: a virtio-win source and payload
/// files by manifest name (`--virtio-win`, `--payload NAME=PATH`).
public struct PayloadInputs: Sendable, Equatable {
    public var virtioWin: String?
    public var files: [String: String]

    public init(virtioWin: String? = nil, files: [String: String] = [:]) {
        self.virtioWin = virtioWin
        self.files = files
    }

    /// The virtio-win path is an ISO image (attached to the appliance) rather than a directory.
    public var virtioWinIsImage: Bool {
        guard let p = virtioWin else { return false }
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: p, isDirectory: &isDir) && !isDir.boolValue
    }

    /// Inputs from the environment: `REMEDY_VIRTIO_WIN`, and `REMEDY_PAYLOADS`
    /// as `name=path[,name=path]`. Command-line values override them.
    public static func environment(_ env: [String: String] = ProcessInfo.processInfo.environment) -> PayloadInputs {
        var inputs = PayloadInputs(virtioWin: env["REMEDY_VIRTIO_WIN"].flatMap { $0.isEmpty ? nil : $0 })
        for pair in (env["REMEDY_PAYLOADS"] ?? "").split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { inputs.files[parts[0]] = parts[1] }
        }
        return inputs
    }

    /// Checks what can be checked before any appliance starts: paths exist, names are known payloads.
    public func validate() throws {
        if let v = virtioWin {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: v, isDirectory: &isDir) else {
                throw RemedyError(
                    .virtioWinInvalid,
                    "virtio-win not found at \(v): give the virtio-win ISO, an unpacked ISO tree or the packaged tree (/usr/share/virtio-win)"
                )
            }
            if !isDir.boolValue {
                // A FIFO or device is refused here, not waited on (the user named the path: a link is followed).
                let h: FileHandle
                do { h = try HostFile.open(v, followLinks: true) } catch {
                    throw RemedyError(.virtioWinInvalid, "cannot use the virtio-win ISO: \(error)")
                }
                defer { try? h.close() }
                try? h.seek(toOffset: 0x8001)
                let magic = (try? h.read(upToCount: 5)).map { [UInt8]($0) } ?? []
                guard magic == Array("CD001".utf8) else {
                    throw RemedyError(
                        .virtioWinInvalid,
                        "\(v) is neither a directory nor an ISO 9660 image: give the virtio-win ISO, an unpacked ISO tree or the packaged tree"
                    )
                }
            }
        }
        for (name, path) in files.sorted(by: { $0.key < $1.key }) {
            guard PayloadManifest.named(name) != nil else {
                let known = PayloadManifest.all().map(\.name).joined(separator: ", ")
                throw RemedyError(
                    .invalidArgument, "no payload manifest named \(name) (known: \(known.isEmpty ? "none" : known))")
            }
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue else {
                throw RemedyError(.invalidArgument, "payload \(name): no file at \(path)")
            }
        }
    }
}

/// Reads what the inputs name into payload facts: lists the virtio-win
/// source (a directory on the host, or the ISO attached to the appliance),
/// picks the directory for this Windows, copies the chosen packages into
/// the session's working directory, parses their INF files, checksums
/// every file. Nothing here writes the image.
enum PayloadResolver {
    /// `list` gives every file's relative path; `fetch` makes the given relative paths exist below `cache`
    /// (called once, with every file needed).
    /// `regular` checks, before anything is read, that each chosen path is a regular file in the source (not a
    /// symbolic link, FIFO or device): it throws `virtio-win-invalid` naming the first one that is not.
    /// `tools`: the programs beside the drivers to take (the guest agent MSI, the balloon service), none unless asked
    /// for; one the source lacks is left nil in the facts (the rule that wanted it reports it).
    static func virtio(
        source: String, kind: String, os: OSFacts, drivers: Set<String>? = nil, tools: Set<VirtioWin.Tool> = [],
        list: () throws -> [String], regular: ([String]) throws -> Void = { _ in },
        fetch: ([String]) throws -> Void, cache: String, image: String
    ) throws -> VirtioFacts {
        let paths = try list()
        let listing = VirtioWin.list(paths)
        guard !listing.packages.isEmpty else {
            throw RemedyError(
                .virtioWinInvalid, image: image,
                "\(source) holds no virtio-win drivers (no <Driver>/<os>/<arch>/*.inf, drivers/by-driver or drivers/by-os directories)"
            )
        }
        guard let key = VirtioWin.key(for: os), let candidates = listing.packages[key] else {
            let wanted = VirtioWin.key(for: os).map { "directory \($0)" } ?? "no virtio-win directory exists for it"
            throw RemedyError(
                .virtioWinNoMatch, image: image,
                "the virtio-win at \(source) has no drivers for \(VirtioWin.describe(os)) (\(wanted)); it has: "
                    + listing.available.joined(separator: ", ")
                    + ". Nothing was changed: use a virtio-win release that supports this Windows")
        }
        var packages: [DriverPackage] = []
        let hasFwcfg = candidates.contains { $0.inf == "fwcfg.inf" && !$0.files.isEmpty }
        // fwcfg drives the device; the qemufwcfg stub conflicts with it.
        // Only the requested drivers' packages are fetched and parsed (`drivers`: INF names without `.inf`).
        let chosen = candidates.filter { !($0.inf == "qemufwcfg.inf" && hasFwcfg) }
            .filter { c in drivers.map { $0.contains(String(c.inf.dropLast(4))) } ?? true }.sorted { $0.inf < $1.inf }
        // An INF's file name goes into the first-boot script (`pnputil -i -a "...\\<inf>"`): only plain names are taken.
        if let odd = chosen.first(where: { c in
            !c.inf.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
        }) {
            throw RemedyError(
                .virtioWinInvalid, image: image,
                "\(source): the INF file name \(odd.inf.debugDescription) cannot be used (only letters, digits, '.', '_' and '-' are taken)"
            )
        }
        // The tools asked for, where this source has them (names from a fixed list, every path component plain).
        var toolPaths: [VirtioWin.Tool: String] = [:]
        for tool in VirtioWin.Tool.allCases where tools.contains(tool) {
            toolPaths[tool] = VirtioWin.toolPath(tool, in: paths, key: key)
        }
        let driverFiles = chosen.flatMap(\.files)
        let wanted =
            driverFiles + VirtioWin.Tool.allCases.compactMap { toolPaths[$0] }.filter { !driverFiles.contains($0) }
        do {
            try regular(wanted)
        } catch let e as RemedyError {
            throw e.with(image: image)
        }
        try fetch(wanted.filter { HostFile.kind(atPath: "\(cache)/\($0)") == nil })
        // A file of the source as the plan refers to it, checksummed.
        func payloadFile(_ rel: String) throws -> PayloadFile {
            // Never through a link, never a FIFO or device: the media is not trusted (the check above ran in
            // the source; this one holds for the very file read).
            let local = "\(cache)/\(rel)"
            let (sha, size): (String, Int64)
            do { (sha, size) = try SHA256Hex.ofFile(local, followLinks: false, code: .virtioWinInvalid) } catch let e
                as RemedyError
            {
                throw RemedyError(
                    .virtioWinInvalid, image: image,
                    "\(source): \(rel) cannot be used: \(e.message); only regular files are taken from virtio-win")
            }
            return PayloadFile(
                name: GuestPath.name(rel).lowercased(), source: "virtio-win:\(rel)", size: size, sha256: sha)
        }
        for c in chosen {
            var files: [PayloadFile] = []
            var infText = ""
            for rel in c.files {
                let local = "\(cache)/\(rel)"
                let file = try payloadFile(rel)
                let name = file.name
                files.append(file)
                if name == c.inf {
                    let data: [UInt8]
                    do { data = try HostFile.read(local, followLinks: false, limit: Limits.infFile) } catch {
                        throw RemedyError(.virtioWinInvalid, image: image, "\(source): \(rel) cannot be used: \(error)")
                    }
                    infText = TextEncoding.decode(data).0
                }
            }
            let inf: DriverINF
            do {
                inf = try DriverINF(
                    name: c.inf, text: infText, arch: os.arch, osMajor: os.majorVersion, osMinor: os.minorVersion,
                    build: Int(os.build ?? "") ?? 0)
            } catch {
                throw RemedyError(
                    .virtioWinInvalid, image: image, "\(source): \(c.directory)/\(c.inf) cannot be used: \(error)")
            }
            packages.append(
                DriverPackage(inf: inf, files: files, infSHA256: files.first { $0.name == c.inf }?.sha256 ?? ""))
        }
        let version = packages.map(\.inf.version).max { compareVersions($0, $1) < 0 } ?? ""
        return VirtioFacts(
            source: source, kind: kind, selected: key, available: listing.available, packages: packages,
            driverVersion: version,
            guestAgent: try toolPaths[.guestAgent].map(payloadFile),
            balloonService: try toolPaths[.balloonService].map(payloadFile))
    }

    /// The drivers from a virtio-win tree on the host (the unpacked ISO or the packaged tree): listed with lstat,
    /// the chosen files checked to be regular files before anything is read.
    static func tree(
        _ source: String, os: OSFacts, drivers: Set<String>? = nil, tools: Set<VirtioWin.Tool> = [], image: String
    ) throws -> VirtioFacts {
        try virtio(
            source: source, kind: "tree", os: os, drivers: drivers, tools: tools, list: { try listDirectory(source) },
            regular: { try requireRegular($0, root: source, source: source) }, fetch: { _ in }, cache: source,
            image: image)
    }

    /// Every entry below a host directory that is not a directory (regular files, and links, FIFOs and devices so
    /// that taking one is refused by name), relative, `/`-separated. Links are never followed (a linked directory
    /// is an entry, not descended into).
    static func listDirectory(_ root: String) throws -> [String] {
        var out: [String] = []
        var pending = [""]
        while let rel = pending.popLast() {
            let dir = rel.isEmpty ? root : "\(root)/\(rel)"
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else {
                throw RemedyError(.virtioWinInvalid, "cannot read the virtio-win directory \(dir)")
            }
            for name in names {
                let path = rel.isEmpty ? name : "\(rel)/\(name)"
                if HostFile.kind(atPath: "\(root)/\(path)") == .directory {
                    pending.append(path)
                } else {
                    out.append(path)
                }
            }
        }
        return out
    }

    /// Refuses the first of `paths` (relative to the host directory `root`) that is not a regular file.
    static func requireRegular(_ paths: [String], root: String, source: String) throws {
        for rel in paths {
            let kind = HostFile.kind(atPath: "\(root)/\(rel)")
            guard kind == .regular else {
                throw RemedyError(
                    .virtioWinInvalid,
                    "\(source): \(rel) is \(kind.map { "a \($0.rawValue)" } ?? "missing"), not a regular file; "
                        + "only regular files are taken from virtio-win")
            }
        }
    }

    static func files(_ inputs: PayloadInputs) throws -> [String: PayloadFile] {
        var out: [String: PayloadFile] = [:]
        for (name, path) in inputs.files {
            // a FIFO or device is refused (the user named the file: a link is followed)
            let (sha, size) = try SHA256Hex.ofFile(path)
            out[name] = PayloadFile(
                name: (FilePath(path).lastComponent?.string ?? ""),
                source: "\(name):\((FilePath(path).lastComponent?.string ?? ""))", size: size, sha256: sha)
        }
        return out
    }
}

extension PayloadManifest {
    /// Payload folders: `$REMEDY_PAYLOADS_DIR`, then `Payloads` beside the executable or above it.
    public static func directories() -> [String] {
        ResourceLocator.directories(named: "Payloads", environment: "REMEDY_PAYLOADS_DIR")
    }

    public static func named(_ name: String) -> PayloadManifest? {
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else { return nil }
        for dir in directories() {
            let path = "\(dir)/\(name)/manifest.yaml"
            if FileManager.default.fileExists(atPath: path) { return try? load(path) }
        }
        return nil
    }

    public static func all() -> [PayloadManifest] {
        var out: [PayloadManifest] = []
        for dir in directories() {
            for sub in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
            where !out.contains(where: { $0.name == sub }) {
                if let m = try? load("\(dir)/\(sub)/manifest.yaml") { out.append(m) }
            }
        }
        return out
    }

    /// Reads a manifest and every template it names (for every variant).
    public static func load(_ path: String) throws -> PayloadManifest {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw RemedyError(
                .policyInvalid, "cannot read payload manifest \(path): \(error.localizedDescription)", cause: error)
        }
        var m: PayloadManifest
        do {
            try PolicyLoader.checkShape(text, source: path)
            guard let node = try Yams.compose(yaml: text) else {
                throw RemedyError(.policyInvalid, "payload manifest \(path) is empty")
            }
            try PolicyLoader.checkExpansion(node, source: path)
            m = try YAMLDecoder().decode(PayloadManifest.self, from: node)
        } catch let e as RemedyError {
            throw e
        } catch {
            throw RemedyError(.policyInvalid, "payload manifest \(path): \(error)", cause: error)
        }
        m.directory = FilePath(path).removingLastComponent().string
        for t in m.files ?? [] {
            for variant in (t.template.contains("{variant}") ? (m.variants ?? []) : [""]) {
                let rel = t.template.replacingOccurrences(of: "{variant}", with: variant)
                do {
                    m.templates[rel] = try String(contentsOfFile: "\(m.directory)/\(rel)", encoding: .utf8)
                } catch {
                    throw RemedyError(
                        .policyInvalid, "payload \(m.name): template \(rel) is missing from \(m.directory)",
                        cause: error)
                }
            }
        }
        return m
    }
}
