import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PetrelCore
import PetrelMessaging
import PetrelRuntime
import PetrelSigV4
import PetrelSources
import PetrelStore

/// The Lambda REST API (`/2015-03-31/functions…`, `/2016-08-19/account-settings`).
public struct LambdaAPI: Sendable {
    let catalog: FunctionCatalog
    let dispatcher: Dispatcher
    let events: EventService
    /// Petrel's SQS queues (the sources of event source mappings) and the mappings' runner.
    let queues: QueueService
    let mappings: MappingService
    /// SNS topics (on-failure destinations of stream mappings).
    let topics: TopicStore?
    /// Object stores that push events, and the buckets' notification configurations.
    let objectStores: ObjectStores
    let buckets: BucketNotificationStore?
    let gate: Gatekeeper
    let pipeline: RequestPipeline
    let codeLinks: CodeLinks
    let urlAddressing: URLAddressing
    let region: String
    let logger: Logger
    /// The event loops' executors: invocations run their task on their connection's loop.
    let loops: LoopExecutors?

    /// Sync payloads: 6 MB each way.
    static let maxInvokePayload = 6_291_456
    /// Where functions live in the API's paths.
    static let functionsPath = "/2015-03-31/functions"
    /// The `Server` header of every answer.
    public static let serverName = "petreld/" + PetrelVersion.version
    /// CreateFunction / UpdateFunctionCode requests (50 MB of ZIP, base64 in JSON).
    static let maxCodeRequest = 69_905_067

    public init(
        catalog: FunctionCatalog, dispatcher: Dispatcher, events: EventService, queues: QueueService, mappings: MappingService,
        topics: TopicStore? = nil, objectStores: ObjectStores = ObjectStores(), buckets: BucketNotificationStore? = nil,
        gate: Gatekeeper, codeLinks: CodeLinks, urlAddressing: URLAddressing, region: String,
        loops: LoopExecutors? = nil, logger: Logger
    ) {
        self.queues = queues
        self.mappings = mappings
        self.topics = topics
        self.objectStores = objectStores
        self.buckets = buckets
        self.urlAddressing = urlAddressing
        self.loops = loops
        self.catalog = catalog
        self.dispatcher = dispatcher
        self.events = events
        self.gate = gate
        pipeline = RequestPipeline(gate: gate, logger: logger)
        self.codeLinks = codeLinks
        self.region = region
        self.logger = logger
    }

    public func register(on router: Router<PetrelRequestContext>) {
        let fn = Self.functionsPath
        router.post(RouterPath(fn)) { req, ctx in await handle(req, ctx, "CreateFunction", limit: Self.maxCodeRequest, self.createFunction)
        }
        router.get(RouterPath(fn)) { req, ctx in await handle(req, ctx, "ListFunctions", self.listFunctions) }
        router.get(RouterPath(fn + "/{name}")) { req, ctx in await handle(req, ctx, "GetFunction", self.getFunction) }
        router.get(RouterPath(fn + "/{name}/configuration")) { req, ctx in
            await handle(req, ctx, "GetFunctionConfiguration", self.getConfiguration)
        }
        router.put(RouterPath(fn + "/{name}/configuration")) { req, ctx in
            await handle(req, ctx, "UpdateFunctionConfiguration", self.updateConfiguration)
        }
        router.put(RouterPath(fn + "/{name}/code")) { req, ctx in
            await handle(req, ctx, "UpdateFunctionCode", limit: Self.maxCodeRequest, self.updateCode)
        }
        router.delete(RouterPath(fn + "/{name}")) { req, ctx in await handle(req, ctx, "DeleteFunction", self.deleteFunction) }
        // Invoke (POST …/{name}/invocations) has no route: FastPathHandler answers it in the
        // connection's pipeline, before the router (see `invokeHandler`).
        router.get(RouterPath("/2016-08-19/account-settings")) { req, ctx in
            await handle(req, ctx, "GetAccountSettings", self.accountSettings)
        }
        router.put(RouterPath("/2017-10-31/functions/{name}/concurrency")) { req, ctx in
            await handle(req, ctx, "PutFunctionConcurrency", self.putConcurrency)
        }
        router.get(RouterPath("/2019-09-30/functions/{name}/concurrency")) { req, ctx in
            await handle(req, ctx, "GetFunctionConcurrency", self.getConcurrency)
        }
        router.delete(RouterPath("/2017-10-31/functions/{name}/concurrency")) { req, ctx in
            await handle(req, ctx, "DeleteFunctionConcurrency", self.deleteConcurrency)
        }
        let pc = "/2019-09-30/functions/{name}/provisioned-concurrency"
        router.put(RouterPath(pc)) { req, ctx in await handle(req, ctx, "PutProvisionedConcurrencyConfig", self.putProvisioned) }
        router.get(RouterPath(pc)) { req, ctx in await handle(req, ctx, "GetProvisionedConcurrencyConfig", self.getProvisioned) }
        router.delete(RouterPath(pc)) { req, ctx in await handle(req, ctx, "DeleteProvisionedConcurrencyConfig", self.deleteProvisioned) }
        router.post(RouterPath(fn + "/{name}/policy")) { req, ctx in await handle(req, ctx, "AddPermission", self.addPermission) }
        router.get(RouterPath(fn + "/{name}/policy")) { req, ctx in await handle(req, ctx, "GetPolicy", self.getPolicy) }
        router.delete(RouterPath(fn + "/{name}/policy/{sid}")) { req, ctx in
            await handle(req, ctx, "RemovePermission", self.removePermission)
        }
        let tags = "/2017-03-31/tags/{arn}"
        router.post(RouterPath(tags)) { req, ctx in await handle(req, ctx, "TagResource", self.tagResource) }
        router.delete(RouterPath(tags)) { req, ctx in await handle(req, ctx, "UntagResource", self.untagResource) }
        router.get(RouterPath(tags)) { req, ctx in await handle(req, ctx, "ListTags", self.listTags) }
        router.get(RouterPath(CodeLinks.route)) { req, ctx in await self.downloadCode(req, ctx) }
        registerEvents(on: router)
        registerSchedules(on: router)
        registerObjectEvents(on: router)
        registerVersions(on: router)
        registerLayers(on: router)
        registerURLs(on: router)
        registerMappings(on: router)
        router.post(RouterPath("/2021-11-15/functions/{name}/response-streaming-invocations")) { req, ctx in
            await handle(req, ctx, "InvokeWithResponseStream", limit: Self.maxInvokePayload, self.invokeWithResponseStream)
        }
    }

    typealias Call = RequestPipeline.Call
    typealias Operation = @Sendable (Request, PetrelRequestContext, Call) async throws -> Response

    /// The actions that invoke a function: their bodies are the function's data (the audit
    /// records their size only), and they run on the event loops, which nothing else may block.
    static let invocations: Set<String> = ["Invoke", "InvokeAsync", "InvokeWithResponseStream"]

    /// Runs one operation through the request pipeline, on the right executor: invocations
    /// (here InvokeAsync; Invoke comes from FastPathHandler) stay on their connection's
    /// event loop (see LoopAffineExecutor); everything else may block (SQLite writes, unzipping
    /// code) and moves to the global executor.
    func handle(_ req: Request, _ ctx: PetrelRequestContext, _ action: String, limit: Int = 1_048_576, _ op: Operation) async -> Response {
        guard Self.invocations.contains(action) else {
            return await withTaskExecutorPreference(globalConcurrentExecutor) { await run(req, ctx, action, limit: limit, op) }
        }
        guard let here = loops?.executor(for: ctx.eventLoop) else { return await run(req, ctx, action, limit: limit, op) }
        return await withTaskExecutorPreference(here) { await run(req, ctx, action, limit: limit, op) }
    }

    func run(_ req: Request, _ ctx: PetrelRequestContext, _ action: String, limit: Int, _ op: Operation) async -> Response {
        await pipeline.run(
            req, ctx, action: action, limit: limit, service: "lambda", style: .restJSON,
            tooLarge: { Self.tooLarge($0, action == "Invoke" ? "InvokeFunction" : action) },
            audit: { body in Self.audit(req, ctx, action: action, body: body) },
            access: { call, _ in [self.access(req, ctx, action: action, caller: call.caller)] }
        ) { call in
            try await op(req, ctx, call)
        }
    }

    /// A Lambda call as the audit trail records it: the names in its path, its query and its body.
    static func audit(_ req: Request, _ ctx: PetrelRequestContext, action: String, body: ByteBuffer?) -> RequestPipeline.Audit {
        var path: [String: String] = [:]
        if let n = ctx.rawFunctionName { path["FunctionName"] = SigV4.percentDecoded(n) }
        if let a = ctx.parameters.get("arn") { path["Resource"] = SigV4.percentDecoded(a) }
        if let sid = ctx.parameters.get("sid") { path["StatementId"] = SigV4.percentDecoded(sid) }
        if let s = ctx.parameters.get("schedule") { path["Schedule"] = SigV4.percentDecoded(s) }
        if let a = ctx.parameters.get("alias") { path["Name"] = SigV4.percentDecoded(a) }
        if let l = ctx.parameters.get("layer") { path["LayerName"] = SigV4.percentDecoded(l) }
        if let v = ctx.parameters.get("version") { path["VersionNumber"] = v }
        if let u = ctx.parameters.get("uuid") { path["UUID"] = u }
        let parameters = AuditParameters.describe(
            query: Gatekeeper.query(req), path: path, body: body,
            payloadIsData: invocations.contains(action))
        return RequestPipeline.Audit(
            resource: path["FunctionName"] ?? path["Resource"] ?? path["Schedule"] ?? path["LayerName"] ?? path["UUID"],
            parameters: parameters)
    }

    /// A Lambda call in IAM's terms: the invocations are `lambda:InvokeFunction`, everything else
    /// `lambda:` and its operation's name; the resource is the function (qualified as the call
    /// is), layer, mapping, schedule or tagged ARN the path names, `*` when it names none.
    func access(_ req: Request, _ ctx: PetrelRequestContext, action: String, caller: Caller) -> RequestPipeline.Access {
        let iamAction = Self.invocations.contains(action) ? "lambda:InvokeFunction" : "lambda:" + action
        let account = caller.account
        var resource = "*"
        if let raw = ctx.rawFunctionName {
            if let ref = try? FunctionReference(parsing: SigV4.percentDecoded(raw)) {
                resource =
                    FunctionARN(
                        region: ref.region ?? region, account: ref.account ?? account, name: ref.name,
                        qualifier: ref.qualifier ?? qualifier(req)
                    ).description
            }
        } else if let l = ctx.parameters.get("layer") {
            let version = ctx.parameters.get("version").map { ":" + $0 } ?? ""
            resource = "arn:aws:lambda:\(region):\(account):layer:\(SigV4.percentDecoded(l))\(version)"
        } else if let arn = ctx.parameters.get("arn") {
            resource = SigV4.percentDecoded(arn)
        } else if let u = ctx.parameters.get("uuid") {
            resource = "arn:aws:lambda:\(region):\(account):event-source-mapping:\(u)"
        } else if let sch = ctx.parameters.get("schedule") {
            resource = "arn:aws:events:\(region):\(account):rule/\(SigV4.percentDecoded(sch))"
        }
        return RequestPipeline.Access(action: iamAction, resource: resource)
    }

    // MARK: - bodies

    static func tooLarge(_ limit: Int, _ operation: String) -> LambdaError {
        operation == "InvokeFunction"
            ? LambdaError(.requestTooLarge, "Request must be smaller than \(limit) bytes for the \(operation) operation")
            : LambdaError(.requestEntityTooLarge, "Request must be smaller than \(limit) bytes for the \(operation) operation")
    }

    static func decode<T: Decodable>(_ type: T.Type, _ body: ByteBuffer) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer: body))
        } catch let DecodingError.typeMismatch(_, ctx), let DecodingError.valueNotFound(_, ctx) {
            let field = ctx.codingPath.map(\.stringValue).joined(separator: ".")
            throw LambdaError(.invalidRequestContent, "Could not parse request body into json: the value of \(field) has the wrong type")
        } catch {
            throw LambdaError(
                .invalidRequestContent, "Could not parse request body into json: the body is not a JSON object of the expected shape")
        }
    }

    func name(_ ctx: PetrelRequestContext) throws -> String {
        guard let raw = ctx.rawFunctionName else { throw LambdaError(.invalidParameterValue, "FunctionName is required.") }
        return SigV4.percentDecoded(raw)
    }

    /// The `Qualifier` query parameter.
    func qualifier(_ req: Request) -> String? {
        req.uri.query == nil ? nil : req.uri.queryParameters["Qualifier"].map { SigV4.percentDecoded(String($0)) }
    }

    func configuration(_ f: FunctionRecord) -> FunctionConfigurationShape {
        FunctionConfigurationShape(f, region: region)
    }
}
