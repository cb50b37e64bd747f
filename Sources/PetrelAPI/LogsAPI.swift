import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PetrelCore
import PetrelStore

/// The part of the CloudWatch Logs API (JSON 1.1, `POST /` with `X-Amz-Target:
/// Logs_20140328.…`) that reads function logs back: `aws logs
/// describe-log-groups|describe-log-streams|get-log-events|filter-log-events|tail`,
/// and sets how long they are kept: `put-retention-policy|delete-retention-policy`.
public struct LogsAPI: Sendable {
    let logs: LogStore
    let gate: Gatekeeper
    let region: String
    /// The daemon's log_retention_days, for groups without a policy of their own (nil: forever).
    let defaultRetentionDays: Int?
    let logger: Logger
    let pipeline: RequestPipeline

    public init(logs: LogStore, gate: Gatekeeper, region: String, defaultRetentionDays: Int? = nil, logger: Logger) {
        self.logger = logger
        pipeline = RequestPipeline(gate: gate, logger: logger)
        self.logs = logs
        self.gate = gate
        self.region = region
        self.defaultRetentionDays = defaultRetentionDays
    }

    /// The values CloudWatch Logs accepts for retentionInDays.
    public static let retentionDays: [Int] = [
        1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
        2557, 2922, 3288, 3653,
    ]

    func serve(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        let named = JSONProtocol.operation(req, prefix: "Logs_20140328.")
        let op = named.isEmpty ? "Unknown" : named
        return await pipeline.run(
            req, ctx, action: op, limit: 1_048_576, service: "logs", style: .json11,
            tooLarge: { _ in Self.error("SerializationException", "The request body is larger than 1 MB.") },
            audit: { body in
                .init(resource: nil, parameters: AuditParameters.describe(query: [], path: [:], body: body, payloadIsData: false))
            },
            access: { call, _ in
                // A group's actions act on `log-group:NAME:*`, as IAM writes them; none named: `*`.
                let b = (try? JSONProtocol.object(call.body, invalid: Self.error("SerializationException", ""))) ?? [:]
                let resource = (b["logGroupName"] as? String).map { "arn:aws:logs:\(self.region):\(call.caller.account):log-group:\($0):*" }
                return [.init(action: "logs:" + op, resource: resource ?? "*")]
            }
        ) { call in
            try self.dispatch(op, call.body, account: call.caller.account)
        }
    }

    func dispatch(_ op: String, _ buf: ByteBuffer, account: String) throws -> Response {
        guard op != "Unknown" else {
            throw Self.error(
                "UnknownOperationException", "Petrel serves the Lambda REST API and CloudWatch Logs (X-Amz-Target: Logs_20140328.*) only.",
                status: 404)
        }
        let body = try JSONProtocol.object(buf, invalid: Self.error("SerializationException", "The request body is not a JSON object."))
        let out: [String: Any]
        switch op {
        case "DescribeLogGroups": out = try describeGroups(body, account: account)
        case "DescribeLogStreams": out = try describeStreams(body, account: account)
        case "GetLogEvents": out = try getEvents(body, account: account)
        case "FilterLogEvents": out = try filterEvents(body, account: account)
        case "PutRetentionPolicy": out = try setRetention(body, account: account, put: true)
        case "DeleteRetentionPolicy": out = try setRetention(body, account: account, put: false)
        default:
            throw Self.error("UnknownOperationException", "Petrel does not implement \(op) of CloudWatch Logs.")
        }
        return try JSONProtocol.response(out, version: "1.1")
    }

    /// An error of CloudWatch Logs (its own exception names; written as JSON 1.1 by the pipeline).
    static func error(_ code: String, _ message: String, status: Int = 400) -> LambdaError { .named(code, message, status: status) }

    func groupARN(_ g: String, _ account: String) -> String { "arn:aws:logs:\(region):\(account):log-group:\(g)" }

    static let noSuchGroup = error("ResourceNotFoundException", "The specified log group does not exist.")

    /// The log group a request names (whether or not it exists).
    static func groupName(_ body: [String: Any]) throws -> String {
        guard
            let g = body["logGroupName"] as? String
                ?? (body["logGroupIdentifier"] as? String).map({ $0.components(separatedBy: ":log-group:").last! })
        else {
            throw Self.error("InvalidParameterException", "logGroupName is required.")
        }
        return g
    }

    /// The log group a request names, which must be one of the caller's account.
    func requireGroup(_ body: [String: Any], account: String) throws -> String {
        let g = try Self.groupName(body)
        guard try logs.hasGroup(account: account, g) else { throw Self.noSuchGroup }
        return g
    }

    static func limit(_ body: [String: Any], default d: Int, max m: Int) throws -> Int {
        guard let l = body["limit"] else { return d }
        guard let n = l as? Int, (1...m).contains(n) else {
            throw Self.error("InvalidParameterException", "limit must be between 1 and \(m).")
        }
        return n
    }

    func describeGroups(_ body: [String: Any], account: String) throws -> [String: Any] {
        let limit = try Self.limit(body, default: 50, max: 50)
        let after = body["nextToken"] as? String
        let all = try logs.groups(account: account, prefix: body["logGroupNamePrefix"] as? String)
            .filter { after == nil || $0.name > after! }
        let page = all.prefix(limit)
        var out: [String: Any] = [
            "logGroups": page.map { g -> [String: Any] in
                var d: [String: Any] = [
                    "logGroupName": g.name, "creationTime": g.created, "arn": groupARN(g.name, account) + ":*",
                    "storedBytes": g.storedBytes, "logGroupClass": "STANDARD",
                ]
                // What applies: the group's own policy, else the daemon's (absent: kept forever).
                if let days = g.retentionDays ?? defaultRetentionDays { d["retentionInDays"] = days }
                return d
            }
        ]
        if all.count > limit, let last = page.last { out["nextToken"] = last.name }
        return out
    }

    /// PutRetentionPolicy (`days`) and DeleteRetentionPolicy (nil); the store checks that the
    /// group exists in the same transaction.
    func setRetention(_ body: [String: Any], account: String, put: Bool) throws -> [String: Any] {
        let g = try Self.groupName(body)
        var days: Int?
        if put {
            guard let d = body["retentionInDays"] as? Int, Self.retentionDays.contains(d) else {
                throw Self.error(
                    "InvalidParameterException",
                    "1 validation error detected: Value '\(body["retentionInDays"].map { "\($0)" } ?? "null")' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: [\(Self.retentionDays.map(String.init).joined(separator: ", "))]"
                )
            }
            days = d
        }
        guard try logs.setRetention(account: account, group: g, days: days) else { throw Self.noSuchGroup }
        return [:]
    }

    func describeStreams(_ body: [String: Any], account: String) throws -> [String: Any] {
        let g = try requireGroup(body, account: account)
        let limit = try Self.limit(body, default: 50, max: 50)
        let newest = (body["orderBy"] as? String) == "LastEventTime" && (body["descending"] as? Bool) == true
        let streams = try logs.streams(
            account: account, group: g, prefix: body["logStreamNamePrefix"] as? String, newestFirst: newest, limit: limit)
        return [
            "logStreams": streams.map {
                [
                    "logStreamName": $0.name, "creationTime": $0.created, "firstEventTimestamp": $0.created,
                    "lastEventTimestamp": $0.lastEvent, "lastIngestionTime": $0.lastEvent, "storedBytes": $0.storedBytes,
                    "arn": groupARN(g, account) + ":log-stream:" + $0.name,
                ] as [String: Any]
            }
        ]
    }

    static func token(_ t: Any?) -> Int64? {
        guard let s = t as? String else { return nil }
        return Int64(s.drop { !$0.isNumber })
    }

    func getEvents(_ body: [String: Any], account: String) throws -> [String: Any] {
        let g = try requireGroup(body, account: account)
        guard let stream = body["logStreamName"] as? String else {
            throw Self.error("InvalidParameterException", "logStreamName is required.")
        }
        let limit = try Self.limit(body, default: 10_000, max: 10_000)
        let after = Self.token(body["nextToken"])
        let events = try logs.events(
            account: account, group: g, streams: [stream], start: (body["startTime"] as? Int).map(Int64.init),
            end: (body["endTime"] as? Int).map(Int64.init), contains: nil, afterID: after, limit: limit)
        let last = events.last?.id ?? after ?? 0
        return [
            "events": events.map { ["timestamp": $0.timestamp, "message": $0.message, "ingestionTime": $0.ingested] as [String: Any] },
            "nextForwardToken": "f/\(last)", "nextBackwardToken": "b/\(last)",
        ]
    }

    func filterEvents(_ body: [String: Any], account: String) throws -> [String: Any] {
        let g = try requireGroup(body, account: account)
        let limit = try Self.limit(body, default: 10_000, max: 10_000)
        var pattern = body["filterPattern"] as? String
        if let p = pattern, p.hasPrefix("\""), p.hasSuffix("\""), p.count >= 2 { pattern = String(p.dropFirst().dropLast()) }
        let events = try logs.events(
            account: account, group: g, streams: body["logStreamNames"] as? [String],
            start: (body["startTime"] as? Int).map(Int64.init), end: (body["endTime"] as? Int).map(Int64.init),
            contains: pattern, afterID: Self.token(body["nextToken"]), limit: limit + 1)
        var out: [String: Any] = [
            "events": events.prefix(limit).map {
                [
                    "logStreamName": $0.stream, "timestamp": $0.timestamp, "message": $0.message, "ingestionTime": $0.ingested,
                    "eventId": "\($0.id)",
                ] as [String: Any]
            }, "searchedLogStreams": [] as [Any],
        ]
        if events.count > limit, let last = events.prefix(limit).last { out["nextToken"] = "n/\(last.id)" }
        return out
    }
}
