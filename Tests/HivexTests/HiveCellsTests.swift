import Foundation
import Hivex
import RegistryFormat
import RemedyFixtures
import Testing

/// ``HiveCells`` reads a hive where it is, cell by cell; libhivex (another implementation of the format) is the
/// oracle: on real Windows hives both must see the same keys, in the same order, with the same values, byte for byte.
@Suite struct HiveCellsTests {
    /// A reader over a hive file on this host, counting what it was asked for.
    static func cells(_ path: String) throws -> HiveCells {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        return try HiveCells(fileSize: bytes.count) { offset, count in
            Array(bytes[offset..<min(bytes.count, offset + count)])
        }
    }

    /// Walks both readers over the whole tree; returns the number of keys and values compared.
    static func compare(
        _ hive: Hive, _ node: HiveNode, _ cells: HiveCells, _ key: HiveCells.Key, path: String
    ) throws
        -> (keys: Int, values: Int, bigValues: Int)
    {
        let name = try hive.name(of: node)
        #expect(try cells.name(of: key) == name, "\(path): name")
        let want = try hive.rawValues(of: node)
        let got = try cells.values(of: key)
        #expect(got == want, "\(path)\\\(name): values differ")
        var total = (keys: 1, values: want.count, bigValues: want.filter { $0.data.count > 16344 }.count)
        let hivexChildren = try hive.children(of: node)
        let cellChildren = try cells.children(of: key)
        guard hivexChildren.count == cellChildren.count else {
            Issue.record("\(path)\\\(name): \(hivexChildren.count) subkeys in hivex, \(cellChildren.count) read")
            return total
        }
        for (h, c) in zip(hivexChildren, cellChildren) {
            let sub = try compare(hive, h, cells, c, path: path + "\\" + name)
            total = (total.keys + sub.keys, total.values + sub.values, total.bigValues + sub.bigValues)
        }
        return total
    }

    @Test(arguments: RealSystemHive.allCases)
    func everyKeyAndValueOfARealSystemHiveReadsAsHivexReadsIt(_ real: RealSystemHive) throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = try real.write(to: dir + "/SYSTEM")
        let hive = try Hive(path: path)
        defer { hive.close() }
        let cells = try Self.cells(path)
        let n = try Self.compare(hive, try hive.root(), cells, try cells.root(), path: "")
        #expect(n.keys > 5000 && n.values > 10000, "\(n)")
        print(
            "\(real.rawValue): \(n.keys) keys, \(n.values) values (\(n.bigValues) in big-data segments) as hivex reads them"
        )
    }

    @Test func aRealSamHiveReadsAsHivexReadsIt() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/SAM"
        let bytes = try RealSystemHive.xz(RealSystemHive.directory + "/SAM.xz")
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        let hive = try Hive(path: path)
        defer { hive.close() }
        let cells = try Self.cells(path)
        let n = try Self.compare(hive, try hive.root(), cells, try cells.root(), path: "")
        #expect(n.keys > 20, "\(n)")
    }

    /// The point of the reader: a few keys of a big hive cost a few chunks of it, not the file.
    @Test func aLookupReadsAFewChunksNotTheHive() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = try RealSystemHive.windows7.write(to: dir + "/SYSTEM")
        let cells = try Self.cells(path)
        let hive = try Hive(path: path)
        defer { hive.close() }
        let key = try #require(try cells.key(at: "ControlSet001\\Control\\ComputerName\\ComputerName"))
        let node = try #require(try hive.node(at: "controlset001\\CONTROL\\computername\\ComputerName"))
        #expect(try cells.values(of: key) == hive.rawValues(of: node))
        #expect(try cells.key(at: "ControlSet001\\NoSuchKey") == nil)
        #expect(
            cells.bytesRead <= 16 * HiveCells.chunkSize && cells.bytesRead * 20 < cells.fileSize, "\(cells.bytesRead)")
        // Given the first chunk (as inspection has it from reading the base block), the reader does not ask for it.
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let given = try HiveCells(fileSize: bytes.count, first: Array(bytes.prefix(HiveCells.chunkSize))) { o, c in
            Array(bytes[o..<min(bytes.count, o + c)])
        }
        let again = try #require(try given.key(at: "ControlSet001\\Control\\ComputerName\\ComputerName"))
        #expect(try given.values(of: again) == hive.rawValues(of: node))
        #expect(given.reads == cells.reads - 1 && given.bytesRead == cells.bytesRead - HiveCells.chunkSize)
    }

    @Test func aDirtyHiveIsRefused() throws {
        let dirty = try RealSystemHive.xz(RealSystemHive.directory + "/SYSTEM_B.xz")
        #expect(throws: RegfError.self) {
            _ = try HiveCells(fileSize: dirty.count) { o, c in Array(dirty[o..<min(dirty.count, o + c)]) }
        }
    }

    /// Lies in the structure (counts, offsets, sizes) end in an error, never a crash, a hang or a huge allocation.
    @Test func mutatedHivesNeverCrashTheReader() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sam = try RealSystemHive.xz(RealSystemHive.directory + "/SAM.xz")
        var answered = 0, refused = 0
        let summary = Fuzz.run("hive-cells") { rng in
            var bytes = Fuzz.mutate(sam, limit: 1 << 20, using: &rng)
            if bytes.count >= 4096, Bool.random(using: &rng) {
                BaseBlock.seal(&bytes, sequence: 1)  // past the base block's checks, into the cells
            }
            do {
                let cells = try HiveCells(fileSize: bytes.count) { o, c in
                    Array(bytes[min(bytes.count, o)..<min(bytes.count, o + c)])
                }
                var queue = [try cells.root()], seen = 0
                while let key = queue.popLast(), seen < 5000 {
                    seen += 1
                    _ = try cells.name(of: key)
                    _ = try cells.values(of: key)
                    queue += try cells.children(of: key)
                }
                answered += 1
            } catch is RegfError {
                refused += 1
            } catch {
                return "threw \(type(of: error)), not RegfError"
            }
            return nil
        }
        for f in summary.failures.prefix(5) { Issue.record("\(f)") }
        #expect(summary.rounds > 0)
        print("hive-cells fuzz: \(summary.rounds) rounds, \(answered) read through, \(refused) refused")
    }
}
