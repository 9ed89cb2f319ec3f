import Foundation
import RemedyCore
import Testing

/// The error codes are a closed, documented list: the README's paragraph and `RemedyError.Code` name the same codes.
@Suite struct ErrorCodeTests {
    static func readmeCodes() throws -> Set<String> {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let start = try #require(readme.range(of: "Error codes: "))
        let end = try #require(readme.range(of: "The list is closed", range: start.upperBound..<readme.endIndex))
        let paragraph = readme[start.upperBound..<end.lowerBound]
        // The codes are the backquoted words at the top level of the paragraph (explanations in parentheses may
        // quote options such as `--output OUT`, which are not codes).
        var codes = Set<String>(), depth = 0, word: String?
        for c in paragraph {
            switch c {
            case "(": depth += 1
            case ")": depth -= 1
            case "`" where depth == 0:
                if let w = word {
                    codes.insert(w)
                    word = nil
                } else {
                    word = ""
                }
            default: if word != nil { word!.append(c) }
            }
        }
        return codes
    }

    @Test func theReadmeNamesEveryCodeAndNoOther() throws {
        let documented = try Self.readmeCodes()
        let declared = Set(RemedyError.Code.allCases.map(\.rawValue))
        #expect(
            documented == declared,
            "README only: \(documented.subtracting(declared).sorted()); enum only: \(declared.subtracting(documented).sorted())"
        )
    }

    @Test func anUnknownCodeDoesNotDecode() throws {
        let known = try JSONDecoder().decode(RemedyError.Code.self, from: Data(#""hive-unreadable""#.utf8))
        #expect(known == .hiveUnreadable)
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(RemedyError.Code.self, from: Data(#""made-up""#.utf8))
        }
    }
}
