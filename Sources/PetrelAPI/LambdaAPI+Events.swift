import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PetrelCore
import PetrelRuntime
import PetrelStore

/// Asynchronous invocation: `Invoke` with `InvocationType: Event`, the legacy
/// `InvokeAsync`, and the functions' event-invoke configurations.
extension LambdaAPI {
    /// Event payloads: 256 KB.
    static let maxEventPayload = 262_144

    func registerEvents(on router: Router<PetrelRequestContext>) {
        router.post(RouterPath("/2014-11-13/functions/{name}/invoke-async")) { req, ctx in
            await handle(req, ctx, "InvokeAsync", limit: Self.maxInvokePayload, self.invokeAsync)
        }
        let eic = "/2019-09-25/functions/{name}/event-invoke-config"
        router.put(RouterPath(eic)) { req, ctx in await handle(req, ctx, "PutFunctionEventInvokeConfig", self.putEventConfig) }
        router.post(RouterPath(eic)) { req, ctx in await handle(req, ctx, "UpdateFunctionEventInvokeConfig", self.updateEventConfig) }
        router.get(RouterPath(eic)) { req, ctx in await handle(req, ctx, "GetFunctionEventInvokeConfig", self.getEventConfig) }
        router.delete(RouterPath(eic)) { req, ctx in await handle(req, ctx, "DeleteFunctionEventInvokeConfig", self.deleteEventConfig) }
        router.get(RouterPath(eic + "/list")) { req, ctx in await handle(req, ctx, "ListFunctionEventInvokeConfigs", self.listEventConfigs)
        }
    }

    /// Queues an event durably and answers 202 with its request id.
    /// `qualifier`: what the caller named (an alias routes each attempt anew, as Lambda's does).
    func enqueueEvent(_ f: FunctionRecord, qualifier: String?, payload: ByteBuffer, call: Call) async throws -> Response {
        guard payload.readableBytes <= Self.maxEventPayload else {
            throw LambdaError(
                .requestTooLarge, "Request must be smaller than \(Self.maxEventPayload) bytes for the InvokeFunction operation")
        }
        var event = QueuedEvent(
            id: call.id, account: f.account, function: f.name, payload: Data(payload.readableBytesView),
            created: events.settings.clock.nowMillis(), source: "invoke")
        event.qualifier = qualifier == FunctionRecord.latest ? nil : qualifier
        do {
            try await events.accept([event])
        } catch {
            throw LambdaError(.service, "Petrel could not queue the event durably: \(error)")
        }
        return Response(status: .accepted)
    }

    func invokeAsync(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let f = try catalog.resolve(try name(ctx), caller: call.caller, action: "lambda:InvokeFunction")
        var r = try await enqueueEvent(f, qualifier: nil, payload: try Self.payload(call.body, field: "InvokeArgs"), call: call)
        r.body = ResponseBody(byteBuffer: ByteBuffer(string: "{\"Status\":202}"))
        r.headers[.contentType] = "application/json"
        return r
    }

    // MARK: - event-invoke configurations

    struct DestinationShape: Codable { var Destination: String? }
    struct DestinationConfigShape: Codable {
        var OnSuccess: DestinationShape?
        var OnFailure: DestinationShape?
    }
    struct EventConfigInput: Codable {
        var MaximumRetryAttempts: Int?
        var MaximumEventAgeInSeconds: Int?
        var DestinationConfig: DestinationConfigShape?
    }
    struct EventConfigShape: Encodable {
        var LastModified: Double
        var FunctionArn: String
        var MaximumRetryAttempts: Int
        var MaximumEventAgeInSeconds: Int
        var DestinationConfig: DestinationConfigShape
    }

    func eventConfigShape(_ f: FunctionRecord, qualifier: String?, _ c: EventInvokeConfig) -> EventConfigShape {
        EventConfigShape(
            LastModified: c.lastModified.timeIntervalSince1970,
            FunctionArn: FunctionARN(region: region, account: f.account, name: f.name, qualifier: qualifier ?? FunctionRecord.latest)
                .description,
            MaximumRetryAttempts: c.maximumRetryAttempts, MaximumEventAgeInSeconds: c.maximumEventAgeSeconds,
            DestinationConfig: .init(OnSuccess: .init(Destination: c.onSuccess), OnFailure: .init(Destination: c.onFailure)))
    }

    /// The caller's own function, the qualifier (a version or alias that exists; nil for the
    /// function itself) and the key its configuration is stored under.
    func eventConfigTarget(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) throws -> (
        f: FunctionRecord, qualifier: String?, key: String
    ) {
        let ref = try FunctionReference(parsing: try name(ctx))
        let q = try catalog.qualifier(ref, qualifier(req)).flatMap { $0 == FunctionRecord.latest ? nil : $0 }
        _ = try catalog.resolve(ref, qualifier: q, caller: call.caller)
        let f = try catalog.resolve(ref.unqualified, caller: call.caller)
        return (f, q, EventStore.configKey(f.name, qualifier: q))
    }

    /// Applies the input over `base` (Put: the defaults; Update: what is stored), checking every field first.
    func applyEventConfig(_ input: EventConfigInput, over base: EventInvokeConfig, function f: FunctionRecord) throws -> EventInvokeConfig {
        var c = base
        if let n = input.MaximumRetryAttempts {
            try EventInvokeConfig.checkRetries(n)
            c.maximumRetryAttempts = n
        }
        if let n = input.MaximumEventAgeInSeconds {
            try EventInvokeConfig.checkAge(n)
            c.maximumEventAgeSeconds = n
        }
        if let d = input.DestinationConfig {
            func check(_ s: DestinationShape?) throws -> String? {
                guard let arn = s?.Destination, !arn.isEmpty else { return nil }
                try catalog.requireDestination(f, arn) // parses it, and checks the role
                return arn
            }
            if d.OnSuccess != nil { c.onSuccess = try check(d.OnSuccess) }
            if d.OnFailure != nil { c.onFailure = try check(d.OnFailure) }
        }
        c.lastModified = Date()
        return c
    }

    func putEventConfig(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(EventConfigInput.self, call.body)
        let (f, q, key) = try eventConfigTarget(req, ctx, call)
        let c = try applyEventConfig(input, over: EventInvokeConfig(), function: f)
        try events.store.updateConfig(account: f.account, function: key) { _ in c }
        return APIResponse.json(eventConfigShape(f, qualifier: q, c))
    }

    func updateEventConfig(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(EventConfigInput.self, call.body)
        let (f, q, key) = try eventConfigTarget(req, ctx, call)
        let c = try events.store.updateConfig(account: f.account, function: key) { old in
            try applyEventConfig(input, over: old ?? EventInvokeConfig(), function: f)
        }
        return APIResponse.json(eventConfigShape(f, qualifier: q, c!))
    }

    func storedEventConfig(_ f: FunctionRecord, qualifier: String?, key: String) throws -> EventInvokeConfig {
        guard let c = try events.store.config(account: f.account, function: key) else {
            throw LambdaError(
                .resourceNotFound,
                "The function \(FunctionARN(region: region, account: f.account, name: f.name, qualifier: qualifier)) doesn't have an EventInvokeConfig"
            )
        }
        return c
    }

    func getEventConfig(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let (f, q, key) = try eventConfigTarget(req, ctx, call)
        return APIResponse.json(eventConfigShape(f, qualifier: q, try storedEventConfig(f, qualifier: q, key: key)))
    }

    func deleteEventConfig(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let (f, q, key) = try eventConfigTarget(req, ctx, call)
        _ = try storedEventConfig(f, qualifier: q, key: key)
        try events.store.updateConfig(account: f.account, function: key) { _ in nil }
        return Response(status: .noContent)
    }

    struct EventConfigListShape: Encodable {
        var FunctionEventInvokeConfigs: [EventConfigShape]
        var NextMarker: String?
    }

    func listEventConfigs(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        if let m = req.uri.queryParameters["MaxItems"] {
            guard let n = Int(m), (1...50).contains(n) else {
                throw LambdaError.constraint(
                    String(m), at: "maxItems", "Member must have value less than or equal to 50 and greater than or equal to 1")
            }
        }
        let f = try catalog.resolve(try name(ctx), caller: call.caller)
        let list = try events.store.configs(account: f.account, function: f.name).map {
            eventConfigShape(f, qualifier: $0.qualifier, $0.config)
        }
        return APIResponse.json(EventConfigListShape(FunctionEventInvokeConfigs: list, NextMarker: nil))
    }
}
