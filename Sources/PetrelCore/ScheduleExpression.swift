/// An EventBridge schedule: `rate(5 minutes)` or `cron(0 12 * * ? *)`.
public enum ScheduleExpression: Sendable, Equatable, CustomStringConvertible {
    /// Every `seconds`, counted from the schedule's creation.
    case rate(amount: Int, unit: RateUnit)
    case cron(CronExpression, text: String)

    public enum RateUnit: String, Sendable {
        case minute, hour, day
        var seconds: Int64 {
            switch self {
            case .minute: 60
            case .hour: 3600
            case .day: 86_400
            }
        }
    }

    public init(parsing raw: String) throws(DomainError) {
        let s = raw.trimmingCharacters(in: .whitespaces)
        func invalid(_ why: String) -> DomainError {
            DomainError(.invalidParameter, "ScheduleExpression \(raw) is not valid: \(why). Use rate(5 minutes) or cron(0 12 * * ? *).")
        }
        guard s.hasSuffix(")") else { throw invalid("it must be rate(…) or cron(…)") }
        if s.hasPrefix("rate(") {
            let inner = s.dropFirst(5).dropLast().split(separator: " ", omittingEmptySubsequences: true)
            guard inner.count == 2 else { throw invalid("a rate is a whole number and a unit") }
            guard let n = Int(inner[0]), n >= 1, n <= 1_000_000 else { throw invalid("the rate's value must be a positive whole number") }
            let word = String(inner[1])
            let singular = word.hasSuffix("s") ? String(word.dropLast()) : word
            guard let unit = RateUnit(rawValue: singular) else { throw invalid("the unit must be minute(s), hour(s) or day(s)") }
            guard (n == 1) == (word == singular) else {
                throw invalid(
                    n == 1 ? "a value of 1 takes the singular unit (\(singular))" : "a value above 1 takes the plural unit (\(singular)s)")
            }
            self = .rate(amount: n, unit: unit)
        } else if s.hasPrefix("cron(") {
            let inner = String(s.dropFirst(5).dropLast())
            do {
                self = .cron(try CronExpression(fields: inner), text: inner.split(separator: " ").joined(separator: " "))
            } catch {
                throw invalid(error.description)
            }
        } else {
            throw invalid("it must be rate(…) or cron(…)")
        }
    }

    public var description: String {
        switch self {
        case .rate(let n, let unit): "rate(\(n) \(unit.rawValue)\(n == 1 ? "" : "s"))"
        case .cron(_, let text): "cron(\(text))"
        }
    }

    /// The first slot strictly after `after` (Unix seconds); a rate counts from `anchor`.
    public func next(after: Int64, anchor: Int64) -> Int64? {
        switch self {
        case .rate(let n, let unit):
            let period = Int64(n) * unit.seconds
            guard after >= anchor else { return anchor + period }
            return anchor + ((after - anchor) / period + 1) * period
        case .cron(let c, _):
            return c.next(after: after)
        }
    }
}

extension ScheduleExpression {
    /// The last slot strictly between `after` and `before` (Unix seconds), if any.
    public func latest(before: Int64, after: Int64, anchor: Int64) -> Int64? {
        switch self {
        case .rate(let n, let unit):
            let period = Int64(n) * unit.seconds
            guard before - 1 >= anchor + period else { return nil }
            let slot = anchor + (before - 1 - anchor) / period * period
            return slot > after ? slot : nil
        case .cron:
            // Look back through widening windows; each holds few slots of a schedule that sparse.
            for window: Int64 in [3_600, 86_400, 32 * 86_400, 367 * 86_400, 8 * 367 * 86_400] {
                var last: Int64?
                var at = next(after: max(after, before - window), anchor: anchor)
                var steps = 0
                while let t = at, t < before, steps < 100_000 {
                    last = t
                    at = next(after: t, anchor: anchor)
                    steps += 1
                }
                if let last { return last }
                if before - window <= after { return nil }
            }
            return nil
        }
    }
}
