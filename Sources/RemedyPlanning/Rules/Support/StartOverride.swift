/// The start type Windows really uses for a service: `Start`, unless Windows 8
/// or later demoted a boot-start driver through `Services\<name>\StartOverride`.
///
/// Windows 8 and later keep a boot-start driver whose device was not present
/// from loading by writing `Services\<name>\StartOverride` with a DWORD value
/// (`"0"=dword:3` on real hives) while `Start` stays 0. Real Windows 8.1 and
/// 10 hives carry it on atapi, intelide, pciide, storahci, stornvme, LSI_SAS and
/// dozens more. So `Start=0` alone does not mean the driver loads at boot.
///
/// Use:
/// - add ``WindowsKeys/startOverrideRequirements(_:_:services:)`` to the
///   rule's requirements (the StartOverride keys are below the one-level
///   `Services` read every rule shares), then
/// - call ``WindowsKeys/effectiveStart(_:_:_:)`` where the rule read `Start`.
extension WindowsKeys {
    /// `ControlSet00N\Services\<name>\StartOverride`.
    static func startOverride(_ cs: String, _ name: String) -> RegistryPath {
        service(cs, name).appending("StartOverride")
    }

    /// Reads of the StartOverride keys of these services in these control sets
    /// (every control set of the image when `controlSets` is nil).
    static func startOverrideRequirements(
        _ os: OSFacts, _ controlSets: [String]? = nil, services: [String]
    ) -> [RegistryRequirement] {
        let sets = controlSets ?? os.orderedControlSets.map(\.name)
        return sets.flatMap { cs in services.map { RegistryRequirement(.system, startOverride(cs, $0), depth: 0) } }
    }

    /// The values of a service's StartOverride key that change its start type
    /// (a DWORD above `Start`), empty when nothing demotes it. The key must have
    /// been read (``startOverrideRequirements(_:_:services:)``).
    static func startOverrides(_ facts: ImageFacts, _ cs: String, _ name: String) -> [HiveValue] {
        guard let start = start(facts, cs, name), let key = facts.registry.key(.system, startOverride(cs, name)) else {
            return []
        }
        return key.values.filter { ($0.value.number ?? 0) > start }
    }

    /// The start type Windows uses for the service in this control set: its
    /// `Start`, or the highest StartOverride value above it (a demoted boot
    /// driver reads as manual, 3). nil when the service is not installed;
    /// `UInt64.max` when it has no `Start` value.
    static func effectiveStart(_ facts: ImageFacts, _ cs: String, _ name: String) -> UInt64? {
        guard let start = start(facts, cs, name) else { return nil }
        return startOverrides(facts, cs, name).compactMap(\.value.number).max().map { max($0, start) } ?? start
    }

    /// Whether the service is a boot-start driver Windows really loads at boot.
    static func loadsAtBoot(_ facts: ImageFacts, _ cs: String, _ name: String) -> Bool {
        effectiveStart(facts, cs, name) == UInt64(ServiceStart.boot)
    }

    /// The change that lets a driver made boot-start load at boot: its StartOverride
    /// key deleted when a value there would demote it (above 0), leaving the service
    /// as it is on a Windows that never demoted it. nil when nothing demotes it.
    static func liftStartOverride(_ facts: ImageFacts, _ cs: String, _ name: String) -> Change? {
        guard let key = facts.registry.key(.system, startOverride(cs, name)),
            key.values.contains(where: { ($0.value.number ?? 0) > 0 })
        else { return nil }
        return Change(op: .deleteKey, hive: .system, key: startOverride(cs, name))
    }
}
