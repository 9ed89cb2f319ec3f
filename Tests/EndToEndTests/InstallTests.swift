import Foundation
import Testing

/// `make install` / `make uninstall` of the built debug binary (no rebuild, no appliance): the installed program must
/// find its policies and payloads from its own place, and the man pages and completions must be there.
@Suite struct InstallTests {
    /// The package root (this file is Tests/EndToEndTests/InstallTests.swift).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    static func which(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    /// The test's environment without remedy's own variables, and without make's (a make above `swift test`).
    static var cleanEnvironment: [String: String] {
        ProcessInfo.processInfo.environment.filter {
            !$0.key.hasPrefix("REMEDY_")
                && !["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DESTDIR", "PREFIX", "BIN", "GENERATE_MANUAL"].contains($0.key)
        }
    }

    @Test func makeInstallGivesAWorkingProgramManPagesAndCompletions() throws {
        let make = try #require(Self.which("make"), "make is not installed")
        let bin = URL(fileURLWithPath: remedyExecutable()).standardizedFileURL.path
        let generator = URL(fileURLWithPath: bin).deletingLastPathComponent().appendingPathComponent("generate-manual")
            .path
        // A test target cannot depend on another package's executable, and swift test cannot build it (the build lock).
        try #require(
            FileManager.default.isExecutableFile(atPath: generator),
            "no \(generator): run `swift build --product generate-manual` first (.ci/setup does)")

        let tmp = URL(fileURLWithPath: NSTemporaryDirectory() + "/remedy-install-\(UUID().uuidString)")
            .resolvingSymlinksInPath().path
        try FileManager.default.createDirectory(atPath: tmp + "/elsewhere", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        // DESTDIR and PREFIX both: the files land in $DESTDIR$PREFIX, and the program runs from there.
        let destdir = tmp + "/stage", prefix = "/opt/remedy", top = destdir + prefix
        let install = try runProgram(
            make, ["-C", Self.root, "install", "DESTDIR=\(destdir)", "PREFIX=\(prefix)", "BIN=\(bin)"],
            environment: Self.cleanEnvironment)
        try #require(install.status == 0, "make install: \(install.stdout)\n\(install.stderr)")

        // The program, run from a directory outside the checkout with no REMEDY_* variable, finds the installed data.
        let program = top + "/bin/remedy"
        let policies = try runProgram(
            program, ["policies"], environment: Self.cleanEnvironment, directory: tmp + "/elsewhere")
        #expect(policies.status == 0, "\(policies.stderr)")
        for name in ["huawei-ims", "openstack-kvm", "azure"] {
            // huawei-ims and openstack-kvm use the cloudbase-init payload: they load only when share/remedy/Payloads is found too.
            let line = policies.stdout.split(separator: "\n").first { $0.hasPrefix(name + " ") }
            #expect(line != nil && !line!.contains("(invalid"), "\(name) not listed (or invalid):\n\(policies.stdout)")
            #expect(
                policies.stdout.contains("(\(top)/share/remedy/Policies/\(name).yaml)"),
                "\(name) not read from the install:\n\(policies.stdout)")
        }
        let explain = try runProgram(
            program, ["explain"], environment: Self.cleanEnvironment, directory: tmp + "/elsewhere")
        #expect(
            explain.status == 0 && explain.stdout.contains("cloudbase-init"),
            "payload manifests not found: \(explain.stdout) \(explain.stderr)")
        let version = try runProgram(
            program, ["--version"], environment: Self.cleanEnvironment, directory: tmp + "/elsewhere")
        #expect(version.status == 0 && !version.stdout.isEmpty)

        // The installed program is the product without the test kit: no demo, no dev tools (they are remedy-dev's).
        for gone in ["demo", "dev"] {
            let r = try runProgram(program, [gone], environment: Self.cleanEnvironment, directory: tmp + "/elsewhere")
            #expect(r.status == 64, "remedy \(gone): \(r.status) \(r.stdout) \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: top + "/bin/remedy-dev"))

        // remedy-dev's demo and make-virtio-win need the INF files of a checkout: without them, a clean error and no work.
        var noFixtures = Self.cleanEnvironment
        noFixtures["REMEDY_VIRTIO_INF_FIXTURES"] = tmp + "/no-such-folder"
        let fake = try runProgram(
            remedyDevExecutable(), ["make-virtio-win", tmp + "/virtio"], environment: noFixtures,
            directory: tmp + "/elsewhere")
        #expect(
            fake.status == 1 && fake.stderr.contains("REMEDY_VIRTIO_INF_FIXTURES")
                && !FileManager.default.fileExists(atPath: tmp + "/virtio"),
            "\(fake.status): \(fake.stderr)")

        // Man pages (mdoc, as swift-argument-parser's generate-manual writes them): one for remedy and one per subcommand.
        let man1 = top + "/share/man/man1"
        let page = try String(contentsOfFile: man1 + "/remedy.1", encoding: .utf8)
        let macros = page.split(separator: "\n").filter { $0.hasPrefix(".") && !$0.hasPrefix(".\\\"") }
        #expect(
            macros.first.map { $0.hasPrefix(".Dd") || $0.hasPrefix(".TH") } == true,
            "remedy.1 does not start as a man page: \(page.prefix(200))")
        #expect(page.contains(".Dt REMEDY 1") || page.contains(".TH REMEDY 1"), "\(page.prefix(200))")
        for sub in ["plan", "apply", "rollback", "batch", "policies"] {
            let sp = (try? String(contentsOfFile: man1 + "/remedy.\(sub).1", encoding: .utf8)) ?? ""
            #expect(sp.contains(".Dt REMEDY.\(sub.uppercased()) 1"), "remedy.\(sub).1 missing or not a page")
        }
        if let man = Self.which("man") {
            var env = Self.cleanEnvironment
            env["MANPAGER"] = "cat"
            env["PAGER"] = "cat"
            env["MANWIDTH"] = "100"
            let shown = try runProgram(man, ["-l", man1 + "/remedy.rollback.1"], environment: env, directory: tmp)
            #expect(
                shown.status == 0 && shown.stdout.contains("SYNOPSIS") && shown.stdout.contains("--dry-run"),
                "man -l remedy.rollback.1: \(shown.stdout.prefix(400)) \(shown.stderr)")
        }

        // Completions for the three shells, each knowing the subcommands.
        for file in [
            "/share/bash-completion/completions/remedy", "/share/zsh/site-functions/_remedy",
            "/share/fish/vendor_completions.d/remedy.fish",
        ] {
            let text = (try? String(contentsOfFile: top + file, encoding: .utf8)) ?? ""
            #expect(
                text.contains("rollback") && text.contains("policies"), "\(file) missing or without the subcommands")
        }
        #expect(FileManager.default.fileExists(atPath: top + "/share/doc/remedy/LICENSE"))

        // uninstall removes every file install wrote, and leaves a policy of the user's own.
        try "name: mine\n".write(toFile: top + "/share/remedy/Policies/mine.yaml", atomically: true, encoding: .utf8)
        let uninstall = try runProgram(
            make, ["-C", Self.root, "uninstall", "DESTDIR=\(destdir)", "PREFIX=\(prefix)"],
            environment: Self.cleanEnvironment)
        #expect(uninstall.status == 0, "make uninstall: \(uninstall.stdout)\n\(uninstall.stderr)")
        let left = (FileManager.default.enumerator(atPath: destdir)?.allObjects as? [String] ?? []).filter {
            var isDir: ObjCBool = false
            return FileManager.default.fileExists(atPath: destdir + "/" + $0, isDirectory: &isDir) && !isDir.boolValue
        }
        #expect(left == ["opt/remedy/share/remedy/Policies/mine.yaml"], "left after uninstall: \(left)")
    }
}
