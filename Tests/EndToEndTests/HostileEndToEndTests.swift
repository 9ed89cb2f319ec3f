import Foundation
import Guestfs
import RemedyFixtures
import Testing

@testable import RemedyCore
@testable import RemedyPlanning

/// Issue 12 with the real appliance: a Rock Ridge symbolic link in a virtio-win ISO and an appliance call that
/// hangs, in one launch. (A failed inspection that must not leave the customer's hives in the temporary directory
/// is `EndToEndTests.truncatedHiveIsRefusedAndTheImageIsUntouched`.)
// The ISO test reads the image the driver tests refuse to write (its suite serializes them).
extension DriverEndToEndTests {
    @Test func anISOSymlinkIsRefusedAndAHangingCallIsStopped() throws {
        let f = try Fixtures.get()
        let dir = f.dir + "/hostile-iso"
        try? FileManager.default.removeItem(atPath: dir)
        try FakeVirtioWin.write(at: dir + "/tree", layout: .isoTree, osDirectories: ["2k16"])
        let marker = "HOST-SECRET-\(UUID().uuidString)"
        let secret = dir + "/secret.txt"
        #expect(FileManager.default.createFile(atPath: secret, contents: Data(marker.utf8)))
        let victim = "viostor/2k16/amd64/viostor.sys"
        try FileManager.default.removeItem(atPath: dir + "/tree/" + victim)
        try FileManager.default.createSymbolicLink(atPath: dir + "/tree/" + victim, withDestinationPath: secret)
        let iso = dir + "/virtio-win-symlink.iso"
        // genisoimage -R: the link is kept as a Rock Ridge symlink
        try FakeVirtioWin.makeISO(from: dir + "/tree", to: iso)

        let session = try ImageSession.open(
            image: f.driversWrongOS, writable: false, options: Fixtures.options,
            inputs: PayloadInputs(virtioWin: iso))
        defer { session.close() }
        // The ISO really holds a symbolic link (not a copy of the file): checked through libguestfs directly.
        let isoDevice = try #require(session.isoDevice)
        try session.g.umountAll()
        try session.g.mountReadOnly(isoDevice, at: "/")
        #expect(
            try session.g.lstatModes("/viostor/2k16/amd64", ["viostor.sys"]).first.map { $0 & 0o170000 } == 0o120000)
        try session.g.umountAll()
        session.appliance.mounted = nil

        let error = #expect(throws: RemedyError.self) {
            _ = try session.plan(policy: try PolicyLoader.load("openstack-kvm"))
        }
        #expect(error?.code == .virtioWinInvalid)
        #expect(
            error?.message.contains(victim) == true && error?.message.contains("symbolic link") == true,
            "\(error?.message ?? "")")
        #expect(error.map { !"\($0)".contains(marker) } ?? true)
        // Nothing of the host file was extracted, hashed or kept: no local copy holds the marker.
        let cached = try ISOCache.shared.with(iso: iso) { $0.root }
        let copies = (FileManager.default.enumerator(atPath: cached)?.allObjects as? [String]) ?? []
        for rel in copies {
            let data = (try? HostFile.read(cached + "/" + rel, followLinks: false, limit: 1 << 20)) ?? []
            #expect(!String(decoding: data, as: UTF8.self).contains(marker), "\(rel) holds the host file")
        }

        // A call that hangs (here: the appliance's sleep) is stopped at its deadline and fails as a timeout; the
        // appliance is gone, so every later call fails at once with the same cause.
        session.appliance.callTimeout = 3
        let started = Date()
        let hang = #expect(throws: GuestfsError.self) { try session.g.sleep(600) }
        #expect(hang?.timedOut == true, "\(String(describing: hang))")
        #expect(Date().timeIntervalSince(started) < 300, "the deadline did not stop the call")
        let after = #expect(throws: (any Error).self) {
            _ = try session.fileFacts([FileRequirement("/Windows/win.ini")])
        }
        // As the commands and the batch report it.
        #expect(
            after.map { RemedyError.wrap($0, image: f.driversWrongOS).code } == .applianceTimeout,
            "\(String(describing: after))")
    }
}
