import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PetrelStore

/// The part of the CloudWatch Logs API (JSON 1.1, `POST /` with `X-Amz-Target:
/// Logs_20140328.…`) that reads function logs back: `aws logs
/// describe-log-groups|describe-log-streams|get-log-events|filter-log-events|tail`.
public struct LogsAPI: Sendable {
    let logs: LogStore
    let region: String
    let account: String

    public init(logs: LogStore, region: String, account: String) {
        self.logs = logs
        self.region = region
        self.account = account
    }

    public func register(on router: Router<BasicRequestContext>) {
        router.post("/") { req, _ in await self.dispatch(req) }
    }

    func dispatch(_ req: Request) async -> Response {
        guard let target = req.headers[.amzTarget], target.hasPrefix("Logs_20140328.") else {
            return APIResponse.json11Error("UnknownOperationException", "Petrel serves the Lambda REST API and CloudWatch Logs (X-Amz-Target: Logs_20140328.*) only.", status: 404)
        }
        let op = String(target.dropFirst("Logs_20140328.".count))
        let body: [String: Any]
        do {
            let buf = try await req.body.collect(upTo: 1_048_576)
            body = (buf.readableBytes == 0 ? [:] : try JSONSerialization.jsonObject(with: Data(buffer: buf)) as? [String: Any]) ?? [:]
        } catch {
            return APIResponse.json11Error("SerializationException", "The request body is not a JSON object.")
        }
        do {
            let out: [String: Any]
            switch op {
            case "DescribeLogGroups": out = try describeGroups(body)
            case "DescribeLogStreams": out = try describeStreams(body)
            case "GetLogEvents": out = try getEvents(body)
            case "FilterLogEvents": out = try filterEvents(body)
            default:
                return APIResponse.json11Error("UnknownOperationException", "Petrel does not implement \(op) of CloudWatch Logs.")
            }
            let data = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys])
            var h = HTTPFields()
            h[.contentType] = "application/x-amz-json-1.1"
            return Response(status: .ok, headers: h, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
        } catch let e as LogsError {
            return APIResponse.json11Error(e.code, e.message)
        } catch {
            return APIResponse.json11Error("ServiceUnavailableException", "\(error)", status: 500)
        }
    }

    struct LogsError: Error {
        var code: String
        var message: String
    }

    func groupARN(_ g: String) -> String { "arn:aws:logs:\(region):\(account):log-group:\(g)" }

    func requireGroup(_ body: [String: Any]) throws -> String {
        guard let g = body["logGroupName"] as? String ?? (body["logGroupIdentifier"] as? String).map({ $0.components(separatedBy: ":log-group:").last! }) else {
            throw LogsError(code: "InvalidParameterException", message: "logGroupName is required.")
        }
        guard try logs.groups(prefix: g).contains(where: { $0.name == g }) else {
            throw LogsError(code: "ResourceNotFoundException", message: "The specified log group does not exist.")
        }
        return g
    }

    static func limit(_ body: [String: Any], default d: Int, max m: Int) throws -> Int {
        guard let l = body["limit"] else { return d }
        guard let n = l as? Int, (1...m).contains(n) else {
            throw LogsError(code: "InvalidParameterException", message: "limit must be between 1 and \(m).")
        }
        return n
    }

    func describeGroups(_ body: [String: Any]) throws -> [String: Any] {
        let limit = try Self.limit(body, default: 50, max: 50)
        let after = body["nextToken"] as? String
        let all = try logs.groups(prefix: body["logGroupNamePrefix"] as? String).filter { after == nil || $0.name > after! }
        let page = all.prefix(limit)
        var out: [String: Any] = ["logGroups": page.map {
            ["logGroupName": $0.name, "creationTime": $0.created, "arn": groupARN($0.name) + ":*", "storedBytes": 0, "logGroupClass": "STANDARD"] as [String: Any]
        }]
        if all.count > limit, let last = page.last { out["nextToken"] = last.name }
        return out
    }

    func describeStreams(_ body: [String: Any]) throws -> [String: Any] {
        let g = try requireGroup(body)
        let limit = try Self.limit(body, default: 50, max: 50)
        let newest = (body["orderBy"] as? String) == "LastEventTime" && (body["descending"] as? Bool) == true
        let streams = try logs.streams(group: g, prefix: body["logStreamNamePrefix"] as? String, newestFirst: newest, limit: limit)
        return ["logStreams": streams.map {
            ["logStreamName": $0.name, "creationTime": $0.created, "firstEventTimestamp": $0.created,
             "lastEventTimestamp": $0.lastEvent, "lastIngestionTime": $0.lastEvent, "storedBytes": 0,
             "arn": groupARN(g) + ":log-stream:" + $0.name] as [String: Any]
        }]
    }

    static func token(_ t: Any?) -> Int64? {
        guard let s = t as? String else { return nil }
        return Int64(s.drop { !$0.isNumber })
    }

    func getEvents(_ body: [String: Any]) throws -> [String: Any] {
        let g = try requireGroup(body)
        guard let stream = body["logStreamName"] as? String else {
            throw LogsError(code: "InvalidParameterException", message: "logStreamName is required.")
        }
        let limit = try Self.limit(body, default: 10_000, max: 10_000)
        let after = Self.token(body["nextToken"])
        let events = try logs.events(group: g, streams: [stream], start: (body["startTime"] as? Int).map(Int64.init),
                                     end: (body["endTime"] as? Int).map(Int64.init), contains: nil, afterID: after, limit: limit)
        let last = events.last?.id ?? after ?? 0
        return ["events": events.map { ["timestamp": $0.timestamp, "message": $0.message, "ingestionTime": $0.ingested] as [String: Any] },
                "nextForwardToken": "f/\(last)", "nextBackwardToken": "b/\(last)"]
    }

    func filterEvents(_ body: [String: Any]) throws -> [String: Any] {
        let g = try requireGroup(body)
        let limit = try Self.limit(body, default: 10_000, max: 10_000)
        var pattern = body["filterPattern"] as? String
        if let p = pattern, p.hasPrefix("\""), p.hasSuffix("\""), p.count >= 2 { pattern = String(p.dropFirst().dropLast()) }
        let events = try logs.events(group: g, streams: body["logStreamNames"] as? [String],
                                     start: (body["startTime"] as? Int).map(Int64.init), end: (body["endTime"] as? Int).map(Int64.init),
                                     contains: pattern, afterID: Self.token(body["nextToken"]), limit: limit + 1)
        var out: [String: Any] = ["events": events.prefix(limit).map {
            ["logStreamName": $0.stream, "timestamp": $0.timestamp, "message": $0.message, "ingestionTime": $0.ingested, "eventId": "\($0.id)"] as [String: Any]
        }, "searchedLogStreams": [] as [Any]]
        if events.count > limit, let last = events.prefix(limit).last { out["nextToken"] = "n/\(last.id)" }
        return out
    }
}
