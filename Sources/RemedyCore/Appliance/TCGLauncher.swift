import Foundation
import SystemPackage

/// Under TCG, qemu keeps the guest code it has translated in a buffer of 1 GiB by default, and an appliance that
/// runs a while fills it: after a batch of 5 images (apply with virtio-win), 1,024 MiB of qemu's 1,600 MiB resident
/// were that buffer and 338 MiB the guest's memory. libguestfs starts qemu with `-machine accel=tcg`, and qemu refuses
/// `-accel tcg,tb-size=N` beside it; so remedy hands libguestfs a launcher (`set_hv`): a shell script that starts the
/// same qemu with `-accel tcg,tb-size=N` in place of `-machine accel=tcg`, every other argument as it came, and
/// qemu's own process in its place (`exec`: the watchdogs still find it by its kernel command line).
///
/// The script lives in `/var/tmp/remedy-UID` (this user's, mode 0700, not `noexec`, checked before use) under a name that is the
/// hash of its text, written once: libguestfs caches what it learnt of qemu by the binary's path and time, so the
/// same script keeps that cache valid from one run to the next. Where the folder cannot be trusted the launcher is
/// left out and qemu keeps its default buffer.
enum TCGLauncher {
    /// The buffer remedy asks for, in MiB (`REMEDY_TCG_CODE_CACHE`; 0 keeps qemu's default).
    static let defaultMiB = 128

    /// The launcher for `qemu` with a buffer of `mib` MiB, written if needed; nil when it cannot be placed safely.
    static func path(qemu: String, mib: Int, directory: String = "/var/tmp/remedy-\(getuid())") -> String? {
        guard mib > 0, qemu.hasPrefix("/"), FileManager.default.isExecutableFile(atPath: qemu) else { return nil }
        let text = script(qemu: qemu, mib: mib)
        let digest = SHA256Hex.of(Array(text.utf8)).prefix(16)
        let file = directory + "/qemu-tcg-\(mib)-\(digest)"
        guard trustedDirectory(directory) else { return nil }
        if let existing = FileManager.default.contents(atPath: file), existing == Data(text.utf8), owned(file) {
            return file
        }
        let temp = file + ".\(getpid()).tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o700)
        guard fd >= 0 else { return nil }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == bytes.count, synced, rename(temp, file) == 0 else {
            unlink(temp)
            return nil
        }
        return file
    }

    /// The launcher's text: `-machine accel=tcg` becomes `-accel tcg,tb-size=MIB`; anything else passes unchanged.
    static func script(qemu: String, mib: Int) -> String {
        """
        #!/bin/sh
        # remedy's qemu launcher: the same qemu with a translation buffer of \(mib) MiB (see TCGLauncher.swift).
        n=$#
        while [ "$n" -gt 0 ]; do
          a=$1; shift; n=$((n - 1))
          if [ "$a" = -machine ] && [ "$n" -gt 0 ] && [ "$1" = accel=tcg ]; then
            shift; n=$((n - 1)); set -- "$@" -accel tcg,tb-size=\(mib)
          else
            set -- "$@" "$a"
          fi
        done
        exec \(FileSecurity.shQuoted(qemu)) "$@"

        """
    }

    /// This user's folder, not a link, mode 0700 (created so if missing), on a filesystem that lets programs run
    /// (a hardened host mounts `/var/tmp` `noexec`: qemu would then not start at all).
    static func trustedDirectory(_ path: String) -> Bool {
        if mkdir(path, 0o700) != 0 && errno != EEXIST { return false }
        var st = stat()
        guard lstat(path, &st) == 0 else { return false }
        return (st.st_mode & S_IFMT) == S_IFDIR && st.st_uid == getuid() && st.st_mode & 0o077 == 0
            && allowsExecution(path)
    }

    /// Whether the filesystem holding `path` lets programs run (not mounted `noexec`).
    static func allowsExecution(_ path: String) -> Bool {
        var fs = statvfs()
        let noexec: UInt = 8  // ST_NOEXEC of <sys/statvfs.h>, an enum constant Swift does not import
        return statvfs(path, &fs) == 0 && fs.f_flag & noexec == 0
    }

    private static func owned(_ file: String) -> Bool {
        var st = stat()
        guard lstat(file, &st) == 0 else { return false }
        return (st.st_mode & S_IFMT) == S_IFREG && st.st_uid == getuid() && st.st_mode & 0o022 == 0
    }
}
