import Foundation

/// Guest paths (`/Windows/System32/...`, as the appliance names them) as Windows shows them.
public enum GuestPath {
    /// A guest path as Windows shows it (`C:\Windows\...`).
    public static func windows(_ guest: String) -> String {
        "C:" + guest.replacingOccurrences(of: "/", with: "\\")
    }
}
