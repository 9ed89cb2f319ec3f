import Foundation

/// `/`-separated paths inside the guest (`/Windows/System32/config/SYSTEM`, as the appliance names them) and inside a
/// virtio-win ISO or tree listing (`viostor/2k16/amd64/viostor.inf`). They are not paths of this host, so they are
/// not `FilePath`s: plain text, split at the last `/` (cheap on listings of ten thousand entries).
public enum GuestPath {
    /// A guest path as Windows shows it (`C:\Windows\...`).
    public static func windows(_ guest: String) -> String {
        "C:" + guest.replacingOccurrences(of: "/", with: "\\")
    }

    /// The path without its last component: `/a/b` -> `/a`, `/a` -> `/`, `a` -> ``.
    public static func parent(_ path: String) -> String {
        let p = trimmed(path)
        guard let slash = p.lastIndex(of: "/") else { return "" }
        return slash == p.startIndex ? "/" : String(p[..<slash])
    }

    /// The last component: `/a/b.inf` -> `b.inf`, `a` -> `a`.
    public static func name(_ path: String) -> String {
        let p = trimmed(path)
        guard let slash = p.lastIndex(of: "/") else { return String(p) }
        return String(p[p.index(after: slash)...])
    }

    /// The last component without its extension: `a/viostor.inf` -> `viostor`.
    public static func stem(_ path: String) -> String {
        let n = name(path)
        guard let dot = n.lastIndex(of: "."), dot != n.startIndex else { return n }
        return String(n[..<dot])
    }

    /// Trailing slashes removed (but a lone `/` kept).
    private static func trimmed(_ path: String) -> Substring {
        var p = Substring(path)
        while p.count > 1 && p.hasSuffix("/") { p = p.dropLast() }
        return p
    }
}
