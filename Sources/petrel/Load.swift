import ArgumentParser
import Foundation
import Histogram
import PetrelClient
import Synchronization

struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drive a function's invoke endpoint with N concurrent callers; print latency percentiles, throughput and errors.")

    @Option(help: "Function name or ARN.") var function: String
    @Option(help: "The event (JSON), or @FILE.") var payload = "{}"
    @Option(help: "Concurrent callers.") var concurrency = 1
    @Option(help: "Run this many seconds (default 10 unless --requests is given).") var duration: Double?
    @Option(help: "Stop after this many requests in all.") var requests: Int?
    @Flag(help: "Print the result as JSON (for machines) instead of a table.") var json = false
    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        guard (1...4096).contains(concurrency) else { throw ValidationError("--concurrency must be 1–4096") }
        if let duration, !(duration > 0 && duration <= 3600) { throw ValidationError("--duration must be over 0 and at most 3600 seconds") }
        if let requests, requests < 1 { throw ValidationError("--requests must be at least 1") }
        if duration != nil && requests != nil { throw ValidationError("give --duration or --requests, not both") }
    }

    func run() async throws {
        let client = try connection.client()
        var body = Array(payload.utf8)
        if payload.hasPrefix("@") {
            guard let d = FileManager.default.contents(atPath: String(payload.dropFirst())) else { throw ValidationError("cannot read \(payload.dropFirst())") }
            body = Array(d)
        }
        try await reporting { try client.checkReachable() }
        let limit = requests
        let seconds = duration ?? (requests == nil ? 10 : 3600)
        let stats = LoadStats()
        let started = ContinuousClock.now
        let deadline = started + .milliseconds(Int64(seconds * 1000))
        let counters = LoadCounters()
        let payloadBytes = body
        let path = "/2015-03-31/functions/\(function)/invocations"
        let quiet = json
        let workers = concurrency

        await withTaskGroup(of: Void.self) { outer in
          outer.addTask {
            var ticks = 0
            while !counters.done.load(ordering: .relaxed) {
                try? await Task.sleep(for: .milliseconds(100))
                ticks += 1
                if ticks % 10 == 0 && !quiet { stderr("\r" + stats.progressLine(since: started) + "   ") }
            }
          }
          outer.addTask {
          await withTaskGroup(of: Void.self) { group in
            for _ in 0..<workers {
                group.addTask {
                    var local = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
                    var tally = LoadStats.Tally()
                    while ContinuousClock.now < deadline {
                        if let limit, counters.issued.wrappingAdd(1, ordering: .relaxed).oldValue >= limit { break }
                        let t0 = ContinuousClock.now
                        do {
                            let r = try await client.send("POST", path, headers: ["Content-Type": "application/json"], body: payloadBytes,
                                                          timeout: .seconds(960))
                            let us = UInt64(max(1, (ContinuousClock.now - t0).microseconds))
                            _ = local.record(us)
                            if r.headers["x-amz-function-error"] != nil {
                                let type = (r.json?["errorType"] as? String) ?? "Unhandled"
                                tally.errors["function: \(type)", default: 0] += 1
                            } else {
                                tally.ok += 1
                            }
                            if r.headers["x-petrel-init-duration"] != nil { tally.coldStarts += 1 }
                        } catch let e as LambdaClient.APIError {
                            if e.status == 429 {
                                tally.throttles += 1
                            } else {
                                tally.errors[e.status == 0 ? "unreachable" : "HTTP \(e.status) \(e.code)", default: 0] += 1
                                if e.status == 0 { try? await Task.sleep(for: .milliseconds(100)) }
                            }
                        } catch {
                            tally.errors["client: \(error)", default: 0] += 1
                        }
                        tally.requests += 1
                        if tally.requests % 64 == 0 { stats.merge(&local, &tally) }
                    }
                    stats.merge(&local, &tally)
                }
            }
          }
          counters.done.store(true, ordering: .relaxed)
          }
        }
        let elapsed = ContinuousClock.now - started
        if !json { stderr("\r" + String(repeating: " ", count: 100) + "\r") }
        let summary = stats.summary(elapsed: elapsed, concurrency: concurrency, function: function)
        if json {
            let data = try JSONSerialization.data(withJSONObject: summary.json, options: [.sortedKeys, .prettyPrinted])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(summary.table)
        }
        if summary.requests == 0 || summary.ok + summary.functionErrors == 0 { throw ExitCode(1) }
    }
}

final class LoadCounters: Sendable {
    let issued = Atomic<Int>(0)
    let done = Atomic<Bool>(false)
}

/// Counts and latencies, merged from the callers.
final class LoadStats: Sendable {
    struct Tally {
        var requests = 0
        var ok = 0
        var throttles = 0
        var coldStarts = 0
        var errors: [String: Int] = [:]
    }
    private struct State {
        var histogram = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
        var tally = Tally()
    }
    private let state = Mutex(State())

    func merge(_ h: inout Histogram<UInt64>, _ t: inout Tally) {
        state.withLock { s in
            s.histogram.add(h)
            s.tally.requests += t.requests
            s.tally.ok += t.ok
            s.tally.throttles += t.throttles
            s.tally.coldStarts += t.coldStarts
            for (k, v) in t.errors { s.tally.errors[k, default: 0] += v }
        }
        h.reset()
        t = Tally()
    }

    func progressLine(since: ContinuousClock.Instant) -> String {
        state.withLock { s in
            let secs = (ContinuousClock.now - since).seconds
            let rate = secs > 0 ? Double(s.tally.requests) / secs : 0
            return String(format: "%6.1f s  %9d requests  %8.0f/s  p50 %.2f ms  p99 %.2f ms  errors %d  throttles %d",
                          secs, s.tally.requests, rate, ms(s.histogram.valueAtPercentile(50)), ms(s.histogram.valueAtPercentile(99)),
                          s.tally.errors.values.reduce(0, +), s.tally.throttles)
        }
    }

    struct Summary {
        var requests: Int
        var ok: Int
        var functionErrors: Int
        var table: String
        var json: [String: Any]
    }

    func summary(elapsed: Duration, concurrency: Int, function: String) -> Summary {
        state.withLock { s in
            let secs = elapsed.seconds
            let h = s.histogram
            let pct: [(String, Double)] = [("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9)]
            let latencies = pct.map { ($0.0, ms(h.valueAtPercentile($0.1))) } + [("max", ms(h.max))]
            let functionErrors = s.tally.errors.filter { $0.key.hasPrefix("function: ") }.values.reduce(0, +)
            var rows: [(String, String)] = [
                ("function", function),
                ("concurrency", "\(concurrency)"),
                ("duration", String(format: "%.2f s", secs)),
                ("requests", "\(s.tally.requests)"),
                ("throughput", String(format: "%.0f invocations/s", secs > 0 ? Double(s.tally.requests) / secs : 0)),
                ("succeeded", "\(s.tally.ok)"),
                ("throttled (429)", "\(s.tally.throttles)"),
                ("cold starts seen", "\(s.tally.coldStarts)"),
            ]
            for (k, v) in s.tally.errors.sorted(by: { $0.key < $1.key }) { rows.append(("errors: \(k)", "\(v)")) }
            if s.tally.errors.isEmpty { rows.append(("errors", "0")) }
            for (k, v) in latencies { rows.append(("latency \(k)", String(format: "%.3f ms", v))) }
            let w = rows.map(\.0.count).max() ?? 10
            let table = rows.map { $0.0.padding(toLength: w, withPad: " ", startingAt: 0) + "  " + $0.1 }.joined(separator: "\n")
            var lat: [String: Double] = [:]
            for (k, v) in latencies { lat[k] = v }
            let json: [String: Any] = [
                "function": function, "concurrency": concurrency, "durationSeconds": secs, "requests": s.tally.requests,
                "throughputPerSecond": secs > 0 ? Double(s.tally.requests) / secs : 0, "succeeded": s.tally.ok,
                "throttles": s.tally.throttles, "coldStarts": s.tally.coldStarts, "errors": s.tally.errors,
                "latencyMs": lat,
            ]
            return Summary(requests: s.tally.requests, ok: s.tally.ok, functionErrors: functionErrors, table: table, json: json)
        }
    }
}

private func ms(_ us: UInt64) -> Double { Double(us) / 1000 }

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    var microseconds: Int64 { components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000 }
}
