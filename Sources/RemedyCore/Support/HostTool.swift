import Foundation
import Synchronization
import SystemPackage

/// The one way remedy runs a host program (qemu-img, qemu-io, tar, sha256sum): on files remedy owns, never on the
/// untrusted image's contents, with stdin closed, stderr kept for the error message and an optional deadline.
///
/// Not swift-subprocess: its API is `async`, and remedy's engine is synchronous on purpose (libguestfs handles block
/// the calling thread). Waiting for an async child on a thread of Swift's cooperative pool, which has one thread per
/// core (two here), can starve the pool that the child's own I/O needs; the tests run on that pool.
enum HostTool {
    /// Where the program's standard output goes.
    enum Output { case capture, discard, standardError }

    struct Result {
        var status: Int32
        var stdout: Data
        var stderr: String
        /// Killed by the deadline.
        var timedOut: Bool
    }

    /// Runs the program and returns what it did; throws only when it cannot be started.
    static func execute(
        _ executable: String, _ arguments: [String], output: Output = .capture,
        timeout: TimeInterval? = nil
    ) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        p.standardInput = FileHandle.nullDevice
        let out = Pipe(), err = Pipe()
        switch output {
        case .capture: p.standardOutput = out
        case .discard: p.standardOutput = FileHandle.nullDevice
        case .standardError: p.standardOutput = FileHandle.standardError
        }
        p.standardError = err
        try p.run()
        let killed = Mutex(false)
        let pid = p.processIdentifier
        let timer = DispatchWorkItem {
            killed.withLock { $0 = true }
            kill(pid, SIGKILL)
        }
        if let timeout { DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: timer) }
        // stderr is drained on its own thread so that a chatty program never blocks on a full pipe.
        let errData = Mutex(Data())
        let drained = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let d = err.fileHandleForReading.readDataToEndOfFile()
            errData.withLock { $0 = d }
            drained.signal()
        }
        let stdout = output == .capture ? out.fileHandleForReading.readDataToEndOfFile() : Data()
        drained.wait()
        p.waitUntilExit()
        timer.cancel()
        return Result(
            status: p.terminationStatus, stdout: stdout,
            stderr: String(decoding: errData.withLock { $0 }, as: UTF8.self).trimmingCharacters(
                in: .whitespacesAndNewlines),
            timedOut: killed.withLock { $0 })
    }

    /// Runs the program and returns its standard output; a failure is an error naming the image, with `failure` as its
    /// code and what the program said on stderr.
    @discardableResult
    static func run(
        _ executable: String, _ arguments: [String], image: String, output: Output = .capture,
        failure: RemedyError.Code = .writeFailed
    ) throws -> Data {
        let name = (FilePath(executable).lastComponent?.string ?? "")
        let result: Result
        do {
            result = try execute(executable, arguments, output: output)
        } catch {
            throw RemedyError(.hostFailed, image: image, "cannot run \(name): \(error)", cause: error)
        }
        guard result.status == 0 else {
            let said = result.stderr.isEmpty ? "exit \(result.status)" : result.stderr
            throw RemedyError(failure, image: image, "\(name) \(arguments.first ?? "") failed: \(said)")
        }
        return result.stdout
    }
}
