import Foundation

/// Wall-clock time for what the platform schedules by the calendar: event age,
/// retry delays, schedule slots. Tests move it: with `PETREL_TEST_CLOCK_FILE`
/// set, the file's number (milliseconds) is added to the real time, so a test
/// can let an hour pass in a second. Operators never set it.
public struct PlatformClock: Sendable {
    public let offsetFile: String?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        offsetFile = environment["PETREL_TEST_CLOCK_FILE"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Whether a test drives this clock (loops then look at it often, since it jumps).
    public var isMoved: Bool { offsetFile != nil }

    public func nowMillis() -> Int64 {
        let real = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
        guard let offsetFile, let text = try? String(contentsOfFile: offsetFile, encoding: .utf8),
            let offset = Int64(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { return real }
        return real + offset
    }
}
