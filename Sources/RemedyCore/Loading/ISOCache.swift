import Foundation
import Synchronization
import SystemPackage

/// What remedy has read from virtio-win ISOs in this process: each ISO's listing and a local copy of the files
/// taken from it, keyed by the ISO's path, size and modification time. One lock serialises reading an ISO, so
/// two appliances of a batch never fetch the same directory at once. The copies are removed when the process ends.
final class ISOCache: Sendable {
    static let shared = ISOCache()

    /// One ISO's listing and local copies (used inside ``with(iso:_:)``, which holds the cache's lock).
    final class Entry: Sendable {
        let root: String
        private let state = Mutex<(listing: [String]?, regular: Set<String>)>((nil, []))
        init(root: String) { self.root = root }

        var listing: [String]? {
            get { state.withLock { $0.listing } }
            set { state.withLock { $0.listing = newValue } }
        }

        /// Paths checked to be regular files in the ISO.
        var regular: Set<String> {
            get { state.withLock { $0.regular } }
            set { state.withLock { $0.regular = newValue } }
        }
    }

    /// The entries, keyed by path, size and modification time; the lock is held while an ISO is read.
    private let entries = Mutex<[String: Entry]>([:])
    private static let directory: String? = {
        var template = Array((NSTemporaryDirectory() + "/remedy-virtio-win.XXXXXX").utf8CString)
        guard let p = mkdtemp(&template) else { return nil }
        atexit { ISOCache.removeDirectory() }
        return String(cString: p)
    }()

    static func removeDirectory() {
        if let d = directory { try? FileManager.default.removeItem(atPath: d) }
    }

    func with<T>(iso path: String, _ body: (Entry) throws -> T) throws -> T {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        let size = (attributes?[.size] as? NSNumber)?.int64Value ?? -1
        let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        let key = "\(URL(fileURLWithPath: path).standardizedFileURL.path)|\(size)|\(modified)"
        return try entries.withLock { entries in
            let entry: Entry
            if let known = entries[key] {
                entry = known
            } else {
                guard let base = Self.directory else {
                    throw RemedyError(
                        .hostFailed, "cannot create a temporary directory for the virtio-win ISO: \(Errno.last)")
                }
                entry = Entry(root: "\(base)/\(entries.count)")
                try FileManager.default.createDirectory(atPath: entry.root, withIntermediateDirectories: true)
                entries[key] = entry
            }
            return try body(entry)
        }
    }
}
