/// The planner: a pure function from inspection facts and a policy to a plan.
public enum Planner {
    /// Everything the policy's rules need read from the hives.
    public static func requirements(policy: Policy, os: OSFacts) -> [RegistryRequirement] {
        var seen = Set<RegistryRequirement>()
        var out: [RegistryRequirement] = []
        for rule in policy.rules {
            for r in rule.requirements(for: os) where seen.insert(r).inserted { out.append(r) }
        }
        return out
    }

    public static func plan(facts: ImageFacts, policy: Policy) -> Plan {
        var actions: [Action] = []
        var findings: [Finding] = []
        findings += applicability(policy: policy, os: facts.os)
        for rule in policy.rules {
            let result = rule.evaluate(facts)
            actions += result.actions.filter { !$0.changes.isEmpty }
            findings += result.findings
        }
        findings.sort { ($0.severity, $0.id) < ($1.severity, $1.id) }
        return Plan(image: facts.image, policy: policy.reference, os: facts.os, actions: actions, findings: findings)
    }

    /// Findings for an OS version or architecture the policy does not accept.
    static func applicability(policy: Policy, os: OSFacts) -> [Finding] {
        var out: [Finding] = []
        if !policy.versions.isEmpty && !policy.versions.contains(os.version) {
            out.append(Finding(id: "os-version-unsupported", rule: "policy", severity: .blocker,
                               message: "\(os.product) (Windows NT \(os.version)) is not a version policy \(policy.name) supports",
                               measured: os.version, requirement: policy.versions.joined(separator: ", ")))
        }
        if !policy.architectures.isEmpty && !policy.architectures.contains(os.arch) {
            out.append(Finding(id: "os-arch-unsupported", rule: "policy", severity: .blocker,
                               message: "architecture \(os.arch) is not supported by policy \(policy.name)",
                               measured: os.arch, requirement: policy.architectures.joined(separator: ", ")))
        }
        return out
    }
}
