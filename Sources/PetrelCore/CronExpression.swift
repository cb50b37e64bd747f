/// EventBridge's `cron(Minutes Hours Day-of-month Month Day-of-week Year)`, in UTC.
///
/// Fields take `*`, lists (`,`), ranges (`-`, wrapping for months and weekdays)
/// and steps (`/`); months and weekdays also take names (`JAN`, `MON`; Sunday
/// is 1). Exactly one of the two day fields is `?`. Day-of-month also takes `L`
/// (last day), `LW` (last weekday) and `15W` (the weekday nearest the 15th);
/// day-of-week takes `L` (Saturday), `5L` (last Thursday) and `3#2` (second
/// Tuesday). Years run 1970–2199.
public struct CronExpression: Sendable, Equatable {
    var minutes: UInt64
    var hours: UInt64
    var months: UInt64
    /// nil: every year.
    var years: Set<Int>?
    var dayOfMonth: DayRule
    var dayOfWeek: DayRule

    enum DayRule: Sendable, Equatable {
        /// `?`: the other day field decides.
        case unspecified
        /// Days (1…31) or weekdays (1…7) as a bit set.
        case days(UInt64)
        case lastDayOfMonth
        case lastWeekdayOfMonth
        case nearestWeekday(Int)
        /// `5L`: the last such weekday of the month.
        case lastOfWeekday(Int)
        /// `3#2`: the nth such weekday of the month.
        case nthWeekday(Int, Int)
    }

    public struct Invalid: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    static let monthNames = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    static let dayNames = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]

    /// Parses the six fields (what is inside `cron(…)`).
    public init(fields text: String) throws(Invalid) {
        let f = text.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard f.count == 6 else {
            throw Invalid(
                description: "a cron expression has six fields (minutes hours day-of-month month day-of-week year), not \(f.count)")
        }
        minutes = try Self.field(f[0], "minutes", 0...59)
        hours = try Self.field(f[1], "hours", 0...23)
        months = try Self.field(f[3], "month", 1...12, names: Self.monthNames)
        years = f[5] == "*" ? nil : try Self.yearSet(f[5])
        let (dom, dow) = (f[2], f[4])
        guard (dom == "?") != (dow == "?") else {
            throw Invalid(description: "exactly one of day-of-month (\(dom)) and day-of-week (\(dow)) must be ?")
        }
        dayOfMonth = dom == "?" ? .unspecified : try Self.dayOfMonthRule(dom)
        dayOfWeek = dow == "?" ? .unspecified : try Self.dayOfWeekRule(dow)
    }

    // MARK: - parsing

    static func number(_ s: Substring, _ name: String, _ range: ClosedRange<Int>, names: [String] = []) throws(Invalid) -> Int {
        if let i = names.firstIndex(of: s.uppercased()) { return i + range.lowerBound }
        guard let n = Int(s), range.contains(n) else {
            throw Invalid(
                description:
                    "\(name): \(s) is not a value in \(range.lowerBound)–\(range.upperBound)\(names.isEmpty ? "" : " or a name like \(names[0])")"
            )
        }
        return n
    }

    /// A plain field as a bit set (bit i: value i).
    static func field(_ s: String, _ name: String, _ range: ClosedRange<Int>, names: [String] = []) throws(Invalid) -> UInt64 {
        var bits: UInt64 = 0
        for v in try values(s, name, range, names: names) { bits |= 1 << UInt64(v) }
        return bits
    }

    static func yearSet(_ s: String) throws(Invalid) -> Set<Int> {
        Set(try values(s, "year", 1970...2199))
    }

    static func values(_ s: String, _ name: String, _ range: ClosedRange<Int>, names: [String] = []) throws(Invalid) -> [Int] {
        var out: [Int] = []
        for item in s.split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else { throw Invalid(description: "\(name): empty item in \(s)") }
            let parts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { throw Invalid(description: "\(name): \(item) has more than one /") }
            var step = 1
            if parts.count == 2 {
                guard let n = Int(parts[1]), n >= 1, n <= range.upperBound else {
                    throw Invalid(description: "\(name): the step in \(item) must be a whole number from 1 to \(range.upperBound)")
                }
                step = n
            }
            let base = parts[0]
            var lo: Int
            var hi: Int
            if base == "*" {
                (lo, hi) = (range.lowerBound, range.upperBound)
            } else if let dash = base.firstIndex(of: "-") {
                lo = try number(base[..<dash], name, range, names: names)
                hi = try number(base[base.index(after: dash)...], name, range, names: names)
            } else {
                lo = try number(base, name, range, names: names)
                hi = parts.count == 2 ? range.upperBound : lo
            }
            if lo <= hi {
                out += stride(from: lo, through: hi, by: step)
            } else {
                // A wrapping range (FRI-MON, NOV-FEB); years and clock fields do not wrap.
                guard !names.isEmpty else { throw Invalid(description: "\(name): the range \(base) runs backwards") }
                let span = range.upperBound - range.lowerBound + 1
                out += stride(from: lo, through: hi + span, by: step).map { $0 > range.upperBound ? $0 - span : $0 }
            }
        }
        return out
    }

    static func dayOfMonthRule(_ s: String) throws(Invalid) -> DayRule {
        switch s.uppercased() {
        case "L": return .lastDayOfMonth
        case "LW": return .lastWeekdayOfMonth
        default: break
        }
        if s.uppercased().hasSuffix("W") {
            return .nearestWeekday(try number(s.dropLast(), "day-of-month", 1...31))
        }
        return .days(try field(s, "day-of-month", 1...31))
    }

    static func dayOfWeekRule(_ s: String) throws(Invalid) -> DayRule {
        let u = s.uppercased()
        if u == "L" { return .days(1 << 7) }
        if u.hasSuffix("L") { return .lastOfWeekday(try number(u.dropLast(), "day-of-week", 1...7, names: dayNames)) }
        if let hash = u.firstIndex(of: "#") {
            let day = try number(u[..<hash], "day-of-week", 1...7, names: dayNames)
            guard let n = Int(u[u.index(after: hash)...]), (1...5).contains(n) else {
                throw Invalid(description: "day-of-week: the n in \(s) (day#n) must be 1–5")
            }
            return .nthWeekday(day, n)
        }
        return .days(try field(s, "day-of-week", 1...7, names: dayNames))
    }

    // MARK: - matching

    func dayMatches(_ d: CivilDay) -> Bool {
        let dim = CivilDay.daysInMonth(d.year, d.month)
        let weekday = d.weekday // 1 = Sunday
        switch dayOfMonth {
        case .unspecified: break
        case .days(let bits): return bits & (1 << UInt64(d.day)) != 0
        case .lastDayOfMonth: return d.day == dim
        case .lastWeekdayOfMonth:
            var last = dim
            while CivilDay(year: d.year, month: d.month, day: last).weekday.isWeekend { last -= 1 }
            return d.day == last
        case .nearestWeekday(let n):
            guard n <= dim else { return false }
            let target = CivilDay(year: d.year, month: d.month, day: n)
            var day = n
            if target.weekday == 7 { day = n == 1 ? 3 : n - 1 }
            if target.weekday == 1 { day = n == dim ? n - 2 : n + 1 }
            return d.day == day
        case .lastOfWeekday, .nthWeekday: return false
        }
        switch dayOfWeek {
        case .days(let bits): return bits & (1 << UInt64(weekday)) != 0
        case .lastOfWeekday(let w): return weekday == w && d.day > dim - 7
        case .nthWeekday(let w, let n): return weekday == w && (d.day - 1) / 7 + 1 == n
        default: return false
        }
    }

    /// The first slot strictly after `seconds` (Unix time), or nil when there is none before 2200.
    public func next(after seconds: Int64) -> Int64? {
        let start = (seconds.floorDiv(60) + 1) * 60
        var dayNumber = start.floorDiv(86_400)
        var minuteOfDay = Int((start - dayNumber * 86_400) / 60)
        while true {
            let d = CivilDay(dayNumber: dayNumber)
            if d.year > 2199 { return nil }
            if let years, !years.contains(d.year) {
                guard let y = years.filter({ $0 > d.year }).min() else { return nil }
                dayNumber = CivilDay.dayNumber(y, 1, 1)
                minuteOfDay = 0
                continue
            }
            if months & (1 << UInt64(d.month)) == 0 {
                dayNumber = d.month == 12 ? CivilDay.dayNumber(d.year + 1, 1, 1) : CivilDay.dayNumber(d.year, d.month + 1, 1)
                minuteOfDay = 0
                continue
            }
            if dayMatches(d) {
                for m in minuteOfDay..<1440 where hours & (1 << UInt64(m / 60)) != 0 && minutes & (1 << UInt64(m % 60)) != 0 {
                    return dayNumber * 86_400 + Int64(m) * 60
                }
            }
            dayNumber += 1
            minuteOfDay = 0
        }
    }
}

/// A day of the proleptic Gregorian calendar (UTC), from and to days since 1970-01-01.
struct CivilDay: Sendable, Equatable {
    var year: Int
    var month: Int
    var day: Int

    init(year: Int, month: Int, day: Int) {
        self.year = year
        self.month = month
        self.day = day
    }

    init(dayNumber z0: Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        day = Int(doy - (153 * mp + 2) / 5 + 1)
        month = Int(mp < 10 ? mp + 3 : mp - 9)
        year = Int(yoe + era * 400) + (month <= 2 ? 1 : 0)
    }

    static func dayNumber(_ y0: Int, _ m: Int, _ d: Int) -> Int64 {
        let y = Int64(m <= 2 ? y0 - 1 : y0)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = Int64(m > 2 ? m - 3 : m + 9)
        let doy = (153 * mp + 2) / 5 + Int64(d) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func daysInMonth(_ y: Int, _ m: Int) -> Int {
        switch m {
        case 2: (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// 1 = Sunday … 7 = Saturday (EventBridge's numbering).
    var weekday: Int {
        let n = Self.dayNumber(year, month, day)
        return Int(((n + 4) % 7 + 7) % 7) + 1
    }
}

extension Int {
    var isWeekend: Bool { self == 1 || self == 7 }
}

extension Int64 {
    func floorDiv(_ d: Int64) -> Int64 { self >= 0 ? self / d : -((-self + d - 1) / d) }
}
