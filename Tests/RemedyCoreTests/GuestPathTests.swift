import Foundation
import RemedyCore
import Testing

/// Guest and ISO paths are split as text; Foundation's NSString path functions, which remedy used before, are the
/// oracle for the same inputs.
@Suite struct GuestPathTests {
    static let samples = [
        "/Windows/System32/config/SYSTEM", "/Windows", "/", "viostor/2k16/amd64/viostor.inf", "viostor.inf", "a/b/",
        "/Windows/System32/drivers/", "guest-agent/qemu-ga-x86_64.msi", "", "NetKVM/w10/amd64/netkvm.cat",
    ]

    @Test(arguments: samples) func parentAndNameAgreeWithFoundation(path: String) {
        #expect(GuestPath.parent(path) == (path as NSString).deletingLastPathComponent, "\(path)")
        if path != "/" {  // NSString names the root "/"; a guest path never ends there
            #expect(GuestPath.name(path) == (path as NSString).lastPathComponent, "\(path)")
        }
    }

    @Test func stemDropsTheLastExtensionOnly() {
        #expect(GuestPath.stem("viostor/2k16/amd64/viostor.inf") == "viostor")
        #expect(GuestPath.stem("a/b.tar.gz") == "b.tar")
        #expect(GuestPath.stem("a/.hidden") == ".hidden")
        #expect(GuestPath.stem("README") == "README")
    }
}
