import Foundation
import Guestfs
import SystemPackage

/// What one session injects: the user's inputs (virtio-win, payload files), read once into payload facts. The
/// virtio-win drivers for this Windows come from a host tree, or from the ISO attached to the appliance (mounted
/// read-only at `/` while something is still missing; its listing and the files taken from it are shared by every
/// session of the process through ``ISOCache``).
final class SessionPayloads {
    let inputs: PayloadInputs
    /// The virtio-win ISO's device in the appliance, when `--virtio-win` is an ISO.
    let isoDevice: String?
    /// Payload name -> local directory its `source` paths are relative to.
    private(set) var roots: [String: String] = [:]
    private var resolved: PayloadFacts?
    /// INF names (without `.inf`) of the virtio-win drivers to read, or nil for all (set from the policy).
    private var drivers: Set<String>?
    /// The programs beside the drivers to read from virtio-win (guest agent MSI, balloon service; set from the policy).
    private var tools: Set<VirtioWin.Tool> = []

    init(inputs: PayloadInputs, isoDevice: String?) {
        self.inputs = inputs
        self.isoDevice = isoDevice
    }

    /// What a policy takes from virtio-win: the INFs of the drivers its `virtio-drivers` rule injects (none
    /// without the rule: no INF is fetched or parsed), and the programs its `guest-agent` rule installs (none without it).
    static func virtioSelection(_ policy: Policy) -> (drivers: Set<String>, tools: Set<VirtioWin.Tool>) {
        (
            policy.rule(VirtioDriversRule.self).map { Set($0.drivers) } ?? [],
            policy.rule(GuestAgentRule.self)?.tools ?? []
        )
    }

    /// Chooses what to read from virtio-win for the policy, unless the inputs were read already.
    func select(for policy: Policy) {
        if resolved == nil { (drivers, tools) = Self.virtioSelection(policy) }
    }

    /// The payload facts, read on the first call.
    func resolve(os: OSFacts, appliance: Appliance, image: String, workDirectory: String) throws -> PayloadFacts {
        if let done = resolved { return done }
        var facts = PayloadFacts()
        do {
            facts.files = try PayloadResolver.files(inputs)
        } catch let e as RemedyError {
            throw e.with(image: image)
        }
        for (name, path) in inputs.files {
            roots[name] = FilePath(URL(fileURLWithPath: path).standardizedFileURL.path).removingLastComponent().string
        }
        if let source = inputs.virtioWin {
            if let iso = isoDevice {
                let g = appliance.guestfs
                let reader = ISOReader(g: g, image: image, workDirectory: workDirectory)
                facts.virtio = try ISOCache.shared.with(iso: source) { entry in
                    roots["virtio-win"] = entry.root
                    var mounted = false
                    func mount() throws {
                        guard !mounted else { return }
                        try g.umountAll()
                        appliance.mounted = nil
                        do {
                            try g.mountReadOnly(iso, at: "/")
                        } catch let e as GuestfsError {
                            throw RemedyError(
                                .virtioWinInvalid, image: image,
                                "the virtio-win ISO \(source) cannot be mounted: \(e.message)", cause: e)
                        }
                        mounted = true
                    }
                    defer { if mounted { try? g.umountAll() } }
                    return try PayloadResolver.virtio(
                        source: source, kind: "iso", os: os, drivers: drivers, tools: tools,
                        list: {
                            if let known = entry.listing { return known }
                            try mount()
                            entry.listing = ISOReader.leaves(try g.find("/"))
                            return entry.listing!
                        },
                        regular: { paths in
                            let unknown = paths.filter { !entry.regular.contains($0) }
                            guard !unknown.isEmpty else { return }
                            try mount()
                            try reader.requireRegular(unknown, source: source)
                            entry.regular.formUnion(unknown)
                        },
                        fetch: { paths in
                            guard !paths.isEmpty else { return }
                            try mount()
                            try reader.fetch(paths, into: entry.root)
                        }, cache: entry.root, image: image)
                }
            } else {
                roots["virtio-win"] = URL(fileURLWithPath: source).standardizedFileURL.path
                facts.virtio = try PayloadResolver.tree(source, os: os, drivers: drivers, tools: tools, image: image)
            }
        }
        resolved = facts
        return facts
    }

    /// The local file a plan's `source` names.
    func localSource(_ source: String) -> String? {
        guard let colon = source.firstIndex(of: ":") else { return nil }
        guard let root = roots[String(source[..<colon])] else { return nil }
        return root + "/" + source[source.index(after: colon)...]
    }
}
