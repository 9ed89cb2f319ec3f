import Foundation

/// A small seeded generator (SplitMix64): the same seed gives the same inputs, so a fuzz failure is replayed by
/// its printed seed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The fuzz harness of the test suite: each target runs for a bounded time (`REMEDY_FUZZ_SECONDS`, default 2 s;
/// set it higher to fuzz for longer), from a seed printed first (`REMEDY_FUZZ_SEED=<hex>` replays a run;
/// `REMEDY_FUZZ_INPUT=<n>` replays only its n-th input). Each input is bounded in size by its target, and in time
/// and memory by the harness: an input that takes longer than `perInputSeconds` or raises the process's peak
/// memory by more than `perInputMiB` is reported with the seed and index that replay it.
public enum Fuzz {
    public struct Failure: Sendable, CustomStringConvertible {
        public var target: String
        public var seed: UInt64
        public var input: Int
        public var problem: String
        public var description: String {
            "fuzz \(target): input \(input) \(problem); replay with REMEDY_FUZZ_SEED=\(String(seed, radix: 16)) REMEDY_FUZZ_INPUT=\(input)"
        }
    }

    public struct Summary: Sendable {
        public var rounds = 0
        public var failures: [Failure] = []
        public var slowestSeconds = 0.0
    }

    public static var seconds: Double {
        Double(ProcessInfo.processInfo.environment["REMEDY_FUZZ_SECONDS"] ?? "") ?? 2
    }

    static func peakMiB() -> Int {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return u.ru_maxrss / 1024
    }

    /// Runs `body` on inputs generated from per-input generators derived from one seed, until the time is up.
    /// `body` returns a problem description for an input that misbehaved (an unexpected error type), or nil.
    public static func run(
        _ target: String, perInputSeconds: Double = 10, perInputMiB: Int = 512,
        _ body: (inout SeededGenerator) throws -> String?
    ) rethrows -> Summary {
        let env = ProcessInfo.processInfo.environment
        let seed = env["REMEDY_FUZZ_SEED"].flatMap { UInt64($0, radix: 16) } ?? UInt64.random(in: 1...UInt64.max)
        let only = env["REMEDY_FUZZ_INPUT"].flatMap(Int.init)
        print(
            "fuzz \(target): seed \(String(seed, radix: 16)) (REMEDY_FUZZ_SEED=\(String(seed, radix: 16)) replays it), \(seconds) s"
        )
        var master = SeededGenerator(seed: seed)
        var summary = Summary()
        let deadline = Date().addingTimeInterval(seconds)
        var index = 0
        while only.map({ index <= $0 }) ?? (Date() < deadline) {
            var rng = SeededGenerator(seed: master.next())
            defer { index += 1 }
            if let o = only, index != o { continue }
            let before = peakMiB()
            let start = Date()
            let problem = try body(&rng)
            let took = Date().timeIntervalSince(start)
            summary.rounds += 1
            summary.slowestSeconds = max(summary.slowestSeconds, took)
            if let problem {
                summary.failures.append(Failure(target: target, seed: seed, input: index, problem: problem))
            }
            if took > perInputSeconds {
                summary.failures.append(
                    Failure(
                        target: target, seed: seed, input: index,
                        problem: String(format: "took %.1f s (bound %.0f s)", took, perInputSeconds)))
            }
            let grew = peakMiB() - before
            if grew > perInputMiB {
                summary.failures.append(
                    Failure(
                        target: target, seed: seed, input: index,
                        problem: "raised peak memory by \(grew) MiB (bound \(perInputMiB) MiB)"))
            }
        }
        print(
            "fuzz \(target): \(summary.rounds) inputs, slowest \(String(format: "%.3f", summary.slowestSeconds)) s, \(summary.failures.count) failures"
        )
        return summary
    }

    /// A mutation of `bytes`: truncated, bytes flipped, a 32/64-bit field made huge, a slice repeated or removed,
    /// random bytes appended. Never longer than `limit`.
    public static func mutate(_ bytes: [UInt8], limit: Int, using rng: inout SeededGenerator) -> [UInt8] {
        var m = bytes
        for _ in 0..<Int.random(in: 1...3, using: &rng) {
            switch Int.random(in: 0..<7, using: &rng) {
            case 0: m = Array(m.prefix(Int.random(in: 0...m.count, using: &rng)))
            case 1:
                for _ in 0..<Int.random(in: 1...8, using: &rng) where !m.isEmpty {
                    m[Int.random(in: 0..<m.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            case 2, 3:
                if m.count >= 8 {
                    let at = Int.random(in: 0...(m.count - 8), using: &rng)
                    let big: [UInt8] = [
                        [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], [0xFF, 0xFF, 0xFF, 0x7F, 0, 0, 0, 0],
                        [0, 0, 0, 0x40, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0x80],
                    ][Int.random(in: 0..<4, using: &rng)]
                    m.replaceSubrange(at..<at + 8, with: big)
                }
            case 4:
                if !m.isEmpty {
                    let a = Int.random(in: 0..<m.count, using: &rng),
                        b = min(m.count, a + Int.random(in: 1...512, using: &rng))
                    m.insert(contentsOf: m[a..<b], at: Int.random(in: 0...m.count, using: &rng))
                }
            case 5:
                if !m.isEmpty {
                    let a = Int.random(in: 0..<m.count, using: &rng),
                        b = min(m.count, a + Int.random(in: 1...256, using: &rng))
                    m.removeSubrange(a..<b)
                }
            default:
                m += (0..<Int.random(in: 1...256, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
        }
        return Array(m.prefix(limit))
    }

    /// A line-level mutation of a text: lines repeated, dropped, swapped, or given a token from `tokens`.
    public static func mutateLines(
        _ text: String, tokens: [String], limit: Int, using rng: inout SeededGenerator
    ) -> String {
        // Split on the byte: "\r\n" is one Character in Swift, so splitting the String on "\n" would leave a CRLF text
        // (every real INF) one line, and repeating that line would grow the input by 200x per round before the cut.
        var lines = text.utf8.split(separator: 0x0A, omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self)
        }
        var size = text.utf8.count
        for _ in 0..<Int.random(in: 1...4, using: &rng) where !lines.isEmpty && size <= limit {
            let i = Int.random(in: 0..<lines.count, using: &rng)
            switch Int.random(in: 0..<6, using: &rng) {
            case 0:
                lines.insert(contentsOf: Array(repeating: lines[i], count: Int.random(in: 1...50, using: &rng)), at: i)
            case 1: lines.remove(at: i)
            case 2: lines.swapAt(i, Int.random(in: 0..<lines.count, using: &rng))
            case 3:
                let t = tokens[Int.random(in: 0..<tokens.count, using: &rng)]
                let at = lines[i].isEmpty ? 0 : Int.random(in: 0...lines[i].count, using: &rng)
                lines[i].insert(contentsOf: t, at: lines[i].index(lines[i].startIndex, offsetBy: at))
            case 4: lines[i] = String(repeating: lines[i], count: Int.random(in: 2...200, using: &rng))
            default: lines[i] = tokens[Int.random(in: 0..<tokens.count, using: &rng)]
            }
            size = lines.reduce(lines.count) { $0 + $1.utf8.count }
        }
        let out = lines.joined(separator: "\n")
        return out.utf8.count <= limit ? out : String(decoding: Array(out.utf8.prefix(limit)), as: UTF8.self)
    }
}
