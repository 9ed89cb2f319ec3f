import Guestfs

/// What one session has mounted at `/` in the appliance: its Windows filesystem read-only (inspection, planning, the
/// proof), read-write (apply and rollback), or its EFI system partition. Sessions of a batch share the appliance and
/// take turns: each mounts its own filesystem when it works, and the appliance records whose is mounted.
final class GuestMounts {
    let appliance: Appliance
    /// The image's disk inside the appliance, e.g. `/dev/sdb`.
    let device: String
    /// The Windows filesystem, e.g. `/dev/sdb2`.
    let root: String
    let writable: Bool
    /// The guest's directory listings while one mount lasts (apply updates it as it writes).
    let directories: GuestDirectoryCache
    /// Whether anything was mounted writable (an overlay nobody wrote to is discarded, not committed).
    private(set) var wroteOverlay = false

    init(appliance: Appliance, device: String, root: String, writable: Bool) {
        self.appliance = appliance
        self.device = device
        self.root = root
        self.writable = writable
        directories = GuestDirectoryCache(appliance: appliance)
    }

    private var g: Guestfs { appliance.guestfs }

    /// Mounts the Windows filesystem at `/`, read-only, unless it already is (in either mode).
    func mountReadOnly() throws {
        guard appliance.mounted?.device != device else { return }
        try unmountAll()
        try g.mountReadOnly(root, at: "/")
        appliance.mounted = (device, false)
    }

    /// Mounts the Windows filesystem read-write (apply and rollback only).
    func remountWritable() throws {
        precondition(writable, "remountWritable on a read-only session")
        if let m = appliance.mounted, m.device == device, m.writable { return }
        try unmountAll()
        try g.mount(root, at: "/")
        appliance.mounted = (device, true)
        wroteOverlay = true
    }

    /// Mounts the EFI system partition `filesystem` at `/` instead of the Windows filesystem (apply and rollback
    /// of `esp` file changes); ``mountReadOnly()`` / ``remountWritable()`` mount Windows again.
    func mountESP(_ filesystem: String, writable: Bool) throws {
        precondition(!writable || self.writable, "a writable ESP mount on a read-only session")
        try unmountAll()
        if writable { try g.mount(filesystem, at: "/") } else { try g.mountReadOnly(filesystem, at: "/") }
    }

    /// Nothing mounted (the directory listings are forgotten with the mount).
    func unmountAll() throws {
        directories.reset()
        try g.umountAll()
        appliance.mounted = nil
    }
}
