import SystemPackage

extension FilePath {
    /// The path without its last component's extension, as text (`vm.ovf` -> `vm`, `a/b.qcow2` -> `a/b`).
    var removingExtension: String {
        var copy = self
        copy.extension = nil
        return copy.string
    }
}
