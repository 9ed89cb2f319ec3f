import Foundation
import Guestfs

/// The directory listings of the filesystem one session has mounted at `/`: each directory listed once (`ls`), and
/// names matched case-insensitively (NTFS is case-insensitive to Windows, not to the appliance). Kept while one
/// mount lasts (``reset()`` on every mount change); writes record what they create (``noteCreated(_:)``).
final class GuestDirectoryCache {
    private let appliance: Appliance
    private var g: Guestfs { appliance.guestfs }

    init(appliance: Appliance) { self.appliance = appliance }

    /// Forgets every listing (the filesystem at `/` changed).
    func reset() { directories = [:] }

    /// Lowercased guest path -> (stored path, lowercased name -> stored name), nil for a directory that does not exist.
    private var directories: [String: (path: String, names: [String: String])?] = [:]

    /// A directory's listing, from the cache or one `ls`.
    func listing(_ dir: String) -> (path: String, names: [String: String])? {
        let key = dir.lowercased()
        if let known = directories[key] { return known }
        var result: (path: String, names: [String: String])?
        if dir == "/" || dir.isEmpty {
            result = ("", [:])
        } else if let parent = listing(GuestPath.parent(dir)),
            let stored = parent.names[GuestPath.name(dir).lowercased()]
        {
            result = (parent.path + "/" + stored, [:])
        }
        if var r = result {
            let names = (try? g.ls(r.path.isEmpty ? "/" : r.path)) ?? []
            for n in names { r.names[n.lowercased()] = n }
            result = r
        }
        directories[key] = .some(result)
        return result
    }

    /// The stored spelling of an existing guest path (NTFS is case-insensitive to Windows, not to the appliance), or nil.
    func resolveExisting(_ path: String) -> String? {
        guard let dir = listing(GuestPath.parent(path)),
            let name = dir.names[GuestPath.name(path).lowercased()]
        else { return nil }
        return dir.path + "/" + name
    }

    /// A path to write: the existing directories' stored spelling, the rest as given.
    func resolveForWriting(_ path: String) -> String {
        var parts = path.split(separator: "/").map(String.init)
        var tail: [String] = []
        while !parts.isEmpty {
            if let p = resolveExisting("/" + parts.joined(separator: "/")) {
                return ([p] + tail).joined(separator: "/")
            }
            tail.insert(parts.removeLast(), at: 0)
        }
        return "/" + tail.joined(separator: "/")
    }

    /// Records a file (and its directories) created by this session in the listing cache.
    func noteCreated(_ path: String) {
        var child = path
        var dir = GuestPath.parent(path)
        while true {
            let key = dir.lowercased()
            let name = GuestPath.name(child)
            if case .some(.some(var l)) = directories[key] {
                l.names[name.lowercased()] = l.names[name.lowercased()] ?? name
                directories[key] = .some(l)
                break
            }
            directories[key] = .some((dir, [name.lowercased(): name]))
            if dir == "/" || dir.isEmpty { break }
            child = dir
            dir = GuestPath.parent(dir)
        }
    }
}
