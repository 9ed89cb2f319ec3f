/// A Windows setup information (INF) file, parsed far enough to install a
/// driver package offline: its sections, the `[Version]` facts, the models
/// (hardware IDs) under `[Manufacturer]` for one architecture, and the
/// services `AddService` directives install.
///
/// Syntax handled as Microsoft's "General Syntax Rules for INF Files"
/// describe it: case-insensitive section and key names, `;` comments
/// outside quotes, `\` at the end of a line continues it, `"..."` quoting
/// (with `""` for a quote), `%token%` substitution from `[Strings]`
/// (`%%` is a percent sign), sections that appear twice are merged.
public struct INFFile: Sendable, Equatable {
    public struct Line: Sendable, Equatable {
        /// The key before `=`, or nil for a line without one.
        public var key: String?
        /// The comma-separated fields after `=` (or of the whole line), with strings substituted and quotes removed.
        public var fields: [String]
    }

    /// Lowercased section name -> its lines in order.
    public private(set) var sections: [String: [Line]] = [:]
    /// Section names in the order they first appear, as spelled.
    public private(set) var sectionOrder: [String] = []
    public private(set) var strings: [String: String] = [:]

    public init(text: String) {
        var raw: [(section: String, line: String)] = []
        var current: String?
        var pending = ""
        for physical in text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n").split(separator: "\n", omittingEmptySubsequences: false) {
            var line = Self.stripComment(String(physical))
            if line.hasPrefix("\u{FEFF}") { line.removeFirst() }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasSuffix("\\") {
                pending += String(trimmed.dropLast()) + " "
                continue
            }
            let logical = (pending + trimmed).trimmingCharacters(in: .whitespaces)
            pending = ""
            if logical.isEmpty { continue }
            if logical.hasPrefix("["), let close = logical.firstIndex(of: "]") {
                let name = String(logical[logical.index(after: logical.startIndex)..<close]).trimmingCharacters(in: .whitespaces)
                current = name
                if sections[name.lowercased()] == nil {
                    sections[name.lowercased()] = []
                    sectionOrder.append(name)
                }
                continue
            }
            if let current { raw.append((current, logical)) }
        }
        // [Strings] first: every other line substitutes from it.
        for (section, line) in raw where section.lowercased() == "strings" {
            let (key, value) = Self.splitKey(line)
            guard let key else { continue }
            strings[key.lowercased()] = Self.unquote(value.trimmingCharacters(in: .whitespaces))
        }
        for (section, line) in raw {
            let (key, value) = Self.splitKey(line)
            let fields = Self.splitFields(value).map { substitute($0) }
            sections[section.lowercased(), default: []].append(Line(key: key.map { substitute($0) }, fields: fields))
        }
    }

    /// The lines of a section (empty when it does not exist).
    public func section(_ name: String) -> [Line] { sections[name.lowercased()] ?? [] }
    public func has(_ name: String) -> Bool { sections[name.lowercased()] != nil }

    /// The first value of `key` in `section` (first field).
    public func value(_ section: String, _ key: String) -> String? {
        self.section(section).first { $0.key?.lowercased() == key.lowercased() }?.fields.first
    }

    /// Every value line of `key` in `section` (for directives that repeat, such as AddService).
    public func lines(_ section: String, _ key: String) -> [Line] {
        self.section(section).filter { $0.key?.lowercased() == key.lowercased() }
    }

    /// `%token%` replaced from [Strings]; `%%` is a literal percent. Numbered
    /// directory ids (`%12%`) are kept as they are.
    func substitute(_ s: String) -> String {
        guard s.contains("%") else { return s }
        var out = ""
        var i = s.startIndex
        while i < s.endIndex {
            if s[i] == "%", let end = s[s.index(after: i)...].firstIndex(of: "%") {
                let token = String(s[s.index(after: i)..<end])
                if token.isEmpty {
                    out += "%"
                } else if let v = strings[token.lowercased()] {
                    out += v
                } else {
                    out += "%\(token)%"
                }
                i = s.index(after: end)
            } else {
                out.append(s[i])
                i = s.index(after: i)
            }
        }
        return out
    }

    static func stripComment(_ line: String) -> String {
        var inQuote = false
        for (i, c) in zip(line.indices, line) {
            if c == "\"" { inQuote.toggle() }
            if c == ";" && !inQuote { return String(line[..<i]) }
        }
        return line
    }

    static func splitKey(_ line: String) -> (String?, String) {
        var inQuote = false
        for (i, c) in zip(line.indices, line) {
            if c == "\"" { inQuote.toggle() }
            if c == "=" && !inQuote {
                return (unquote(String(line[..<i]).trimmingCharacters(in: .whitespaces)), String(line[line.index(after: i)...]))
            }
        }
        return (nil, line)
    }

    static func splitFields(_ value: String) -> [String] {
        var fields: [String] = []
        var cur = ""
        var inQuote = false
        for c in value {
            if c == "\"" { inQuote.toggle(); cur.append(c); continue }
            if c == "," && !inQuote {
                fields.append(unquote(cur.trimmingCharacters(in: .whitespaces)))
                cur = ""
            } else {
                cur.append(c)
            }
        }
        fields.append(unquote(cur.trimmingCharacters(in: .whitespaces)))
        if fields == [""] { return [] }
        return fields
    }

    static func unquote(_ s: String) -> String {
        guard s.count >= 2, s.hasPrefix("\""), s.hasSuffix("\"") else { return s }
        return String(s.dropFirst().dropLast()).replacingOccurrences(of: "\"\"", with: "\"")
    }
}

import Foundation

/// What a driver INF installs, for one architecture: the facts remedy
/// turns into registry entries and files.
public struct DriverINF: Sendable, Equatable, Codable {
    public struct Service: Sendable, Equatable, Codable {
        public var name: String
        /// SERVICE_KERNEL_DRIVER (1), ...
        public var type: UInt32
        /// 0 boot, 1 system, 2 automatic, 3 manual, 4 disabled.
        public var start: UInt32
        public var errorControl: UInt32
        public var group: String?
        /// As Windows stores it: `System32\drivers\viostor.sys` (`%12%` resolved).
        public var imagePath: String
        public var displayName: String?
        /// The AddService flags; 0x2 (SPSVCINST_ASSOCSERVICE) marks the device's function driver.
        public var flags: UInt32
    }

    public struct Model: Sendable, Equatable, Codable {
        public var description: String
        /// The install section the model uses, as written (without decoration).
        public var installSection: String
        public var hardwareIDs: [String]
    }

    /// The INF's file name, lowercased (`viostor.inf`).
    public var name: String
    public var driverClass: String
    public var classGUID: String
    public var provider: String
    /// `DriverVer` date, as written (`09/19/2023`).
    public var date: String
    /// `DriverVer` version (`100.94.104.24000`).
    public var version: String
    public var catalog: String?
    public var models: [Model]
    /// The services the models' install sections add, in order, without duplicates.
    public var services: [Service]
    /// Files the INF copies (from SourceDisksFiles), lowercased.
    public var files: [String]

    /// Every hardware ID the INF installs for.
    public var hardwareIDs: [String] {
        var seen = Set<String>()
        return models.flatMap(\.hardwareIDs).filter { seen.insert($0.uppercased()).inserted }
    }

    /// The function-driver service of the package (AddService flag 0x2), else the first.
    public var functionService: Service? { services.first { $0.flags & 0x2 != 0 } ?? services.first }

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case missing(String)
        public var description: String {
            switch self { case .missing(let what): "the INF has no \(what)" }
        }
    }

    /// Reads a driver INF for `arch` (`x86_64` or `i386`), with Windows'
    /// NT version `major.minor` and build for decorated model sections
    /// (`NTamd64.10.0...16299` applies from build 16299).
    public init(name: String, text: String, arch: String, osMajor: Int, osMinor: Int, build: Int) throws {
        let inf = INFFile(text: text)
        self.name = name.lowercased()
        guard inf.has("Version") else { throw ParseError.missing("[Version] section") }
        driverClass = inf.value("Version", "Class") ?? ""
        guard let guid = inf.value("Version", "ClassGuid") else { throw ParseError.missing("ClassGuid in [Version]") }
        classGUID = guid.uppercased()
        provider = inf.value("Version", "Provider") ?? ""
        let ver = inf.lines("Version", "DriverVer").first?.fields ?? []
        date = ver.first ?? ""
        version = ver.count > 1 ? ver[1] : ""
        catalog = inf.value("Version", "CatalogFile")
        let platform = arch == "i386" ? "ntx86" : "ntamd64"

        var models: [Model] = []
        for m in inf.section("Manufacturer") {
            guard let base = m.fields.first, !base.isEmpty else { continue }
            // Decorations after the models name: pick the best one for this OS, as Windows does.
            let decorations = m.fields.dropFirst().map { $0.lowercased() }
            var best: (String, (Int, Int, Int))?
            for d in decorations {
                let parts = d.components(separatedBy: ".")
                guard parts.first == platform else { continue }
                // NTamd64[.major[.minor[.producttype[.suitemask[.build]]]]]
                let major = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
                let minor = parts.count > 2 ? Int(parts[2]) ?? 0 : 0
                let minBuild = parts.count > 5 ? Int(parts[5]) ?? 0 : 0
                let applies = (major, minor) < (osMajor, osMinor) || ((major, minor) == (osMajor, osMinor) && build >= minBuild)
                guard applies else { continue }
                if best == nil || (major, minor, minBuild) > best!.1 { best = (d, (major, minor, minBuild)) }
            }
            // Without decorations the models section serves every platform.
            if decorations.isEmpty { best = ("", (0, 0, 0)) }
            guard let chosen = best else { continue }
            let sectionName = chosen.0.isEmpty ? base : "\(base).\(chosen.0)"
            for line in inf.section(sectionName) {
                guard let install = line.fields.first, line.fields.count > 1 else { continue }
                let ids = line.fields.dropFirst().filter { !$0.isEmpty }
                if let i = models.firstIndex(where: { $0.installSection.lowercased() == install.lowercased() && $0.description == (line.key ?? "") }) {
                    models[i].hardwareIDs += ids
                } else {
                    models.append(Model(description: line.key ?? "", installSection: install, hardwareIDs: Array(ids)))
                }
            }
        }
        guard !models.isEmpty else { throw ParseError.missing("models for \(platform) (\(osMajor).\(osMinor) build \(build)) under [Manufacturer]") }
        self.models = models

        var services: [Service] = []
        for model in models {
            // The install section may itself be decorated (rhelscsi_inst.NTamd64): prefer the decorated one.
            let candidates = ["\(model.installSection).\(platform)", "\(model.installSection).nt", model.installSection]
            guard let section = candidates.first(where: { inf.has($0) }) else { continue }
            for add in inf.lines("\(section).Services", "AddService") {
                guard let svcName = add.fields.first, !svcName.isEmpty else { continue }   // `AddService = ,2`: a null service
                let flags = add.fields.count > 1 ? Self.number(add.fields[1]) ?? 0 : 0
                guard add.fields.count > 2 else { continue }
                let inst = add.fields[2]
                func num(_ key: String) -> UInt32? { inf.value(inst, key).flatMap(Self.number) }
                guard let type = num("ServiceType"), let start = num("StartType"), let errorControl = num("ErrorControl"),
                      let binary = inf.value(inst, "ServiceBinary") else {
                    throw ParseError.missing("ServiceType, StartType, ErrorControl and ServiceBinary in [\(inst)]")
                }
                if services.contains(where: { $0.name.lowercased() == svcName.lowercased() }) { continue }
                services.append(Service(name: svcName, type: type, start: start, errorControl: errorControl,
                                        group: inf.value(inst, "LoadOrderGroup"), imagePath: Self.imagePath(binary),
                                        displayName: inf.value(inst, "DisplayName"), flags: flags))
            }
        }
        self.services = services
        let platformFiles = inf.section("SourceDisksFiles.\(arch == "i386" ? "x86" : "amd64")")
        files = (inf.section("SourceDisksFiles") + platformFiles).compactMap { $0.key?.lowercased() }
    }

    /// `%12%\viostor.sys` -> `System32\drivers\viostor.sys` (12 is the drivers directory id).
    static func imagePath(_ binary: String) -> String {
        var b = binary
        for (id, path) in [("%12%", "System32\\drivers"), ("%11%", "System32"), ("%10%", "%SystemRoot%")] where b.lowercased().hasPrefix(id) {
            b = path + b.dropFirst(id.count)
        }
        return b
    }

    static func number(_ s: String) -> UInt32? {
        let t = s.trimmingCharacters(in: .whitespaces).lowercased()
        if t.hasPrefix("0x") { return UInt32(t.dropFirst(2), radix: 16) }
        return UInt32(t)
    }
}
