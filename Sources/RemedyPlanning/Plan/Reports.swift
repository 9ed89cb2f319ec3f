import Foundation

/// What apply did: the plan it executed (equal to what `remedy plan` shows for
/// the same image and policy), where the original hives were kept, and the
/// record left in the image.
public struct ApplyReport: Sendable, Equatable, Codable {
    public static let schemaID = "remedy.apply/1"
    public var schema: String = ApplyReport.schemaID
    public var runID: String
    public var remedyVersion: String
    public var startedAt: Date
    public var plan: Plan
    /// Hive -> guest path of the untouched original, kept in the image.
    public var backups: [String: String]
    /// Guest path of the modification record, or nil when nothing was changed.
    public var record: String?
    public var acceleration: String
    /// Guest paths of files remedy added to the image (removed by rollback).
    public var injected: [String] = []
    /// Transaction logs of recovered hives moved into the backup: original guest path -> where it is now.
    public var movedLogs: [String: String] = [:]
    /// Files remedy replaced: guest path -> the copy of the original kept in the backup.
    public var fileBackups: [String: String] = [:]

    public init(
        runID: String, remedyVersion: String, startedAt: Date, plan: Plan, backups: [String: String], record: String?,
        acceleration: String, injected: [String] = []
    ) {
        self.runID = runID
        self.remedyVersion = remedyVersion
        self.startedAt = startedAt
        self.plan = plan
        self.backups = backups
        self.record = record
        self.acceleration = acceleration
        self.injected = injected
    }

    private enum CodingKeys: String, CodingKey {
        case schema, runID, remedyVersion, startedAt, plan, backups, record, acceleration, injected, movedLogs,
            fileBackups
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schema = try c.decode(String.self, forKey: .schema)
        runID = try c.decode(String.self, forKey: .runID)
        remedyVersion = try c.decode(String.self, forKey: .remedyVersion)
        startedAt = try c.decode(Date.self, forKey: .startedAt)
        plan = try c.decode(Plan.self, forKey: .plan)
        backups = try c.decode([String: String].self, forKey: .backups)
        record = try c.decodeIfPresent(String.self, forKey: .record)
        acceleration = try c.decode(String.self, forKey: .acceleration)
        injected = try c.decodeIfPresent([String].self, forKey: .injected) ?? []
        movedLogs = try c.decodeIfPresent([String: String].self, forKey: .movedLogs) ?? [:]
        fileBackups = try c.decodeIfPresent([String: String].self, forKey: .fileBackups) ?? [:]
    }
}

/// What `remedy rollback` did (or, with a dry run, would do).
public struct RollbackReport: Sendable, Equatable, Codable {
    public static let schemaID = "remedy.rollback/1"
    public var schema: String = RollbackReport.schemaID
    public var image: String
    public var dryRun: Bool
    /// The apply runs undone, oldest first.
    public var runs: [String]
    /// Hive -> the backup it is restored from (the oldest: the hive as it was before remedy first touched it).
    public var restored: [String: String]
    /// Guest paths removed: files remedy injected, then remedy's own directory.
    public var removed: [String]
    /// Files remedy had replaced -> the copy of the original they are restored from.
    public var restoredFiles: [String: String] = [:]

    package init(
        schema: String = RollbackReport.schemaID, image: String, dryRun: Bool, runs: [String],
        restored: [String: String], removed: [String], restoredFiles: [String: String] = [:]
    ) {
        self.schema = schema
        self.image = image
        self.dryRun = dryRun
        self.runs = runs
        self.restored = restored
        self.removed = removed
        self.restoredFiles = restoredFiles
    }
}
