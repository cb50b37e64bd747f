import Foundation
import PetrelCore
import Testing

/// EventBridge's rate and cron expressions: what parses, what is refused and
/// why, and the slots they give (checked against dates worked out by hand).
@Suite("Schedule expressions")
struct ScheduleExpressionTests {
    static func t(_ iso: String) -> Int64 {
        let f = ISO8601DateFormatter()
        return Int64(f.date(from: iso)!.timeIntervalSince1970)
    }

    static func iso(_ s: Int64?) -> String? {
        s.map { ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double($0))) }
    }

    func slots(_ expr: String, from: String, count: Int, anchor: String? = nil) throws -> [String] {
        let e = try ScheduleExpression(parsing: expr)
        var at = Self.t(from)
        let a = anchor.map(Self.t) ?? at
        var out: [String] = []
        for _ in 0..<count {
            guard let next = e.next(after: at, anchor: a) else { break }
            out.append(Self.iso(next)!)
            at = next
        }
        return out
    }

    @Test("rates count from the anchor")
    func rates() throws {
        #expect(
            try slots("rate(1 minute)", from: "2026-11-23T10:00:30Z", count: 3)
                == ["2026-11-23T10:01:30Z", "2026-11-23T10:02:30Z", "2026-11-23T10:03:30Z"])
        #expect(
            try slots("rate(2 hours)", from: "2026-11-23T23:00:00Z", count: 2)
                == ["2026-11-24T01:00:00Z", "2026-11-24T03:00:00Z"])
        #expect(
            try slots("rate(1 day)", from: "2026-11-23T10:05:00Z", count: 1, anchor: "2026-11-20T08:00:00Z")
                == ["2026-11-24T08:00:00Z"])
        #expect(try ScheduleExpression(parsing: "rate(5 minutes)").description == "rate(5 minutes)")
    }

    @Test("cron fields: lists, ranges, steps, names")
    func cronBasics() throws {
        #expect(
            try slots("cron(0/15 * * * ? *)", from: "2026-11-23T10:07:00Z", count: 3)
                == ["2026-11-23T10:15:00Z", "2026-11-23T10:30:00Z", "2026-11-23T10:45:00Z"])
        // Weekdays at 09:30: Monday 2026-11-23 … Friday, then Monday again.
        #expect(
            try slots("cron(30 9 ? * MON-FRI *)", from: "2026-11-27T10:00:00Z", count: 2)
                == ["2026-11-30T09:30:00Z", "2026-12-01T09:30:00Z"])
        // A wrapping weekday range: FRI-MON is Fri, Sat, Sun, Mon.
        #expect(
            try slots("cron(0 0 ? * FRI-MON *)", from: "2026-11-23T12:00:00Z", count: 4)
                == ["2026-11-27T00:00:00Z", "2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z", "2026-11-30T00:00:00Z"])
        #expect(
            try slots("cron(0 8,20 1 JAN,JUL ? *)", from: "2026-11-23T00:00:00Z", count: 3)
                == ["2027-01-01T08:00:00Z", "2027-01-01T20:00:00Z", "2027-07-01T08:00:00Z"])
        // Day 31 skips the short months; the year field bounds the schedule.
        #expect(
            try slots("cron(0 0 31 * ? 2027)", from: "2027-01-31T00:00:00Z", count: 3)
                == ["2027-03-31T00:00:00Z", "2027-05-31T00:00:00Z", "2027-07-31T00:00:00Z"])
        #expect(try slots("cron(0 0 1 1 ? 2027)", from: "2027-06-01T00:00:00Z", count: 1) == [])
        // Strictly after: a slot at the very second given is not returned.
        #expect(try slots("cron(0 12 * * ? *)", from: "2026-11-23T12:00:00Z", count: 1) == ["2026-11-24T12:00:00Z"])
    }

    @Test("L, W and # forms")
    func cronSpecials() throws {
        #expect(
            try slots("cron(0 0 L * ? *)", from: "2028-02-01T00:00:00Z", count: 2)
                == ["2028-02-29T00:00:00Z", "2028-03-31T00:00:00Z"])
        // Last weekday: 2026-05-31 is a Sunday, so Friday the 29th.
        #expect(try slots("cron(0 0 LW * ? *)", from: "2026-05-01T00:00:00Z", count: 1) == ["2026-05-29T00:00:00Z"])
        // Nearest weekday to the 1st, when the 1st is a Saturday (2026-08-01): Monday the 3rd.
        #expect(try slots("cron(0 0 1W * ? *)", from: "2026-07-15T00:00:00Z", count: 1) == ["2026-08-03T00:00:00Z"])
        // Nearest weekday to the 15th, a Sunday (2026-11-15): Monday the 16th.
        #expect(try slots("cron(0 0 15W * ? *)", from: "2026-11-01T00:00:00Z", count: 1) == ["2026-11-16T00:00:00Z"])
        // The last Friday (6L) and the second Tuesday (3#2) of November 2026.
        #expect(try slots("cron(0 0 ? 11 6L *)", from: "2026-11-01T00:00:00Z", count: 1) == ["2026-11-27T00:00:00Z"])
        #expect(try slots("cron(0 0 ? * 3#2 *)", from: "2026-11-01T00:00:00Z", count: 1) == ["2026-11-10T00:00:00Z"])
        // L alone in day-of-week: Saturday.
        #expect(try slots("cron(0 0 ? * L *)", from: "2026-11-23T00:00:00Z", count: 1) == ["2026-11-28T00:00:00Z"])
    }

    @Test(
        "bad expressions are refused and say why",
        arguments: [
            ("rate(1 minutes)", "singular"),
            ("rate(2 minute)", "plural"),
            ("rate(0 minutes)", "positive"),
            ("rate(5 weeks)", "minute(s), hour(s) or day(s)"),
            ("rate(5)", "a whole number and a unit"),
            ("cron(0 12 * * ?)", "six fields"),
            ("cron(0 12 * * * *)", "exactly one of day-of-month"),
            ("cron(0 12 ? * ? *)", "exactly one of day-of-month"),
            ("cron(60 * * * ? *)", "minutes: 60"),
            ("cron(0 24 * * ? *)", "hours: 24"),
            ("cron(0 0 32 * ? *)", "day-of-month: 32"),
            ("cron(0 0 ? 13 * *)", "month: 13"),
            ("cron(0 0 ? * 8 *)", "day-of-week: 8"),
            ("cron(0 0 ? * 2#6 *)", "1–5"),
            ("cron(0 0 1 * ? 1969)", "year: 1969"),
            ("cron(0/0 * * * ? *)", "step"),
            ("cron(30-10 * * * ? *)", "runs backwards"),
            ("cron(0,,5 * * * ? *)", "empty item"),
            ("every day", "rate(…) or cron(…)"),
            ("", "rate(…) or cron(…)"),
        ])
    func refused(_ expr: String, _ words: String) {
        do {
            _ = try ScheduleExpression(parsing: expr)
            Issue.record("\(expr) was accepted")
        } catch {
            #expect(error.code == .invalidParameter)
            #expect(error.message.contains(words), "\(expr): \(error.message)")
        }
    }

    @Test("the latest slot before a time (catch-up after downtime)")
    func latest() throws {
        let rate = try ScheduleExpression(parsing: "rate(10 minutes)")
        let anchor = Self.t("2026-11-23T10:00:00Z")
        #expect(Self.iso(rate.latest(before: Self.t("2026-11-23T10:35:00Z"), after: anchor, anchor: anchor)) == "2026-11-23T10:30:00Z")
        #expect(rate.latest(before: Self.t("2026-11-23T10:35:00Z"), after: Self.t("2026-11-23T10:30:00Z"), anchor: anchor) == nil)
        let cron = try ScheduleExpression(parsing: "cron(0 6 1 * ? *)")
        #expect(
            Self.iso(cron.latest(before: Self.t("2026-11-23T00:00:00Z"), after: Self.t("2026-01-01T00:00:00Z"), anchor: 0))
                == "2026-11-01T06:00:00Z")
        #expect(cron.latest(before: Self.t("2026-11-23T00:00:00Z"), after: Self.t("2026-11-02T00:00:00Z"), anchor: 0) == nil)
    }

    @Test("destinations: a function, queue or topic of the same account, or the dead-letter queue")
    func destinations() throws {
        #expect(try Destination(parsing: "arn:aws:sqs:::petrel-dlq", account: "000000000000", region: "us-east-1") == .deadLetterQueue)
        #expect(
            try Destination(parsing: "arn:aws:sqs:us-east-1:000000000000:petrel-dlq", account: "000000000000", region: "us-east-1")
                == .deadLetterQueue)
        #expect(
            try Destination(parsing: "arn:aws:lambda:us-east-1:000000000000:function:sink", account: "000000000000", region: "us-east-1")
                == .function(account: "000000000000", name: "sink"))
        #expect(
            try Destination(parsing: "arn:aws:sqs:us-east-1:000000000000:q.fifo", account: "000000000000", region: "us-east-1")
                == .queue(arn: "arn:aws:sqs:us-east-1:000000000000:q.fifo"))
        #expect(
            try Destination(parsing: "arn:aws:sns:us-east-1:000000000000:t", account: "000000000000", region: "us-east-1")
                == .topic(arn: "arn:aws:sns:us-east-1:000000000000:t"))
        for bad in [
            "arn:aws:lambda:us-east-1:111111111111:function:sink", "arn:aws:lambda:eu-west-1:000000000000:function:sink",
            "arn:aws:sns:us-east-1:111111111111:t", "arn:aws:sqs:::other", "arn:aws:sqs:us-east-1:000000000000:bad name",
            "arn:aws:sns:us-east-1:000000000000:t.fifo", "arn:aws:s3:::bucket",
            "arn:aws:lambda:us-east-1:000000000000:function:bad name", "sink",
        ] {
            #expect(throws: DomainError.self, "\(bad)") { try Destination(parsing: bad, account: "000000000000", region: "us-east-1") }
        }
    }
}
