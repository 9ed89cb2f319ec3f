import Foundation
import Guestfs
import Synchronization
import SystemPackage

/// A developer hook for the crash and failure tests: `REMEDY_FAULT` names points of apply where remedy dies or fails
/// on purpose. Unset (the only setting users have), it does nothing. Comma-separated entries:
///
/// - `kill:<point>` / `kill:<point>@<n>`: at the point (its n-th occurrence in this process, 1 by default) remedy
///   kills the appliance's qemu and itself with SIGKILL, as a power cut or the OOM killer would.
/// - `fail:<point>`: the step fails as a write error would (`write-failed`).
/// - `corrupt:<point>`: the read-back at the point sees other bytes (`verify-failed`).
/// - `hang:<point>:<image file name>`: at the point, every time for that image (as a hostile image would), an
///   appliance call hangs (the appliance's `sleep 600`): the per-call deadline (`REMEDY_CALL_TIMEOUT`) must stop it.
///   Points: `plan` (the start of planning, after inspection).
///
/// Points: `launch` (appliance up), `after-file-writes`, `after-hive-write` (after each hive is renamed into place),
/// `before-record`, `before-shutdown`, `before-marker`, `mid-commit` (the marker is written and part of the image is
/// overwritten with other bytes, a torn commit), `after-commit`; for `fail:`/`corrupt:` also `hive-upload`, `record`.
public enum Fault {
    private static let seen = Mutex<[String: Int]>([:])
    /// The qemu processes to take along when remedy kills itself.
    private static let appliances = Mutex<Set<Int32>>([])

    static let spec: [(action: String, point: String, n: Int, image: String?)] = {
        guard let text = ProcessInfo.processInfo.environment["REMEDY_FAULT"], !text.isEmpty else { return [] }
        return text.split(separator: ",").compactMap { entry in
            let parts = entry.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { return nil }
            if parts[0] == "hang" {
                let at = parts[1].split(separator: ":", maxSplits: 1).map(String.init)
                guard at.count == 2 else { return nil }
                return (parts[0], at[0], 0, at[1])
            }
            let at = parts[1].split(separator: "@").map(String.init)
            return (parts[0], at[0], at.count > 1 ? Int(at[1]) ?? 1 : 1, nil)
        }
    }()

    static var enabled: Bool { !spec.isEmpty }

    static func register(appliance pid: Int32) {
        guard enabled, pid > 0 else { return }
        appliances.withLock { _ = $0.insert(pid) }
    }

    static func unregister(appliance pid: Int32) {
        guard enabled else { return }
        appliances.withLock { _ = $0.remove(pid) }
    }

    /// Counts the point and returns the action asked for at this occurrence, if any.
    static func hit(_ point: String) -> String? {
        guard enabled else { return nil }
        let n = seen.withLock { seen in
            seen[point, default: 0] += 1
            return seen[point]!
        }
        return spec.first { $0.point == point && $0.n == n && $0.image == nil }?.action
    }

    /// A point where a hostile image could make an appliance call hang (`hang:<point>:<image file name>`): the
    /// call is made, under the call deadline like every other.
    static func hang(_ point: String, image: String, guestfs g: Guestfs) throws {
        guard enabled,
            spec.contains(where: {
                $0.action == "hang" && $0.point == point && $0.image == (FilePath(image).lastComponent?.string ?? "")
            })
        else { return }
        try g.sleep(600)
    }

    /// A point of apply: dies here when asked to (`kill:`), throws a write failure (`fail:`); `corrupt:` is returned
    /// as true for the caller to act on.
    @discardableResult
    static func point(_ point: String, image: String? = nil) throws -> Bool {
        switch hit(point) {
        case "kill"?: die()
        case "fail"?: throw RemedyError(.writeFailed, image: image, "injected fault at \(point) (REMEDY_FAULT)")
        case "corrupt"?: return true
        default: return false
        }
    }

    static func die() -> Never {
        let pids = appliances.withLock { $0 }
        // Only processes that are still a qemu (an appliance shut down earlier may have left its pid to another).
        for p in pids
        where String(decoding: FileManager.default.contents(atPath: "/proc/\(p)/cmdline") ?? Data(), as: UTF8.self)
            .contains("qemu")
        {
            kill(p, SIGKILL)
        }
        kill(getpid(), SIGKILL)
        while true { pause() }
    }
}
