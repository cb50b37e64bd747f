import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import NIOCore
import PetrelCore
import PetrelSigV4
import PetrelSources
import PetrelStore

/// Object-store notifications: a bucket's notification configuration (S3's
/// `LambdaFunctionConfigurations`, kept by Petrel since the stores do not call functions),
/// `PUT|GET /petrel/buckets/{store}/{bucket}/notification`, signed; and the endpoint the
/// store pushes its events to, `POST /petrel/object-events/{store}` with the store's bearer
/// token. Each object event becomes S3's record and an asynchronous invocation of every
/// function configured for its bucket and event type whose resource policy lets
/// `s3.amazonaws.com` in for the bucket, as on Lambda.
extension LambdaAPI {
    static let bucketsPath = "/petrel/buckets"
    static let objectEventsPath = "/petrel/object-events"
    static let maxObjectEvent = 1_048_576

    func registerObjectEvents(on router: Router<PetrelRequestContext>) {
        let path = Self.bucketsPath + "/{store}/{bucket}/notification"
        router.put(RouterPath(path)) { req, ctx in await handle(req, ctx, "PutBucketNotificationConfiguration", self.putNotification) }
        router.get(RouterPath(path)) { req, ctx in await handle(req, ctx, "GetBucketNotificationConfiguration", self.getNotification) }
        router.post(RouterPath(Self.objectEventsPath + "/{store}")) { req, ctx in
            await withTaskExecutorPreference(globalConcurrentExecutor) { await self.objectEvents(req, ctx) }
        }
    }

    struct NotificationShape: Codable {
        struct Rule: Codable {
            var Name: String?
            var Value: String?
        }
        struct KeyFilter: Codable { var FilterRules: [Rule]? }
        struct Filter: Codable { var Key: KeyFilter? }
        struct FunctionConfiguration: Codable {
            var Id: String?
            var LambdaFunctionArn: String?
            var Events: [String]?
            var Filter: Filter?
        }
        var LambdaFunctionConfigurations: [FunctionConfiguration]?
        var QueueConfigurations: [FunctionConfiguration]?
        var TopicConfigurations: [FunctionConfiguration]?
    }

    /// The store and bucket of the path, the store one the operator configured.
    func bucketTarget(_ ctx: PetrelRequestContext) throws -> (store: String, bucket: String) {
        let store = SigV4.percentDecoded(ctx.parameters.get("store") ?? "")
        let bucket = SigV4.percentDecoded(ctx.parameters.get("bucket") ?? "")
        guard objectStores.tokens[store] != nil else {
            throw LambdaError(.resourceNotFound, "The object store \(store) is not one the operator configured (object_stores).")
        }
        guard BucketNotification.isValidBucket(bucket) else {
            throw LambdaError(.invalidParameterValue, "\(bucket) is not a valid bucket name.")
        }
        return (store, bucket)
    }

    func putNotification(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let (store, bucket) = try bucketTarget(ctx)
        guard let buckets else { throw LambdaError(.service, "Object-store notifications are not served here.") }
        let input = try Self.decode(NotificationShape.self, call.body)
        if input.QueueConfigurations?.isEmpty == false || input.TopicConfigurations?.isEmpty == false {
            throw LambdaError(.invalidParameterValue, "Only LambdaFunctionConfigurations are supported.")
        }
        var targets: [BucketNotification.FunctionTarget] = []
        for c in input.LambdaFunctionConfigurations ?? [] {
            guard let arn = c.LambdaFunctionArn else { throw LambdaError(.invalidParameterValue, "LambdaFunctionArn is required.") }
            let ref = try FunctionReference(parsing: arn)
            if let a = ref.account, a != call.caller.account {
                throw LambdaError(.invalidParameterValue, "A bucket notifies functions of its own account.")
            }
            let f = try catalog.resolve(ref, caller: call.caller)
            guard allowsS3(f, qualifier: ref.qualifier, bucket: bucket, account: call.caller.account) else {
                throw LambdaError(
                    .invalidParameterValue,
                    "Unable to validate the following destination configurations: \(arn) does not let s3.amazonaws.com invoke it for arn:aws:s3:::\(bucket) (AddPermission)."
                )
            }
            let events = c.Events ?? []
            guard !events.isEmpty, events.allSatisfy(BucketNotification.eventTypes.contains) else {
                throw LambdaError(
                    .invalidParameterValue, "Events takes \(BucketNotification.eventTypes.sorted().joined(separator: ", ")).")
            }
            var prefix: String?
            var suffix: String?
            for r in c.Filter?.Key?.FilterRules ?? [] {
                switch r.Name?.lowercased() {
                case "prefix" where prefix == nil: prefix = r.Value ?? ""
                case "suffix" where suffix == nil: suffix = r.Value ?? ""
                default: throw LambdaError(.invalidParameterValue, "FilterRules take one prefix and one suffix.")
                }
            }
            let id = c.Id ?? FastIDs.uuid()
            guard (1...255).contains(id.utf8.count), !targets.contains(where: { $0.id == id }) else {
                throw LambdaError(.invalidParameterValue, "Each configuration needs its own Id (1 to 255 characters).")
            }
            targets.append(.init(id: id, function: f.name, qualifier: ref.qualifier, events: events, prefix: prefix, suffix: suffix))
        }
        guard targets.count <= 100 else { throw LambdaError(.invalidParameterValue, "A bucket takes at most 100 configurations.") }
        let n = BucketNotification(store: store, bucket: bucket, account: call.caller.account, functions: targets)
        if try buckets.put(n) != nil {
            throw LambdaError(.resourceConflict, "Another account configures the notifications of the bucket \(bucket) on \(store).")
        }
        return APIResponse.json(shape(n))
    }

    func getNotification(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let (store, bucket) = try bucketTarget(ctx)
        guard let n = try buckets?.get(store: store, bucket: bucket), n.account == call.caller.account else {
            return APIResponse.json(NotificationShape(LambdaFunctionConfigurations: []))
        }
        return APIResponse.json(shape(n))
    }

    func shape(_ n: BucketNotification) -> NotificationShape {
        NotificationShape(
            LambdaFunctionConfigurations: n.functions.map { t in
                var rules: [NotificationShape.Rule] = []
                if let p = t.prefix { rules.append(.init(Name: "Prefix", Value: p)) }
                if let s = t.suffix { rules.append(.init(Name: "Suffix", Value: s)) }
                return .init(
                    Id: t.id,
                    LambdaFunctionArn: FunctionARN(region: region, account: n.account, name: t.function, qualifier: t.qualifier)
                        .description,
                    Events: t.events, Filter: rules.isEmpty ? nil : .init(Key: .init(FilterRules: rules)))
            })
    }

    /// Whether a function's resource policy lets S3 invoke it for the bucket.
    func allowsS3(_ f: FunctionRecord, qualifier: String?, bucket: String, account: String) -> Bool {
        (f.policy ?? []).contains {
            $0.guards(qualifier) && $0.allowsService("s3.amazonaws.com", sourceArn: "arn:aws:s3:::\(bucket)", sourceAccount: account)
        }
    }

    /// A store's notification: authenticated by its token, parsed, routed, and answered once
    /// every invocation it makes is queued durably (so the store's own retries cover a failure).
    func objectEvents(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        let store = SigV4.percentDecoded(ctx.parameters.get("store") ?? "")
        func refuse(_ status: HTTPResponse.Status, _ message: String) -> Response {
            Counter(label: "petrel_object_events_total", dimensions: [("store", store), ("outcome", "refused")]).increment()
            return APIResponse.json(["message": message], status: status)
        }
        guard let token = objectStores.tokens[store], let buckets else {
            return refuse(.notFound, "The object store \(store) is not one the operator configured (object_stores).")
        }
        let given = req.headers[.authorization].flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil } ?? ""
        guard Self.sameToken(given, token) else { return refuse(.unauthorized, "The object store's bearer token is missing or wrong.") }
        let body: ByteBuffer
        do { body = try await req.body.collect(upTo: Self.maxObjectEvent) } catch {
            return refuse(.contentTooLarge, "An object event is at most \(Self.maxObjectEvent) bytes.")
        }
        let now = events.settings.clock.nowMillis()
        let parsed: [ObjectEvent]
        do { parsed = try ObjectEvent.parse(Data(body.readableBytesView), now: now) } catch {
            return refuse(.badRequest, error.message)
        }
        var queued: [QueuedEvent] = []
        var outcomes: [String: Int] = [:]
        for e in parsed {
            guard let n = try? buckets.get(store: store, bucket: e.bucket) else {
                outcomes["unrouted", default: 0] += 1
                continue
            }
            for t in n.functions where t.wants(e.eventName, key: e.key) {
                guard let f = try? catalog.functions.get(account: n.account, t.function),
                    allowsS3(f, qualifier: t.qualifier, bucket: e.bucket, account: n.account)
                else {
                    outcomes["denied", default: 0] += 1
                    logger.warning(
                        "an object event was not delivered: the function is gone or its policy does not let s3.amazonaws.com in",
                        metadata: ["bucket": "\(e.bucket)", "function": "\(t.function)"])
                    continue
                }
                let record = e.s3Record(configurationID: t.id, region: region, sequence: UInt64(now) &* 1000 &+ UInt64(queued.count))
                guard let payload = try? JSONSerialization.data(withJSONObject: ["Records": [record]], options: [.withoutEscapingSlashes])
                else { continue }
                var q = QueuedEvent(
                    id: FastIDs.uuid(), account: n.account, function: t.function, payload: payload, created: now, source: "s3")
                q.qualifier = t.qualifier
                queued.append(q)
            }
        }
        do { try await events.accept(queued) } catch {
            return refuse(.serviceUnavailable, "The events could not be queued: \(error)")
        }
        outcomes["delivered"] = queued.count
        for (outcome, n) in outcomes where n > 0 {
            Counter(label: "petrel_object_events_total", dimensions: [("store", store), ("outcome", outcome)]).increment(by: Int64(n))
        }
        return APIResponse.json(["events": parsed.count, "invocations": queued.count])
    }

    /// Compares tokens in time that does not depend on where they differ.
    static func sameToken(_ a: String, _ b: String) -> Bool {
        Data(SHA256.hash(data: Data(a.utf8))) == Data(SHA256.hash(data: Data(b.utf8)))
    }
}
