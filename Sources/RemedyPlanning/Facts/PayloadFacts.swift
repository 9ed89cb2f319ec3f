/// Payload facts, resolved before planning (I/O), read by rules (pure).
public struct PayloadFacts: Sendable, Equatable, Codable {
    /// The drivers chosen from virtio-win, when it was given.
    public var virtio: VirtioFacts?
    /// User-supplied payload files by manifest name.
    public var files: [String: PayloadFile]

    public init(virtio: VirtioFacts? = nil, files: [String: PayloadFile] = [:]) {
        self.virtio = virtio
        self.files = files
    }
}

/// Compares dotted version strings numerically (`100.94.104.24000`).
public func compareVersions(_ a: String, _ b: String) -> Int {
    let x = a.split(separator: ".").map { Int($0) ?? 0 }, y = b.split(separator: ".").map { Int($0) ?? 0 }
    for i in 0..<max(x.count, y.count) {
        let p = i < x.count ? x[i] : 0, q = i < y.count ? y[i] : 0
        if p != q { return p < q ? -1 : 1 }
    }
    return 0
}
