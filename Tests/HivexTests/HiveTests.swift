import Foundation
import Hivex
import RemedyFixtures
import Testing

func tempDir() throws -> String {
    let d = NSTemporaryDirectory() + "/remedy-test-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

@Suite struct BlankHiveTests {
    @Test func blankHiveOpensInHivexWithItsRootName() throws {
        let dir = try tempDir()
        let path = dir + "/blank"
        let bytes = BlankHive.bytes(rootName: "ROOT")
        #expect(bytes.count == 8192)
        #expect(Array(bytes[0..<4]) == Array("regf".utf8))
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        let hive = try Hive(path: path)
        #expect(try hive.name(of: hive.root()) == "ROOT")
        #expect(try hive.children(of: hive.root()).isEmpty)
        #expect(try hive.values(of: hive.root()).isEmpty)
    }

    @Test func checksumFollowsWindowsRuleForZeroAndAllOnes() {
        var base = [UInt8](repeating: 0, count: 512)
        #expect(RegfChecksum.compute(base) == 1)
        base[0] = 0xFF
        base[1] = 0xFF
        base[2] = 0xFF
        base[3] = 0xFF
        #expect(RegfChecksum.compute(base) == 0xFFFF_FFFE)
        base[4] = 0x01
        #expect(RegfChecksum.compute(base) == 0xFFFF_FFFF ^ 0x01)
    }

    @Test func hiveWithBadChecksumIsRejected() throws {
        let dir = try tempDir()
        var bytes = BlankHive.bytes()
        bytes[508] ^= 0x55
        #expect(FileManager.default.createFile(atPath: dir + "/bad", contents: Data(bytes)))
        #expect(throws: HivexError.self) { try Hive(path: dir + "/bad") }
    }

    @Test func truncatedAndGarbageFilesAreRejectedWithThePath() throws {
        let dir = try tempDir()
        #expect(FileManager.default.createFile(atPath: dir + "/short", contents: Data(BlankHive.bytes().prefix(3000))))
        #expect(
            FileManager.default.createFile(
                atPath: dir + "/garbage", contents: Data((0..<9000).map { UInt8(truncatingIfNeeded: $0 &* 31) })))
        for name in ["short", "garbage"] {
            do {
                _ = try Hive(path: dir + "/" + name)
                Issue.record("\(name) opened")
            } catch let e as HivexError {
                #expect(e.path.hasSuffix(name))
                #expect(e.function == "open")
            }
        }
    }
}

@Suite struct HiveContentTests {
    @Test func declarativeContentIsWrittenAndReadBackExactly() throws {
        let dir = try tempDir()
        var content = HiveContent(fileName: "SYSTEM")
        content.set(
            "ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{A}",
            [
                "EnableDHCP": .dword(0),
                "IPAddress": .multiString(["10.0.0.5", "10.0.0.6"]),
                "NameServer": .string("8.8.8.8"),
                "Path": .expandString("%SystemRoot%\\x"),
                "Q": .qword(0x1_0000_0001),
                "Blob": .binary([1, 2, 3]),
            ])
        try content.write(to: dir + "/SYSTEM")
        let hive = try Hive(path: dir + "/SYSTEM")
        let node = try #require(try hive.node(at: "controlset001\\SERVICES\\tcpip\\Parameters\\Interfaces\\{A}"))
        #expect(try hive.value(of: node, named: "enabledhcp") == .dword(0))
        #expect(try hive.value(of: node, named: "IPAddress") == .multiString(["10.0.0.5", "10.0.0.6"]))
        #expect(try hive.value(of: node, named: "NameServer") == .string("8.8.8.8"))
        #expect(try hive.value(of: node, named: "Path") == .expandString("%SystemRoot%\\x"))
        #expect(try hive.value(of: node, named: "Q") == .qword(0x1_0000_0001))
        #expect(try hive.value(of: node, named: "Blob") == .binary([1, 2, 3]))
        #expect(try hive.value(of: node, named: "Missing") == nil)
    }

    @Test func stringsAreEncodedAsWindowsDoes() {
        #expect(RegistryValue.string("A").encoded == [0x41, 0, 0, 0])
        #expect(RegistryValue.multiString(["A", "B"]).encoded == [0x41, 0, 0, 0, 0x42, 0, 0, 0, 0, 0])
        #expect(RegistryValue.multiString([]).encoded == [0, 0])
        #expect(RegistryValue.dword(1).encoded == [1, 0, 0, 0])
    }

    @Test func stringsWithoutTerminatorsAreReadLeniently() {
        #expect(RegistryValue.decode(type: 1, data: [0x41, 0, 0x42, 0]) == .string("AB"))
        #expect(RegistryValue.decode(type: 7, data: [0x41, 0, 0, 0, 0x42, 0]) == .multiString(["A", "B"]))
        #expect(RegistryValue.decode(type: 4, data: [1, 2]) == .raw(type: 4, data: [1, 2]))
    }

    @Test func commitWritesANewFileAndLeavesTheOriginal() throws {
        let dir = try tempDir()
        var content = HiveContent(fileName: "SOFTWARE")
        content.set("K", ["A": .dword(1), "B": .string("x")])
        try content.write(to: dir + "/orig")
        let before = try Data(contentsOf: URL(fileURLWithPath: dir + "/orig"))
        let hive = try Hive(path: dir + "/orig", writable: true)
        let k = try #require(try hive.node(at: "K"))
        try hive.setValue(of: k, HiveValue(name: "a", value: .dword(2)))
        #expect(try hive.deleteValue(of: k, named: "B"))
        #expect(try hive.deleteValue(of: k, named: "nope") == false)
        try hive.commit(to: dir + "/new")
        hive.close()
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/orig")) == before)
        let edited = try Hive(path: dir + "/new")
        let k2 = try #require(try edited.node(at: "K"))
        #expect(try edited.values(of: k2) == [HiveValue(name: "A", value: .dword(2))])
    }

    @Test func closedHiveThrowsInsteadOfCrashing() throws {
        let dir = try tempDir()
        try HiveContent(fileName: "X").write(to: dir + "/x")
        let hive = try Hive(path: dir + "/x")
        hive.close()
        #expect(throws: HivexError.self) { try hive.root() }
    }
}

@Suite struct MinimalPETests {
    @Test(arguments: [
        (MinimalPE.Machine.amd64, "PE32+ executable", "x86-64"), (.i386, "PE32 executable", "Intel 80386"),
    ])
    func fileRecognisesTheMachineType(machine: MinimalPE.Machine, kind: String, arch: String) throws {
        let dir = try tempDir()
        let path = dir + "/cmd.exe"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(MinimalPE.bytes(machine: machine))))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/file")
        p.arguments = ["-b", path]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(text.contains(kind), "file said: \(text)")
        #expect(text.contains(arch), "file said: \(text)")
        #expect(text.contains("MS Windows"), "file said: \(text)")
    }
}

@Suite struct SafeWriteTests {
    @Test func valuesTooBigForOneCellAndNonASCIIKeyNamesAreRefused() throws {
        let dir = try tempDir()
        try HiveContent(rootName: "ROOT", fileName: "\\x").write(to: dir + "/h")
        let hive = try Hive(path: dir + "/h", writable: true)
        defer { hive.close() }
        let node = try hive.ensureNode(at: "Software\\Test")
        try hive.setValue(
            of: node, HiveValue(name: "Fits", value: .binary([UInt8](repeating: 1, count: Hive.maxValueBytes))))
        do {
            try hive.setValue(
                of: node,
                HiveValue(name: "TooBig", value: .binary([UInt8](repeating: 1, count: Hive.maxValueBytes + 1))))
            Issue.record("a value over one cell was written")
        } catch let e as HivexError {
            #expect(e.errno.rawValue == EFBIG && e.description.contains("big-data"), "\(e)")
        }
        #expect(throws: HivexError.self) { try hive.addChild(to: node, named: "Clé") }
        #expect(throws: HivexError.self) { try hive.ensureNode(at: "Software\\Ключ") }
        #expect(try hive.value(of: node, named: "TooBig") == nil)
    }
}
