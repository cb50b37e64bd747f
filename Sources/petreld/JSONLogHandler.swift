import Foundation
import Logging
import PetrelCore

/// The daemon's own log as JSON lines (`[logging] format = "json"`): one object per record
/// with `time`, `level`, `label`, `message`, `source` and the record's metadata (a request's
/// `request.id` among them), for log shippers that read JSON.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?
    /// One writer for all handlers: lines from several threads never interleave.
    static let lock = NSLock()

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let own = event.metadata { all.merge(own) { $1 } }
        var o: [String: Any] = [
            "time": PlatformClock.iso8601(millis: Int64(Date().timeIntervalSince1970 * 1000)), "level": "\(event.level)",
            "label": label, "message": "\(event.message)", "source": event.source,
        ]
        for (k, v) in all where o[k] == nil { o[k] = Self.json(v) }
        guard var line = try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        line.append(0x0A)
        Self.lock.lock()
        defer { Self.lock.unlock() }
        FileHandle.standardError.write(line)
    }

    static func json(_ v: Logger.Metadata.Value) -> Any {
        switch v {
        case .string(let s): return s
        case .stringConvertible(let c): return "\(c)"
        case .array(let a): return a.map(json)
        case .dictionary(let d): return d.mapValues(json)
        }
    }
}
