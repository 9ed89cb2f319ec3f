import Guestfs

/// The files rules asked about, read in the Windows filesystem (mounted read-only): one listing per directory, then
/// a checksum (and the text, when asked) of each file that exists.
enum GuestFileReader {
    static func snapshot(_ requirements: [FileRequirement], mounts: GuestMounts, image: String) throws -> FileSnapshot {
        var snapshot = FileSnapshot()
        guard !requirements.isEmpty else { return snapshot }
        let g = mounts.appliance.guestfs
        try mounts.mountReadOnly()
        mounts.directories.reset()
        for r in requirements {
            let key = FileSnapshot.key(r.path)
            guard let path = mounts.directories.resolveExisting(r.path), (try? g.isFile(path)) == true else {
                snapshot.files[key] = .some(nil)
                continue
            }
            do {
                var file = GuestFile(path: path, size: try g.fileSize(path), sha256: try g.checksum("sha256", path))
                if r.text {
                    let (text, encoding) = TextEncoding.decode(try g.readFile(path))
                    file.text = text
                    file.encoding = encoding
                }
                snapshot.files[key] = .some(file)
            } catch let e as GuestfsError {
                throw RemedyError(
                    .imageUnreadable, image: image, "cannot read \(GuestPath.windows(path)): \(e.message)", cause: e)
            }
        }
        return snapshot
    }
}
