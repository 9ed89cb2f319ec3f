/// The planner: a pure function from inspection facts and a policy to a plan.
///
/// Rules run in policy order, each seeing the registry as the rules before
/// it will have left it, so two rules touching the same value chain
/// correctly (the later one's `before` is the earlier one's `after`). Then
/// every rule runs once more on the final state: a rule that still wants a
/// change there disagrees with another rule, which the plan reports instead
/// of writing an image that the next plan would change again. Image
/// properties come from that final pass: they describe the image as apply
/// will leave it.
public enum Planner {
    /// Everything the policy's rules need read from the hives. Requests for
    /// the same key are merged, keeping the deepest.
    public static func requirements(
        policy: Policy, os: OSFacts, payloads: PayloadFacts = PayloadFacts()
    ) -> [RegistryRequirement] {
        var depth: [HiveName: [RegistryPath: Int]] = [:]
        var order: [(HiveName, RegistryPath)] = []
        for rule in policy.rules {
            for r in rule.requirements(for: os, payloads: payloads) {
                if let d = depth[r.hive]?[r.path] {
                    depth[r.hive]![r.path] = max(d, r.depth)
                } else {
                    depth[r.hive, default: [:]][r.path] = r.depth
                    order.append((r.hive, r.path))
                }
            }
        }
        return order.map { RegistryRequirement($0.0, $0.1, depth: depth[$0.0]![$0.1]!) }
    }

    /// Every file the policy's rules need looked at, once each (text wins over checksum only).
    public static func fileRequirements(policy: Policy, facts: ImageFacts) -> [FileRequirement] {
        var out: [FileRequirement] = []
        var index: [String: Int] = [:]
        for rule in policy.rules {
            for r in rule.fileRequirements(for: facts) {
                let k = FileSnapshot.key(r.path)
                if let i = index[k] {
                    out[i].text = out[i].text || r.text
                } else {
                    index[k] = out.count
                    out.append(r)
                }
            }
        }
        return out
    }

    public static func plan(facts: ImageFacts, policy: Policy) -> Plan {
        var actions: [Action] = []
        var findings: [Finding] = applicability(policy: policy, os: facts.os) + integrity(facts)
        var state = facts
        for rule in policy.rules where !rule.describesResult {
            let result = rule.evaluate(state)
            let mine = result.actions.filter { !$0.isEmpty }
            actions += mine
            findings += result.findings
            state.registry = state.registry.applying(mine.flatMap(\.changes))
            for f in mine.flatMap(\.files) {
                state.files.apply(f)
                state.volume.esp?.apply(f)
            }
        }
        var properties: [String: String] = [:]
        var unsettled: [String] = []
        for rule in policy.rules {
            let again = rule.evaluate(state)
            if again.actions.contains(where: { !$0.isEmpty }) { unsettled.append(rule.id) }
            properties.merge(again.properties) { _, new in new }
            if rule.describesResult { findings += again.findings }
        }
        if !unsettled.isEmpty {
            findings.append(
                Finding(
                    id: "policy-conflict", rule: "policy", severity: .blocker,
                    message: "rules \(unsettled.joined(separator: ", ")) would change the image again after this plan: "
                        + "two rules of policy \(policy.name) want different values; fix the policy before applying",
                    measured: unsettled.joined(separator: ", "), requirement: "every rule settled after one apply"))
        }
        findings.sort { ($0.severity, $0.id.rawValue, $0.message) < ($1.severity, $1.id.rawValue, $1.message) }
        return Plan(
            image: facts.image, policy: policy.reference, os: facts.os, actions: actions, findings: findings,
            properties: properties)
    }

    /// Findings about the state Windows left the image in, whatever the policy.
    static func integrity(_ facts: ImageFacts) -> [Finding] {
        var out: [Finding] = []
        for h in facts.hives where h.dirty {
            out.append(
                Finding(
                    id: "hive-recovered", rule: "integrity", severity: .info,
                    message:
                        "the \(h.hive.rawValue) hive was not cleanly closed (sequence \(h.primarySequence)/\(h.secondarySequence)"
                        + (h.checksumValid ? "" : ", bad checksum")
                        + "): remedy replayed \(h.replayed.joined(separator: "; ")) before planning; "
                        + "apply writes the recovered hive and moves its logs into remedy's backup",
                    measured: "dirty", requirement: "clean hive"))
        }
        if facts.volume.hibernated {
            out.append(
                Finding(
                    id: .hibernated, rule: "integrity", severity: .blocker,
                    message:
                        "Windows was hibernated or shut down with Fast Startup (hiberfil.sys holds a hibernation image): its volume cannot be "
                        + "edited safely and apply refuses; boot the VM, then shut it down fully (shutdown /s /t 0) or turn hibernation off "
                        + "(powercfg /h off), and export it again",
                    measured: "hibernated", requirement: "a clean shutdown"))
        }
        if !facts.volume.encrypted.isEmpty {
            out.append(
                Finding(
                    id: "encrypted-volume", rule: "integrity", severity: .blocker,
                    message:
                        "BitLocker-encrypted volumes on the disk (\(facts.volume.encrypted.joined(separator: ", "))): the cloud rejects encrypted "
                        + "images, and remedy never writes them; decrypt them in Windows (manage-bde -off) and export again",
                    measured: facts.volume.encrypted.joined(separator: ", "), requirement: "no encrypted volume"))
        }
        return out
    }

    /// Findings for an OS version or architecture the policy does not accept.
    static func applicability(policy: Policy, os: OSFacts) -> [Finding] {
        var out: [Finding] = []
        if !policy.versions.isEmpty && !policy.versions.contains(os.version) {
            out.append(
                Finding(
                    id: "os-version-unsupported", rule: "policy", severity: .blocker,
                    message: "\(os.product) (Windows NT \(os.version)) is not a version policy \(policy.name) supports",
                    measured: os.version, requirement: policy.versions.joined(separator: ", ")))
        }
        if !policy.architectures.isEmpty && !policy.architectures.contains(os.arch.rawValue) {
            out.append(
                Finding(
                    id: "os-arch-unsupported", rule: "policy", severity: .blocker,
                    message: "architecture \(os.arch) is not supported by policy \(policy.name)",
                    measured: os.arch.rawValue, requirement: policy.architectures.joined(separator: ", ")))
        }
        return out
    }
}
