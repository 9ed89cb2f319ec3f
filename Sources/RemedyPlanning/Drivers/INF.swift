import Foundation

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
        /// The physical line (1-based) the logical line starts on.
        public var number: Int = 0
        /// The key as written, before `%token%` substitution (`%VioStorScsi.DeviceDesc%`).
        public var rawKey: String? = nil
    }

    /// Lowercased section name -> its lines in order.
    public private(set) var sections: [String: [Line]] = [:]
    /// Section names in the order they first appear, as spelled.
    public private(set) var sectionOrder: [String] = []
    public private(set) var strings: [String: String] = [:]

    /// Parses in one pass over the text's UTF-8 bytes (INF syntax is ASCII), so the time is linear in its size.
    public init(text: String) {
        var raw: [(section: String, key: [UInt8]?, value: [UInt8], number: Int)] = []
        var current: String?
        var pending: [UInt8] = []
        var continuing = false
        var number = 0, start = 0
        let bytes = Array(text.utf8)
        var i = 0
        var first = true
        while i <= bytes.count {
            // One physical line: up to CR LF, LF or CR.
            var end = i
            while end < bytes.count && bytes[end] != 0x0A && bytes[end] != 0x0D { end += 1 }
            if i == bytes.count && !first { break }
            first = false
            number += 1
            if !continuing { start = number }
            var line = Array(bytes[i..<end])
            if end < bytes.count && bytes[end] == 0x0D && end + 1 < bytes.count && bytes[end + 1] == 0x0A {
                i = end + 2
            } else {
                i = end + 1
            }
            if line.starts(with: [0xEF, 0xBB, 0xBF]) { line.removeFirst(3) }
            line = Self.trim(Self.stripComment(line))
            if line.last == 0x5C {  // `\` continues the line
                pending += line.dropLast() + [0x20]
                continuing = true
                continue
            }
            let logical = Self.trim(pending + line)
            pending = []
            continuing = false
            if logical.isEmpty { continue }
            if logical.first == 0x5B, let close = logical.firstIndex(of: 0x5D) {  // [section]
                let name = String(decoding: Self.trim(Array(logical[1..<close])), as: UTF8.self)
                current = name
                if sections[name.lowercased()] == nil {
                    sections[name.lowercased()] = []
                    sectionOrder.append(name)
                }
                continue
            }
            if let current {
                let (key, value) = Self.splitKey(logical)
                raw.append((current, key, value, start))
            }
        }
        // [Strings] first: every other line substitutes from it.
        for (section, key, value, _) in raw where section.lowercased() == "strings" {
            guard let key else { continue }
            strings[String(decoding: Self.unquote(Self.trim(key)), as: UTF8.self).lowercased()] =
                String(decoding: Self.unquote(Self.trim(value)), as: UTF8.self)
        }
        for (section, key, value, n) in raw {
            let fields = Self.splitFields(value).map { substitute(String(decoding: $0, as: UTF8.self)) }
            let rawKey = key.map { String(decoding: Self.unquote(Self.trim($0)), as: UTF8.self) }
            sections[section.lowercased(), default: []].append(
                Line(key: rawKey.map { substitute($0) }, fields: fields, number: n, rawKey: rawKey))
        }
    }

    static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }

    static func trim(_ b: [UInt8]) -> [UInt8] {
        guard let s = b.firstIndex(where: { !isSpace($0) }), let e = b.lastIndex(where: { !isSpace($0) }) else {
            return []
        }
        return Array(b[s...e])
    }

    static func stripComment(_ line: [UInt8]) -> [UInt8] {
        var inQuote = false
        for (i, c) in line.enumerated() {
            if c == 0x22 { inQuote.toggle() }
            if c == 0x3B && !inQuote { return Array(line[..<i]) }
        }
        return line
    }

    static func splitKey(_ line: [UInt8]) -> ([UInt8]?, [UInt8]) {
        var inQuote = false
        for (i, c) in line.enumerated() {
            if c == 0x22 { inQuote.toggle() }
            if c == 0x3D && !inQuote { return (Array(line[..<i]), Array(line[(i + 1)...])) }
        }
        return (nil, line)
    }

    static func splitFields(_ value: [UInt8]) -> [[UInt8]] {
        var fields: [[UInt8]] = []
        var cur: [UInt8] = []
        var inQuote = false
        for c in value {
            if c == 0x22 {
                inQuote.toggle()
                cur.append(c)
                continue
            }
            if c == 0x2C && !inQuote {
                fields.append(unquote(trim(cur)))
                cur = []
            } else {
                cur.append(c)
            }
        }
        fields.append(unquote(trim(cur)))
        if fields.count == 1 && fields[0].isEmpty { return [] }
        return fields
    }

    /// `"text"` -> `text`, with `""` inside standing for one quote.
    static func unquote(_ b: [UInt8]) -> [UInt8] {
        guard b.count >= 2, b.first == 0x22, b.last == 0x22 else { return b }
        var out: [UInt8] = []
        var j = 1
        while j < b.count - 1 {
            out.append(b[j])
            if b[j] == 0x22 && j + 1 < b.count - 1 && b[j + 1] == 0x22 { j += 1 }
            j += 1
        }
        return out
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

}

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
        /// `ServiceBinary` as the INF writes it (`%13%\viostor.sys`).
        public var binary: String
        /// As Windows stores it for a driver installed to the drivers directory (`%12%`): `System32\drivers\viostor.sys`.
        /// For other directory ids see ``imagePath(storeFolder:)``.
        public var imagePath: String
        public var displayName: String?
        /// The AddService flags; 0x2 (SPSVCINST_ASSOCSERVICE) marks the device's function driver.
        public var flags: UInt32
        /// The service-install section (`scsi_Service_Inst`).
        public var section: String = ""
        /// Where the service comes from: the `AddService` line and the section holding it (`scsi_inst.Services`),
        /// and the lines of the service-install section's directives (ServiceType, StartType, ServiceBinary...).
        public var addServiceLine: Int?
        public var servicesSection: String?
        public var directiveLines: [Int]?
        /// The file name the service runs (`viostor.sys`), lowercased: the package's own file (checked at parse time).
        public var binaryFile: String {
            binary.split(whereSeparator: { $0 == "\\" || $0 == "/" }).last.map { String($0).lowercased() } ?? ""
        }
        /// The service-install section's AddReg lines: HKR is the service key.
        public var addReg: [INFRegistryWrite] = []
        /// The AddService event-log install: log (`System`), event source name, and its AddReg lines (HKR is
        /// `Services\EventLog\<log>\<name>`).
        public var eventLog: EventLog?

        public struct EventLog: Sendable, Equatable, Codable {
            public var log: String
            public var name: String
            public var section: String
            public var addReg: [INFRegistryWrite]
        }

        /// The directory id `ServiceBinary` starts with (`12`, `13`), or nil for a path without one.
        public var binaryDirid: Int? { INFDirid.split(binary)?.id }

        /// The ImagePath Windows writes for this service (see ``INFDirid/imagePath(_:storeFolder:)``).
        public func imagePath(storeFolder: String) -> String? { INFDirid.imagePath(binary, storeFolder: storeFolder) }
    }

    public struct Model: Sendable, Equatable, Codable {
        public var description: String
        /// The install section the model uses, as written (without decoration).
        public var installSection: String
        /// The hardware ID of each models line naming this install section and description (the first ID of the line).
        public var hardwareIDs: [String]
        /// The compatible IDs of those lines (the IDs after the first one).
        public var compatibleIDs: [String] = []
        /// The install section Windows uses, decorated as the INF has it (`BALLOON_Device.NT`, `scsi_inst`): the
        /// name of the package's configuration in the DriverDatabase.
        public var configuration: String = ""
        /// The description as written (`%VioStorScsi.DeviceDesc%`), the form the DriverDatabase keeps.
        public var rawDescription: String = ""
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
    /// The manufacturer's name as written in `[Manufacturer]` (`%VENDOR%`), and its value.
    public var rawManufacturer: String = ""
    public var manufacturer: String = ""
    /// The `[Strings]` tokens the models' descriptions and the manufacturer use, lowercased token -> text.
    public var usedStrings: [String: String] = [:]

    /// Every hardware ID the INF installs for.
    public var hardwareIDs: [String] {
        var seen = Set<String>()
        return models.flatMap(\.hardwareIDs).filter { seen.insert($0.uppercased()).inserted }
    }

    /// Every compatible ID of the models that is not also a hardware ID.
    public var compatibleIDs: [String] {
        var seen = Set(hardwareIDs.map { $0.uppercased() })
        return models.flatMap(\.compatibleIDs).filter { seen.insert($0.uppercased()).inserted }
    }

    /// The function-driver service of the package (AddService flag 0x2), else the first.
    public var functionService: Service? { services.first { $0.flags & 0x2 != 0 } ?? services.first }

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case missing(String)
        /// A line remedy refuses, with its line number.
        case refused(line: Int, String)
        public var description: String {
            switch self {
            case .missing(let what): "the INF has no \(what)"
            case .refused(let line, let why): "line \(line): \(why)"
            }
        }
    }

    /// Reads a driver INF for `arch` (`x86_64` or `i386`), with Windows'
    /// NT version `major.minor` and build for decorated model sections
    /// (`NTamd64.10.0...16299` applies from build 16299).
    ///
    /// Linear in the INF's size: sections are looked up by name, models are grouped through a dictionary, and each
    /// install section is read once however many models name it.
    public init(name: String, text: String, arch: Architecture, osMajor: Int, osMinor: Int, build: Int) throws {
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
        let platform = "nt" + arch.windowsName

        var models: [Model] = []
        var modelIndex: [String: Int] = [:]
        var strings: [String: String] = [:]
        func noteString(_ raw: String) {
            // `%token%` as the whole text: the DriverDatabase keeps the token and the package's Strings key its text.
            guard raw.count > 2, raw.hasPrefix("%"), raw.hasSuffix("%") else { return }
            let token = String(raw.dropFirst().dropLast()).lowercased()
            if let v = inf.strings[token] { strings[token] = v }
        }
        for m in inf.section("Manufacturer") {
            guard let base = m.fields.first, !base.isEmpty else { continue }
            if rawManufacturer.isEmpty {
                rawManufacturer = m.rawKey ?? ""
                manufacturer = m.key ?? ""
                noteString(rawManufacturer)
            }
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
                let applies =
                    (major, minor) < (osMajor, osMinor) || ((major, minor) == (osMajor, osMinor) && build >= minBuild)
                guard applies else { continue }
                if best == nil || (major, minor, minBuild) > best!.1 { best = (d, (major, minor, minBuild)) }
            }
            // Without decorations the models section serves every platform.
            if decorations.isEmpty { best = ("", (0, 0, 0)) }
            guard let chosen = best else { continue }
            let sectionName = chosen.0.isEmpty ? base : "\(base).\(chosen.0)"
            for line in inf.section(sectionName) {
                guard let install = line.fields.first, line.fields.count > 1 else { continue }
                // `description = install-section, hw-id[, compatible-id...]` (Microsoft's "INF Models Section").
                let ids = line.fields.dropFirst().filter { !$0.isEmpty }
                guard let hw = ids.first else { continue }
                let compatible = Array(ids.dropFirst())
                let key = install.lowercased() + "\u{0}" + (line.key ?? "")
                if let i = modelIndex[key] {
                    models[i].hardwareIDs.append(hw)
                    models[i].compatibleIDs += compatible
                } else {
                    modelIndex[key] = models.count
                    noteString(line.rawKey ?? "")
                    models.append(
                        Model(
                            description: line.key ?? "", installSection: install, hardwareIDs: [hw],
                            compatibleIDs: compatible,
                            configuration: install, rawDescription: line.rawKey ?? ""))
                }
            }
        }
        guard !models.isEmpty else {
            throw ParseError.missing(
                "models for \(platform) (\(osMajor).\(osMinor) build \(build)) under [Manufacturer]")
        }
        usedStrings = strings

        let packageFiles = inf.section("SourceDisksFiles") + inf.section("SourceDisksFiles.\(arch.windowsName)")
        files = packageFiles.compactMap { $0.key?.lowercased() }
        let fileSet = Set(files)

        var services: [Service] = []
        var serviceNames = Set<String>()
        var sectionOf: [String: String] = [:]
        for i in models.indices {
            let install = models[i].installSection
            if let known = sectionOf[install.lowercased()] {
                models[i].configuration = known
                continue
            }
            // The install section may itself be decorated (rhelscsi_inst.NTamd64): prefer the decorated one.
            let candidates = ["\(install).\(platform)", "\(install).nt", install]
            guard let section = candidates.first(where: { inf.has($0) }) else {
                sectionOf[install.lowercased()] = install
                continue
            }
            let spelled = inf.sectionOrder.first { $0.lowercased() == section.lowercased() } ?? section
            sectionOf[install.lowercased()] = spelled
            models[i].configuration = spelled
            for add in inf.lines("\(section).Services", "AddService") {
                // `AddService = ,2`: a null service
                guard let svcName = add.fields.first, !svcName.isEmpty else { continue }
                let flags = add.fields.count > 1 ? Self.number(add.fields[1]) ?? 0 : 0
                guard add.fields.count > 2 else { continue }
                guard Self.validServiceName(svcName) else {
                    throw ParseError.refused(line: add.number, "AddService names an invalid service '\(svcName)'")
                }
                let inst = add.fields[2]
                func num(_ key: String) -> UInt32? { inf.value(inst, key).flatMap(Self.number) }
                guard let type = num("ServiceType"), let start = num("StartType"),
                    let errorControl = num("ErrorControl"),
                    let binary = inf.value(inst, "ServiceBinary")
                else {
                    throw ParseError.missing("ServiceType, StartType, ErrorControl and ServiceBinary in [\(inst)]")
                }
                if serviceNames.contains(svcName.lowercased()) { continue }
                // The service runs a file of this package, from a directory Windows resolves (no other file of the system).
                let binaryLine =
                    inf.section(inst).first { $0.key?.lowercased() == "servicebinary" }?.number ?? add.number
                guard let split = INFDirid.split(binary), INFDirid.known(split.id) else {
                    throw ParseError.refused(
                        line: binaryLine,
                        "ServiceBinary '\(binary)' of [\(inst)] does not start with a directory id Windows defines (%12%, %13%, ...)"
                    )
                }
                let file = split.rest.split(separator: "\\").last.map { String($0).lowercased() } ?? ""
                guard fileSet.contains(file) else {
                    throw ParseError.refused(
                        line: binaryLine,
                        "ServiceBinary '\(binary)' of [\(inst)] is not a file of the package (SourceDisksFiles)")
                }
                var svc = Service(
                    name: svcName, type: type, start: start, errorControl: errorControl,
                    group: inf.value(inst, "LoadOrderGroup"), binary: binary, imagePath: Self.imagePath(binary),
                    displayName: inf.value(inst, "DisplayName"), flags: flags, section: inst)
                svc.addServiceLine = add.number
                svc.servicesSection =
                    inf.sectionOrder.first { $0.lowercased() == "\(section).Services".lowercased() }
                    ?? "\(section).Services"
                let directives: Set<String> = [
                    "servicetype", "starttype", "errorcontrol", "servicebinary", "loadordergroup", "displayname",
                ]
                svc.directiveLines = inf.section(inst).filter {
                    $0.key.map { directives.contains($0.lowercased()) } ?? false
                }.map(\.number)
                for reg in inf.lines(inst, "AddReg") {
                    for name in reg.fields where !name.isEmpty {
                        svc.addReg += try Self.addReg(inf, section: name, service: svcName, eventLog: false)
                    }
                }
                if add.fields.count > 3, !add.fields[3].isEmpty {
                    let logSection = add.fields[3]
                    let log = add.fields.count > 4 && !add.fields[4].isEmpty ? add.fields[4] : "System"
                    let source = add.fields.count > 5 && !add.fields[5].isEmpty ? add.fields[5] : svcName
                    guard ["system", "application", "security"].contains(log.lowercased()),
                        Self.validServiceName(source)
                    else {
                        throw ParseError.refused(
                            line: add.number,
                            "AddService's event log '\(log)\\\(source)' is not the System, Application or Security log of a valid source"
                        )
                    }
                    // The event source is the service's own (every virtio-win INF leaves it to the default, the service
                    // name): another name would write another component's event source key.
                    guard source.lowercased() == svcName.lowercased() else {
                        throw ParseError.refused(
                            line: add.number,
                            "AddService's event source '\(source)' is not the service's own ('\(svcName)')")
                    }
                    var writes: [INFRegistryWrite] = []
                    for reg in inf.lines(logSection, "AddReg") {
                        for name in reg.fields where !name.isEmpty {
                            writes += try Self.addReg(inf, section: name, service: svcName, eventLog: true)
                        }
                    }
                    svc.eventLog = Service.EventLog(log: log, name: source, section: logSection, addReg: writes)
                }
                serviceNames.insert(svcName.lowercased())
                services.append(svc)
            }
        }
        self.models = models
        self.services = services
    }

    /// Service and event source names: what the Service Control Manager accepts as a key name (no `\` or `/`, at most 256).
    static func validServiceName(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 256 && !s.contains("\\") && !s.contains("/")
            && !s.unicodeScalars.contains { $0.value < 0x20 }
            && s != "." && s != ".."
    }

    /// The values a service's own AddReg may not set: they come from the service-install section's directives
    /// (ServiceType, StartType, ErrorControl, ServiceBinary, LoadOrderGroup, Dependencies, StartName), and a package
    /// that set them through AddReg could make its service start differently from what its install section says.
    static let serviceDirectiveValues: Set<String> = [
        "type", "start", "errorcontrol", "imagepath", "group", "tag",
        "dependonservice", "dependongroup", "objectname",
    ]

    /// Reads an AddReg section for a service-install (`eventLog` false: HKR is the service key) or an event-log
    /// install (HKR is the event source key), refusing anything outside them.
    static func addReg(_ inf: INFFile, section: String, service: String, eventLog: Bool) throws -> [INFRegistryWrite] {
        guard inf.has(section) else { throw ParseError.missing("AddReg section [\(section)]") }
        var out: [INFRegistryWrite] = []
        for line in inf.section(section) {
            // `reg-root, [subkey], [value-entry-name], [flags], [value]...`: the whole line is the fields (no key).
            let fields = (line.key.map { [$0] } ?? []) + line.fields
            let w: INFRegistryWrite
            do {
                w = try INFRegistryWrite(fields: fields, line: line.number, section: section)
            } catch let e as INFRegistryWrite.Invalid {
                throw ParseError.refused(line: line.number, "[\(section)]: \(e.why)")
            }
            if w.subkey.split(separator: "\\").contains(where: { $0 == ".." || $0 == "." }) {
                throw ParseError.refused(line: line.number, "[\(section)] names a relative key '\(w.subkey)'")
            }
            switch w.root {
            case .hkr:
                // HKR: the service's own key (or its event source); the directive values and StartOverride are not AddReg's.
                if !eventLog, w.subkey.isEmpty, let n = w.valueName, serviceDirectiveValues.contains(n.lowercased()) {
                    throw ParseError.refused(
                        line: line.number,
                        "[\(section)] sets the service's \(n), which only the service-install directives may set")
                }
                if !eventLog, w.subkey.lowercased().split(separator: "\\").first == "startoverride" {
                    throw ParseError.refused(line: line.number, "[\(section)] writes the service's StartOverride")
                }
            case .hklm:
                // HKLM: only this service's own key, spelled in full.
                let own = "system\\currentcontrolset\\services\\\(service.lowercased())"
                let key = w.subkey.lowercased()
                guard !eventLog, key == own || key.hasPrefix(own + "\\") else {
                    throw ParseError.refused(
                        line: line.number,
                        "[\(section)] writes HKLM\\\(w.subkey), outside the service \(service)'s own key")
                }
            }
            out.append(w)
        }
        return out
    }

    /// `%12%\viostor.sys` -> `System32\drivers\viostor.sys` (12 is the drivers directory id).
    static func imagePath(_ binary: String) -> String {
        var b = binary
        for (id, path) in [("%12%", "System32\\drivers"), ("%11%", "System32"), ("%10%", "%SystemRoot%")]
        where b.lowercased().hasPrefix(id) {
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

/// One `AddReg` line (Microsoft's "INF AddReg Directive"): `reg-root, [subkey], [value-entry-name], [flags], [value]`.
public struct INFRegistryWrite: Sendable, Equatable, Codable {
    public enum Root: String, Sendable, Codable {
        case hkr = "HKR"
        case hklm = "HKLM"
    }
    public var root: Root
    /// Relative to the root (HKR: the service key; HKLM: `SYSTEM\CurrentControlSet\...`), `\`-separated, may be empty.
    public var subkey: String
    /// nil: no value, only the key (FLG_ADDREG_KEYONLY, or a line with no value name and no value); "" is the default value.
    public var valueName: String?
    public var flags: UInt32
    /// The value to write; nil for a key only or a deletion (FLG_ADDREG_DELVAL).
    public var value: RegistryValue?
    /// The INF section and line it comes from.
    public var section: String
    public var line: Int

    public static let binValueType: UInt32 = 0x1, noClobberFlag: UInt32 = 0x2, delValFlag: UInt32 = 0x4,
        appendFlag: UInt32 = 0x8,
        keyOnlyFlag: UInt32 = 0x10, overwriteOnlyFlag: UInt32 = 0x20
    public var isDelete: Bool { value == nil && valueName != nil }
    public var noClobber: Bool { flags & Self.noClobberFlag != 0 }
    public var appends: Bool { flags & Self.appendFlag != 0 }
    public var overwriteOnly: Bool { flags & Self.overwriteOnlyFlag != 0 }

    struct Invalid: Error { var why: String }

    init(fields: [String], line: Int, section: String) throws {
        self.line = line
        self.section = section
        guard let r = fields.first else { throw Invalid(why: "an empty AddReg line") }
        switch r.uppercased() {
        case "HKR": root = .hkr
        case "HKLM", "HKEY_LOCAL_MACHINE": root = .hklm
        default: throw Invalid(why: "AddReg root '\(r)' is not HKR or HKLM (remedy writes only the service's own keys)")
        }
        subkey = fields.count > 1 ? fields[1].trimmingCharacters(in: CharacterSet(charactersIn: "\\")) : ""
        let name: String? = fields.count > 2 && !fields[2].isEmpty ? fields[2] : nil
        let flagText = fields.count > 3 ? fields[3] : ""
        guard let f = flagText.isEmpty ? 0 : DriverINF.number(flagText) else {
            throw Invalid(why: "AddReg flags '\(flagText)' are not a number")
        }
        flags = f
        let data = Array(fields.dropFirst(4))
        // Flags that change which view of the registry is written, and that no virtio-win INF uses.
        if f & (0x1000 | 0x2000 | 0x4000) != 0 {
            throw Invalid(why: "AddReg flags 0x\(String(f, radix: 16)) (64/32-bit or common key) are not supported")
        }
        let typeBits =
            f & ~(Self.noClobberFlag | Self.delValFlag | Self.appendFlag | Self.keyOnlyFlag | Self.overwriteOnlyFlag)
        if f & Self.keyOnlyFlag != 0 && typeBits == 0 {
            valueName = nil
            value = nil
            return
        }
        if f & Self.delValFlag != 0 && typeBits == 0 {
            guard let name else { throw Invalid(why: "FLG_ADDREG_DELVAL without a value name") }
            valueName = name
            value = nil
            return
        }
        if name == nil && data.isEmpty && fields.count <= 4 {
            // `HKR, "Key"` or `HKR, "Key",,`: creates the key.
            valueName = nil
            value = nil
            return
        }
        valueName = name ?? ""
        switch typeBits {
        case 0x00000000:  // FLG_ADDREG_TYPE_SZ
            value = .string(data.first ?? "")
        case 0x00020000:  // FLG_ADDREG_TYPE_EXPAND_SZ
            value = .expandString(data.first ?? "")
        case 0x00010000:  // FLG_ADDREG_TYPE_MULTI_SZ
            value = .multiString(data.filter { !$0.isEmpty })
        case 0x00010001:  // FLG_ADDREG_TYPE_DWORD
            guard let d = data.first, let n = DriverINF.number(d) else {
                throw Invalid(why: "a REG_DWORD value '\(data.first ?? "")' that is not a number")
            }
            value = .dword(n)
        case 0x00020001:  // FLG_ADDREG_TYPE_NONE
            value = .raw(type: 0, data: try Self.bytes(data))
        case 0x00000001:  // FLG_ADDREG_TYPE_BINARY
            value = .binary(try Self.bytes(data))
        default:
            // FLG_ADDREG_BINVALUETYPE with the registry type in the high word: the data is the value's bytes.
            guard typeBits & Self.binValueType != 0, typeBits & 0xFFFE != 0 || typeBits >> 16 != 0 else {
                throw Invalid(why: "AddReg value type 0x\(String(typeBits, radix: 16)) is not one Windows defines")
            }
            let regType = typeBits >> 16
            let bytes = try Self.bytes(data)
            switch regType {
            case 4 where bytes.count == 4:
                value = .dword(
                    UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24)
            case 3: value = .binary(bytes)
            default: value = .raw(type: regType, data: bytes)
            }
        }
        if appends {
            guard case .multiString = value else {
                throw Invalid(why: "FLG_ADDREG_APPEND applies only to REG_MULTI_SZ")
            }
        }
    }

    static func bytes(_ fields: [String]) throws -> [UInt8] {
        try fields.filter { !$0.isEmpty }.map { f in
            let t = f.lowercased().hasPrefix("0x") ? String(f.dropFirst(2)) : f
            guard let b = UInt8(t, radix: 16) else { throw Invalid(why: "binary data '\(f)' is not a hex byte") }
            return b
        }
    }

    /// Where the line is: `viostor.inf [pnpsafe_pci_addreg] line 90`.
    public func source(_ inf: String) -> String { "\(inf) [\(section)] line \(line)" }
}

/// Directory ids (Microsoft's "Using Dirids",
/// https://learn.microsoft.com/en-us/windows-hardware/drivers/install/using-dirids), resolved as Windows resolves
/// them on the image being repaired.
public enum INFDirid {
    /// The directory of a dirid as a Windows path, with `%SystemRoot%` and `%SystemDrive%` standing for the image's
    /// Windows directory and system drive, and `<driver store>` for DIRID 13. Nil for a dirid Windows does not define.
    public static func directory(_ id: Int) -> String? {
        switch id {
        case -1: ""  // an absolute path follows
        case 1: "<source>"  // the directory the INF was installed from
        case 10: "%SystemRoot%"  // Windows directory
        case 11: "%SystemRoot%\\System32"  // system directory
        case 12: "%SystemRoot%\\System32\\drivers"  // drivers directory
        case 13: "<driver store>"  // the package's driver store directory
        case 17: "%SystemRoot%\\INF"  // INF directory
        case 18: "%SystemRoot%\\Help"  // Help directory
        case 20: "%SystemRoot%\\Fonts"  // Fonts directory
        case 21: "%SystemRoot%\\System32\\viewers"  // viewers directory
        case 23: "%SystemRoot%\\System32\\spool\\drivers\\color"  // color (ICM) directory
        case 24: "%SystemDrive%"  // root of the system disk
        case 25: "%SystemRoot%"  // shared directory
        case 30: "%SystemDrive%"  // root of the boot disk
        case 50: "%SystemRoot%\\system"  // system directory (16-bit)
        case 51: "%SystemRoot%\\System32\\spool"  // spool directory
        case 52: "%SystemRoot%\\System32\\spool\\drivers"  // spool drivers directory
        case 53: "%USERPROFILE%"  // user profile directory
        case 54: "%SystemDrive%"  // the directory of the boot loader
        case 55: "%SystemRoot%\\System32\\spool\\prtprocs"  // print processors directory
        case 16422: "%SystemDrive%\\Program Files"  // Program Files
        case 16425: "%SystemRoot%\\SysWOW64"  // 32-bit system directory on 64-bit Windows
        case 16426: "%SystemDrive%\\Program Files (x86)"  // Program Files (x86)
        case 16427: "%SystemDrive%\\Program Files\\Common Files"  // Common Files
        case 16428: "%SystemDrive%\\Program Files (x86)\\Common Files"  // Common Files (x86)
        default: nil
        }
    }

    public static func known(_ id: Int) -> Bool { directory(id) != nil }

    /// `%13%\viostor.sys` -> (13, `viostor.sys`); nil without a leading `%number%`.
    public static func split(_ path: String) -> (id: Int, rest: String)? {
        guard path.hasPrefix("%"), let end = path.dropFirst().firstIndex(of: "%"),
            let id = Int(path[path.index(after: path.startIndex)..<end])
        else { return nil }
        var rest = String(path[path.index(after: end)...])
        while rest.hasPrefix("\\") { rest.removeFirst() }
        return (id, rest)
    }

    /// The ImagePath Windows writes for a kernel driver's `ServiceBinary`: relative to the Windows directory for
    /// %12% and %11% (`System32\drivers\viostor.sys`, as real hives have it), and
    /// `\SystemRoot\System32\DriverStore\FileRepository\<folder>\viostor.sys` for %13% (run from the driver store).
    /// Nil for a directory a boot driver cannot be loaded from (the source directory, a user profile, ...).
    public static func imagePath(_ binary: String, storeFolder: String) -> String? {
        guard let (id, rest) = split(binary), !rest.isEmpty, !rest.split(separator: "\\").contains("..") else {
            return nil
        }
        switch id {
        case 12: return "System32\\drivers\\" + rest
        case 11: return "System32\\" + rest
        case 13: return "\\SystemRoot\\System32\\DriverStore\\FileRepository\\\(storeFolder)\\" + rest
        default:
            guard let dir = directory(id), dir.hasPrefix("%SystemRoot%") else { return nil }
            return "\\SystemRoot" + dir.dropFirst("%SystemRoot%".count) + "\\" + rest
        }
    }

    /// The guest path (`/`-separated, from the image's root) of an ImagePath Windows stores, given the image's
    /// `systemRoot` (`/Windows`): `System32\drivers\x.sys`, `\SystemRoot\...`, `%SystemRoot%\...`, `\??\C:\...`,
    /// `C:\...`. Nil for a form remedy cannot place.
    public static func guestPath(imagePath: String, systemRoot: String) -> String? {
        var p = imagePath
        if p.hasPrefix("\\??\\") { p = String(p.dropFirst(4)) }
        let l = p.lowercased()
        if l.hasPrefix("\\systemroot\\") {
            p = systemRoot + "/" + p.dropFirst("\\systemroot\\".count)
        } else if l.hasPrefix("%systemroot%\\") {
            p = systemRoot + "/" + p.dropFirst("%systemroot%\\".count)
        } else if l.count > 3, l.dropFirst().hasPrefix(":\\") {
            p = "/" + p.dropFirst(3)
        } else if l.hasPrefix("\\") || l.contains("%") || l.contains(":") {
            return nil
        } else {
            p = systemRoot + "/" + p
        }
        return p.replacingOccurrences(of: "\\", with: "/")
    }
}
