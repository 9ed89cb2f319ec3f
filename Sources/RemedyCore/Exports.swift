// The planner's types (facts, plan, policy, rules, renderers) are part of the engine's API: a user of RemedyCore
// sees them without importing RemedyPlanning.
@_exported import RemedyPlanning
