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

extension PlatformClock {
    /// `2026-12-07T11:48:01.123Z`: how the AWS documents this platform writes (invocation
    /// records, SNS notifications, function URL configurations) spell a time.
    public static func iso8601(millis: Int64) -> String { iso8601(Date(timeIntervalSince1970: Double(millis) / 1000)) }

    public static func iso8601(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: date)
    }
}
