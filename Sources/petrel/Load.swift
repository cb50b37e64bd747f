import ArgumentParser
import Foundation
import Histogram
import NIOPosix
import PetrelClient
import Synchronization

struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Drive a function's invoke endpoint (or its URL) with N concurrent callers; print latency percentiles, throughput and errors.")

    @Option(help: "Function name or ARN.") var function: String?
    @Option(help: "Send messages to this SQS queue (its URL or name) instead of invoking a function.") var queue: String?
    @Option(help: "With --queue: messages per request (1: SendMessage; 2–10: SendMessageBatch).") var batch = 1
    @Option(help: "Drive this function URL (auth type NONE: unsigned POSTs) instead of the invoke endpoint.") var url: String?
    @Option(help: "The event (JSON), or @FILE.") var payload = "{}"
    @Flag(help: "Invoke asynchronously (InvocationType Event): what is measured is the queueing, answered 202.") var event = false
    @Option(help: "Concurrent callers.") var concurrency = 1
    @Option(help: "Run this many seconds (default 10 unless --requests is given).") var duration: Double?
    @Option(help: "Stop after this many requests in all.") var requests: Int?
    @Flag(help: "Print the result as JSON (for machines) instead of a table.") var json = false
    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        guard (function == nil) != (queue == nil) else { throw ValidationError("give --function or --queue") }
        guard (1...10).contains(batch), batch == 1 || queue != nil else { throw ValidationError("--batch is 1–10, with --queue") }
        guard (1...4096).contains(concurrency) else { throw ValidationError("--concurrency must be 1–4096") }
        if let duration, !(duration > 0 && duration <= 3600) { throw ValidationError("--duration must be over 0 and at most 3600 seconds") }
        if let requests, requests < 1 { throw ValidationError("--requests must be at least 1") }
        if duration != nil && requests != nil { throw ValidationError("give --duration or --requests, not both") }
    }

    func run() async throws {
        let client = try connection.client()
        var body = Array(payload.utf8)
        if payload.hasPrefix("@") {
            guard let d = FileManager.default.contents(atPath: String(payload.dropFirst())) else {
                throw ValidationError("cannot read \(payload.dropFirst())")
            }
            body = Array(d)
        }
        try await reporting { try client.checkReachable() }
        let seconds = duration ?? (requests == nil ? 10 : 3600)
        var target: URL?
        if let url {
            guard let u = URL(string: url), u.scheme == "http", u.host != nil else {
                throw ValidationError("--url must be an http:// function URL (https is not driven by petrel load)")
            }
            target = u
        }
        let driver: LoadDriver
        if let queue {
            let url = try await reporting { try await Queue.url(client, queue) }
            let message = String(decoding: body, as: UTF8.self)
            let request: [String: Any] =
                batch == 1
                ? ["QueueUrl": url, "MessageBody": message]
                : ["QueueUrl": url, "Entries": (0..<batch).map { ["Id": "m\($0)", "MessageBody": message] }]
            driver = LoadDriver(
                client: client, sqsTarget: batch == 1 ? "SendMessage" : "SendMessageBatch",
                body: Array(try JSONSerialization.data(withJSONObject: request)), seconds: seconds, limit: requests)
        } else {
            driver = LoadDriver(
                client: client, function: function!, url: target, event: event, body: body, seconds: seconds, limit: requests)
        }
        let started = ContinuousClock.now
        let quiet = json
        let group = MultiThreadedEventLoopGroup.singleton
        let tallies: [LoadStats.Tally] = try await withThrowingTaskGroup(of: [LoadStats.Tally]?.self) { outer in
            outer.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    if Task.isCancelled { break }
                    if !quiet { stderr("\r" + LoadStats.progressLine(driver, since: started) + "   ") }
                }
                return nil
            }
            outer.addTask { try await driver.run(connections: self.concurrency, group: group) }
            var result: [LoadStats.Tally] = []
            while let r = try await outer.next() {
                if let r {
                    result = r
                    outer.cancelAll()
                }
            }
            return result
        }
        let stats = LoadStats()
        for var t in tallies { stats.merge(&t) }
        let elapsed = ContinuousClock.now - started
        if !json { stderr("\r" + String(repeating: " ", count: 100) + "\r") }
        let summary = stats.summary(
            elapsed: elapsed, concurrency: concurrency, function: function ?? queue!, messagesPerRequest: queue == nil ? nil : batch)
        if json {
            let data = try JSONSerialization.data(withJSONObject: summary.json, options: [.sortedKeys, .prettyPrinted])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(summary.table)
        }
        if summary.requests == 0 || summary.ok + summary.functionErrors == 0 { throw ExitCode(1) }
    }
}

/// Counts and latencies, merged from the callers.
final class LoadStats: Sendable {
    struct Tally {
        var requests = 0
        var ok = 0
        var throttles = 0
        var coldStarts = 0
        /// Answers per executed version (X-Amz-Executed-Version): an alias's split.
        var versions: [String: Int] = [:]
        var errors: [String: Int] = [:]
        var histogram = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    }
    private let state = Mutex(Tally())

    func merge(_ t: inout Tally) {
        state.withLock { s in
            s.histogram.add(t.histogram)
            s.requests += t.requests
            s.ok += t.ok
            s.throttles += t.throttles
            s.coldStarts += t.coldStarts
            for (k, v) in t.versions { s.versions[k, default: 0] += v }
            for (k, v) in t.errors { s.errors[k, default: 0] += v }
        }
    }

    static func progressLine(_ d: LoadDriver, since: ContinuousClock.Instant) -> String {
        let secs = (ContinuousClock.now - since).seconds
        let done = d.completed.load(ordering: .relaxed) + d.throttled.load(ordering: .relaxed) + d.failures.load(ordering: .relaxed)
        return String(
            format: "%6.1f s  %9d requests  %8.0f/s  throttles %d  failures %d",
            secs, done, secs > 0 ? Double(done) / secs : 0, d.throttled.load(ordering: .relaxed), d.failures.load(ordering: .relaxed))
    }

    struct Summary {
        var requests: Int
        var ok: Int
        var functionErrors: Int
        var table: String
        var json: [String: Any]
    }

    /// `messagesPerRequest`: a queue was driven, each request sending that many messages.
    func summary(elapsed: Duration, concurrency: Int, function: String, messagesPerRequest: Int? = nil) -> Summary {
        state.withLock { s in
            let secs = elapsed.seconds
            let h = s.histogram
            let pct: [(String, Double)] = [("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9)]
            let latencies = pct.map { ($0.0, ms(h.valueAtPercentile($0.1))) } + [("max", ms(h.max))]
            let functionErrors = s.errors.filter { $0.key.hasPrefix("function: ") }.values.reduce(0, +)
            var rows: [(String, String)] = [
                (messagesPerRequest == nil ? "function" : "queue", function),
                ("concurrency", "\(concurrency)"),
                ("duration", String(format: "%.2f s", secs)),
                ("requests", "\(s.requests)"),
                (
                    "throughput",
                    String(
                        format: messagesPerRequest == nil ? "%.0f invocations/s" : "%.0f requests/s",
                        secs > 0 ? Double(s.requests) / secs : 0)
                ),
                ("succeeded", "\(s.ok)"),
                ("throttled (429)", "\(s.throttles)"),
                ("cold starts seen", "\(s.coldStarts)"),
            ]
            let answered = s.versions.values.reduce(0, +)
            for (v, n) in s.versions.sorted(by: { $0.key < $1.key }) where answered > 0 {
                rows.append(("version \(v)", String(format: "%d (%.1f%%)", n, 100 * Double(n) / Double(answered))))
            }
            for (k, v) in s.errors.sorted(by: { $0.key < $1.key }) { rows.append(("errors: \(k)", "\(v)")) }
            if s.errors.isEmpty { rows.append(("errors", "0")) }
            for (k, v) in latencies { rows.append(("latency \(k)", String(format: "%.3f ms", v))) }
            if let m = messagesPerRequest {
                rows.insert(
                    ("messages", String(format: "%.0f messages/s (%d per request)", secs > 0 ? Double(s.ok * m) / secs : 0, m)), at: 4)
            }
            let w = rows.map(\.0.count).max() ?? 10
            let table = rows.map { $0.0.padding(toLength: w, withPad: " ", startingAt: 0) + "  " + $0.1 }.joined(separator: "\n")
            var lat: [String: Double] = [:]
            for (k, v) in latencies { lat[k] = v }
            var json: [String: Any] = [
                "function": function, "concurrency": concurrency, "durationSeconds": secs, "requests": s.requests,
                "throughputPerSecond": secs > 0 ? Double(s.requests) / secs : 0, "succeeded": s.ok,
                "throttles": s.throttles, "coldStarts": s.coldStarts, "errors": s.errors, "versions": s.versions,
                "latencyMs": lat,
            ]
            if let m = messagesPerRequest {
                json["messagesPerRequest"] = m
                json["messagesPerSecond"] = secs > 0 ? Double(s.ok * m) / secs : 0
            }
            return Summary(requests: s.requests, ok: s.ok, functionErrors: functionErrors, table: table, json: json)
        }
    }
}

private func ms(_ us: UInt64) -> Double { Double(us) / 1000 }

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
