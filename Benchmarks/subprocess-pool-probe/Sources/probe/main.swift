// A probe, not part of remedy: can a synchronous engine run its host programs with swift-subprocess?
//
// remedy's engine is synchronous (a libguestfs call blocks its thread), and its callers may be on threads of Swift's
// cooperative pool (Swift Testing runs synchronous tests there; a library user may call it from a Task). A
// synchronous wrapper must block its caller until the async `run` finishes. This probe gives that `run` a task
// executor of its own (a dedicated thread, `Task(executorPreference:)`), then calls the wrapper from N tasks at once,
// each blocking one pool thread, 20 times each.
//
//   swift run -c release probe N      (N = 1 ... the number of cores and more)
//
// Seen on 2 cores, Swift 6.3.1, swift-subprocess 1.0.2: N = 1 finishes; N = 2 (every pool thread blocked) never
// does: parts of `run` still need the global pool (its cleanup handler, for one, starts an unstructured `Task`, which
// does not inherit the executor preference). The probe stops itself after 30 s and says which.
import Dispatch
import Foundation
import Subprocess
import Synchronization
import SystemPackage

/// A task executor on one dedicated thread.
final class ThreadExecutor: TaskExecutor {
    private let jobs = Mutex<[UnownedJob]>([])
    private let wake = DispatchSemaphore(value: 0)

    init() {
        let thread = Thread { [self] in loop() }
        thread.start()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        jobs.withLock { $0.append(job) }
        wake.signal()
    }

    private func loop() {
        while true {
            wake.wait()
            let job = jobs.withLock { $0.removeFirst() }
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}

let executor = ThreadExecutor()

/// What a synchronous `HostTool.run` on swift-subprocess would be.
func runBlocking(_ executable: String, _ arguments: [String]) -> String {
    let result = Mutex<String?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task(executorPreference: executor) {
        do {
            let r = try await Subprocess.run(
                .path(FilePath(executable)), arguments: Arguments(arguments), output: .string(limit: 1 << 20))
            result.withLock { $0 = "\(r.terminationStatus) \(r.standardOutput ?? "")" }
        } catch {
            result.withLock { $0 = "error \(error)" }
        }
        done.signal()
    }
    done.wait()
    return result.withLock { $0 ?? "" }
}

func say(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

let tasks = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 1 : 1
say("\(ProcessInfo.processInfo.activeProcessorCount) cores; \(tasks) task(s) blocking a pool thread each")
let finished = DispatchSemaphore(value: 0)
for i in 0..<tasks {
    Task.detached {
        for k in 0..<20 { _ = runBlocking("/bin/echo", ["task \(i) run \(k)"]) }
        finished.signal()
    }
}
for _ in 0..<tasks {
    guard finished.wait(timeout: .now() + 30) == .success else {
        say("deadlocked: the subprocess runs did not finish in 30 s")
        exit(1)
    }
}
say("finished: \(tasks * 20) runs")
