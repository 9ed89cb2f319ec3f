import Logging

/// remedy's notices as scripts read them on stderr: one `remedy: <message>` line each. The engine reports what the
/// user should know (a KVM fallback, an interrupted commit being finished) through the swift-log `Logger` in
/// `ApplianceOptions`; this handler is the CLI's end of it: it prints the message alone (no level, label, time or
/// metadata, which would change the line scripts match) for `notice` and above.
struct NoticeHandler: LogHandler {
    var logLevel: Logger.Level = .notice
    var metadata: Logger.Metadata = [:]
    let write: @Sendable (String) -> Void

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        write(event.message.description)
    }
}

extension Logger {
    /// A logger whose `notice` (and above) messages go to `write`, one message a call.
    static func notices(_ write: @escaping @Sendable (String) -> Void) -> Logger {
        Logger(label: "remedy") { _ in NoticeHandler(write: write) }
    }
}
