import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PetrelCore
import PetrelRuntime
import PetrelSigV4
import PetrelStore

/// The Lambda REST API (`/2015-03-31/functions…`, `/2016-08-19/account-settings`).
public struct LambdaAPI: Sendable {
    let catalog: FunctionCatalog
    let dispatcher: Dispatcher
    let events: EventService
    let gate: Gatekeeper
    let codeLinks: CodeLinks
    let region: String
    let logger: Logger
    /// The event loops' executors: invocations run their task on their connection's loop.
    let loops: LoopExecutors?

    /// Sync payloads: 6 MB each way.
    static let maxInvokePayload = 6_291_456
    /// Where functions live in the API's paths.
    static let functionsPath = "/2015-03-31/functions"
    /// The `Server` header of every answer.
    public static let serverName = "petreld"
    /// CreateFunction / UpdateFunctionCode requests (50 MB of ZIP, base64 in JSON).
    static let maxCodeRequest = 69_905_067

    public init(catalog: FunctionCatalog, dispatcher: Dispatcher, events: EventService, gate: Gatekeeper, codeLinks: CodeLinks,
                region: String, loops: LoopExecutors? = nil, logger: Logger) {
        self.loops = loops
        self.catalog = catalog
        self.dispatcher = dispatcher
        self.events = events
        self.gate = gate
        self.codeLinks = codeLinks
        self.region = region
        self.logger = logger
    }

    public func register(on router: Router<PetrelRequestContext>) {
        let fn = Self.functionsPath
        router.post(RouterPath(fn)) { req, ctx in await handle(req, ctx, "CreateFunction", limit: Self.maxCodeRequest, self.createFunction) }
        router.get(RouterPath(fn)) { req, ctx in await handle(req, ctx, "ListFunctions", self.listFunctions) }
        router.get(RouterPath(fn + "/{name}")) { req, ctx in await handle(req, ctx, "GetFunction", self.getFunction) }
        router.get(RouterPath(fn + "/{name}/configuration")) { req, ctx in await handle(req, ctx, "GetFunctionConfiguration", self.getConfiguration) }
        router.put(RouterPath(fn + "/{name}/configuration")) { req, ctx in await handle(req, ctx, "UpdateFunctionConfiguration", self.updateConfiguration) }
        router.put(RouterPath(fn + "/{name}/code")) { req, ctx in await handle(req, ctx, "UpdateFunctionCode", limit: Self.maxCodeRequest, self.updateCode) }
        router.delete(RouterPath(fn + "/{name}")) { req, ctx in await handle(req, ctx, "DeleteFunction", self.deleteFunction) }
        // Invoke (POST …/{name}/invocations) has no route: InvokeChannelHandler answers it in the
        // connection's pipeline, before the router (see `invokeHandler`).
        router.get(RouterPath("/2016-08-19/account-settings")) { req, ctx in await handle(req, ctx, "GetAccountSettings", self.accountSettings) }
        router.put(RouterPath("/2017-10-31/functions/{name}/concurrency")) { req, ctx in await handle(req, ctx, "PutFunctionConcurrency", self.putConcurrency) }
        router.get(RouterPath("/2019-09-30/functions/{name}/concurrency")) { req, ctx in await handle(req, ctx, "GetFunctionConcurrency", self.getConcurrency) }
        router.delete(RouterPath("/2017-10-31/functions/{name}/concurrency")) { req, ctx in await handle(req, ctx, "DeleteFunctionConcurrency", self.deleteConcurrency) }
        let pc = "/2019-09-30/functions/{name}/provisioned-concurrency"
        router.put(RouterPath(pc)) { req, ctx in await handle(req, ctx, "PutProvisionedConcurrencyConfig", self.putProvisioned) }
        router.get(RouterPath(pc)) { req, ctx in await handle(req, ctx, "GetProvisionedConcurrencyConfig", self.getProvisioned) }
        router.delete(RouterPath(pc)) { req, ctx in await handle(req, ctx, "DeleteProvisionedConcurrencyConfig", self.deleteProvisioned) }
        router.post(RouterPath(fn + "/{name}/policy")) { req, ctx in await handle(req, ctx, "AddPermission", self.addPermission) }
        router.get(RouterPath(fn + "/{name}/policy")) { req, ctx in await handle(req, ctx, "GetPolicy", self.getPolicy) }
        router.delete(RouterPath(fn + "/{name}/policy/{sid}")) { req, ctx in await handle(req, ctx, "RemovePermission", self.removePermission) }
        let tags = "/2017-03-31/tags/{arn}"
        router.post(RouterPath(tags)) { req, ctx in await handle(req, ctx, "TagResource", self.tagResource) }
        router.delete(RouterPath(tags)) { req, ctx in await handle(req, ctx, "UntagResource", self.untagResource) }
        router.get(RouterPath(tags)) { req, ctx in await handle(req, ctx, "ListTags", self.listTags) }
        router.get(RouterPath(CodeLinks.route)) { req, ctx in await self.downloadCode(req, ctx) }
        registerEvents(on: router)
        registerSchedules(on: router)
    }

    /// What an operation gets: its request id, the account that called, and the body
    /// (read once, within the operation's limit, before the signature was checked).
    struct Call: Sendable {
        var id: String
        var caller: Caller
        var body: ByteBuffer
    }

    typealias Operation = @Sendable (Request, PetrelRequestContext, Call) async throws -> Response

    /// The actions that invoke a function: their bodies are the function's data (the audit
    /// records their size only), and they run on the event loops, which nothing else may block.
    static let invocations: Set<String> = ["Invoke", "InvokeAsync"]

    /// Invoke, as `InvokeChannelHandler` runs it: its task already runs on the connection's loop.
    func answerInvoke(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        await run(req, ctx, "Invoke", limit: Self.maxInvokePayload, self.invoke)
    }

    /// The handler that answers Invoke in a connection's pipeline (see `InvokeChannelHandler`).
    public func invokeHandler() -> InvokeChannelHandler { InvokeChannelHandler(api: self, logger: logger) }

    /// Runs one operation: reads the body (within the operation's limit), checks the
    /// signature, runs it, maps every failure to Lambda's error shape, logs it with
    /// its request id and records it in the audit trail.
    func handle(_ req: Request, _ ctx: PetrelRequestContext, _ action: String, limit: Int = 1_048_576, _ op: Operation) async -> Response {
        // Invocations (here InvokeAsync; Invoke comes from InvokeChannelHandler) stay on the event
        // loops; everything else may block (SQLite writes, unzipping code) and moves to the global executor.
        guard Self.invocations.contains(action) else {
            return await withTaskExecutorPreference(globalConcurrentExecutor) { await run(req, ctx, action, limit: limit, op) }
        }
        // An invocation stays on its connection's loop (see LoopAffineExecutor).
        guard let here = loops?.executor(for: ctx.eventLoop) else { return await run(req, ctx, action, limit: limit, op) }
        return await withTaskExecutorPreference(here) { await run(req, ctx, action, limit: limit, op) }
    }

    private func run(_ req: Request, _ ctx: PetrelRequestContext, _ action: String, limit: Int, _ op: Operation) async -> Response {
        let requestID = FastIDs.uuid()
        // The request's metadata is attached only when something is logged: setting a
        // logger's metadata formats it again, on every request.
        func log(_ level: Logger.Level, _ message: @autoclosure () -> Logger.Message, _ metadata: Logger.Metadata) {
            guard logger.logLevel <= level else { return }
            logger.log(level: level, message(), metadata: metadata.merging(["request.id": "\(requestID)", "api.action": "\(action)"]) { a, _ in a })
        }
        var caller: Caller?
        var body: ByteBuffer?
        let response: Response
        var errorCode: String?
        do {
            let buffer = try await Self.body(req, limit: limit, operation: action == "Invoke" ? "InvokeFunction" : action)
            body = buffer
            caller = try gate.authenticate(req, body: buffer, service: "lambda")
            var r = try await op(req, ctx, Call(id: requestID, caller: caller!, body: buffer))
            r.headers[.amzRequestID] = requestID
            log(.debug, "ok", ["http.status": "\(r.status.code)"])
            response = r
        } catch let e as LambdaError {
            log(.info, "refused", ["error.type": "\(e.code.rawValue)", "error.message": "\(e.message)"])
            errorCode = e.code.rawValue
            response = APIResponse.error(e, requestID: requestID)
        } catch {
            log(.error, "failed", ["error": "\(error)"])
            errorCode = LambdaError.Code.service.rawValue
            response = APIResponse.error(LambdaError(.service, "Petrel could not complete \(action): \(error)"), requestID: requestID)
        }
        var path: [String: String] = [:]
        if let n = ctx.rawFunctionName { path["FunctionName"] = SigV4.percentDecoded(n) }
        if let a = ctx.parameters.get("arn") { path["Resource"] = SigV4.percentDecoded(a) }
        if let sid = ctx.parameters.get("sid") { path["StatementId"] = SigV4.percentDecoded(sid) }
        if let s = ctx.parameters.get("schedule") { path["Schedule"] = SigV4.percentDecoded(s) }
        let parameters = AuditParameters.describe(query: Gatekeeper.query(req), path: path, body: body,
                                                  payloadIsData: Self.invocations.contains(action))
        gate.record(req, ctx, action: action, caller: caller, resource: path["FunctionName"] ?? path["Resource"] ?? path["Schedule"], parameters: parameters,
                    status: Int(response.status.code), error: errorCode)
        return response
    }

    // MARK: - bodies

    static func body(_ req: Request, limit: Int, operation: String) async throws -> ByteBuffer {
        if let len = req.headers.value(.contentLength).flatMap(Int.init), len > limit {
            throw tooLarge(limit, operation)
        }
        do {
            return try await req.body.collect(upTo: limit)
        } catch {
            throw tooLarge(limit, operation)
        }
    }

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
            throw LambdaError(.invalidRequestContent, "Could not parse request body into json: the body is not a JSON object of the expected shape")
        }
    }

    /// An invocation's event: the body, `{}` when empty; it must be JSON.
    static func payload(_ body: ByteBuffer, field: String) throws -> ByteBuffer {
        if body.readableBytes == 0 { return ByteBuffer(string: "{}") }
        guard (try? JSONSerialization.jsonObject(with: Data(buffer: body), options: [.fragmentsAllowed])) != nil else {
            throw LambdaError(.invalidRequestContent, "Could not parse request body into json: \(field) is not valid JSON")
        }
        return body
    }

    func name(_ ctx: PetrelRequestContext) throws -> String {
        guard let raw = ctx.rawFunctionName else { throw LambdaError(.invalidParameterValue, "FunctionName is required.") }
        return SigV4.percentDecoded(raw)
    }

    func configuration(_ f: FunctionRecord) -> FunctionConfigurationShape {
        FunctionConfigurationShape(f, region: region)
    }

    // MARK: - operations

    func createFunction(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(CreateFunctionInput.self, call.body)
        let f = try catalog.create(input, caller: call.caller)
        return APIResponse.json(configuration(f), status: .created)
    }

    func listFunctions(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let q = req.uri.queryParameters
        var limit = 50
        if let m = q["MaxItems"] {
            guard let n = Int(m), (1...10_000).contains(n) else {
                throw LambdaError.constraint(String(m), at: "maxItems", "Member must have value between 1 and 10000")
            }
            limit = n
        }
        let marker = q["Marker"].map { SigV4.percentDecoded(String($0)) }
        if let marker, !marker.isEmpty, !FunctionReference.isValidName(marker) {
            throw LambdaError(.invalidParameterValue, "The Marker \(marker) is not valid; pass the NextMarker of the previous page.")
        }
        let page = try catalog.functions.list(account: call.caller.account, after: marker, limit: limit + 1)
        let shown = page.prefix(limit)
        return APIResponse.json(ListFunctionsShape(Functions: shown.map(configuration),
                                                   NextMarker: page.count > limit ? shown.last?.name : nil))
    }

    func getFunction(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let f = try catalog.resolve(try name(ctx), qualifier: req.uri.queryParameters["Qualifier"].map(String.init),
                                    caller: call.caller, action: "lambda:GetFunction")
        let base = "\(codeLinks.scheme)://\(req.head.authority ?? "127.0.0.1:9000")"
        return APIResponse.json(GetFunctionShape(Configuration: configuration(f),
                                                 Code: .init(Location: base + codeLinks.path(for: f)),
                                                 Concurrency: f.reservedConcurrency.map { .init(ReservedConcurrentExecutions: $0) },
                                                 Tags: f.account == call.caller.account ? (f.tags ?? [:]) : nil))
    }

    func getConfiguration(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let f = try catalog.resolve(try name(ctx), qualifier: req.uri.queryParameters["Qualifier"].map(String.init),
                                    caller: call.caller, action: "lambda:GetFunctionConfiguration")
        return APIResponse.json(configuration(f))
    }

    func updateConfiguration(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(UpdateFunctionConfigurationInput.self, call.body)
        return APIResponse.json(configuration(try await catalog.updateConfiguration(try name(ctx), input, caller: call.caller)))
    }

    func updateCode(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(UpdateFunctionCodeInput.self, call.body)
        return APIResponse.json(configuration(try await catalog.updateCode(try name(ctx), input, caller: call.caller)))
    }

    func deleteFunction(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        try await catalog.delete(try name(ctx), qualifier: req.uri.queryParameters["Qualifier"].map(String.init), caller: call.caller)
        return Response(status: .noContent)
    }

    func accountSettings(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let s = await dispatcher.snapshot
        return APIResponse.json(AccountSettingsShape(
            AccountLimit: .init(TotalCodeSize: 80_530_636_800, CodeSizeUnzipped: CodeArchive.maxUnzippedBytes,
                                CodeSizeZipped: CodeArchive.maxZippedBytes, ConcurrentExecutions: s.accountLimit,
                                UnreservedConcurrentExecutions: s.unreservedLimit),
            AccountUsage: .init(TotalCodeSize: try catalog.functions.totalCodeSize(account: call.caller.account),
                                FunctionCount: try catalog.functions.count(account: call.caller.account))))
    }

    struct ConcurrencyShape: Codable { var ReservedConcurrentExecutions: Int? }

    func putConcurrency(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(ConcurrencyShape.self, call.body)
        guard let value = input.ReservedConcurrentExecutions else {
            throw LambdaError(.invalidParameterValue, "ReservedConcurrentExecutions is required.")
        }
        let f = try await catalog.setReservedConcurrency(try name(ctx), value, caller: call.caller)
        return APIResponse.json(ConcurrencyShape(ReservedConcurrentExecutions: f.reservedConcurrency))
    }

    func getConcurrency(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let f = try catalog.resolve(try name(ctx), caller: call.caller)
        return APIResponse.json(ConcurrencyShape(ReservedConcurrentExecutions: f.reservedConcurrency))
    }

    func deleteConcurrency(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        _ = try await catalog.setReservedConcurrency(try name(ctx), nil, caller: call.caller)
        return Response(status: .noContent)
    }

    struct ProvisionedInput: Codable { var ProvisionedConcurrentExecutions: Int? }

    struct ProvisionedShape: Encodable {
        var RequestedProvisionedConcurrentExecutions: Int
        var AvailableProvisionedConcurrentExecutions: Int
        var AllocatedProvisionedConcurrentExecutions: Int
        var Status: String
        var StatusReason: String?
        var LastModified: String
    }

    func provisionedShape(_ name: String) async throws -> ProvisionedShape {
        guard let s = await dispatcher.provisionedStatus(name) else {
            throw LambdaError(LambdaError.Code("ProvisionedConcurrencyConfigNotFoundException", status: 404),
                              "No Provisioned Concurrency Config found for this function")
        }
        return ProvisionedShape(RequestedProvisionedConcurrentExecutions: s.requested, AvailableProvisionedConcurrentExecutions: s.available,
                                AllocatedProvisionedConcurrentExecutions: s.allocated, Status: s.status, StatusReason: s.reason,
                                LastModified: FunctionRecord.lambdaTimestamp(s.lastModified))
    }

    func putProvisioned(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(ProvisionedInput.self, call.body)
        guard let n = input.ProvisionedConcurrentExecutions else {
            throw LambdaError(.invalidParameterValue, "ProvisionedConcurrentExecutions is required.")
        }
        let f = try await catalog.setProvisionedConcurrency(try name(ctx), qualifier: req.uri.queryParameters["Qualifier"].map(String.init), n,
                                                            caller: call.caller)
        return APIResponse.json(try await provisionedShape(f.key), status: .accepted)
    }

    func getProvisioned(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let q = req.uri.queryParameters["Qualifier"].map(String.init)
        guard q == "$LATEST" else {
            throw LambdaError(LambdaError.Code("ProvisionedConcurrencyConfigNotFoundException", status: 404),
                              "No Provisioned Concurrency Config found for this function (Petrel configures $LATEST only)")
        }
        let f = try catalog.resolve(try name(ctx), caller: call.caller)
        return APIResponse.json(try await provisionedShape(f.key))
    }

    func deleteProvisioned(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let f = try catalog.resolve(try name(ctx), caller: call.caller)
        _ = try await provisionedShape(f.key) // 404 when there is none
        _ = try await catalog.setProvisionedConcurrency(f.name, qualifier: req.uri.queryParameters["Qualifier"].map(String.init), nil,
                                                        caller: call.caller)
        return Response(status: .noContent)
    }

    /// `Code.Location`: the ZIP, behind a link GetFunction signed (the client fetches it unsigned, as from S3).
    func downloadCode(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        let requestID = FastIDs.uuid()
        let account = ctx.parameters.get("account") ?? "", name = ctx.parameters.get("name") ?? ""
        var errorCode: String?
        let response: Response
        do {
            let q = req.uri.queryParameters
            let hex = try codeLinks.check(account: account, name: name, hex: q["sha"].map(String.init), expires: q["expires"].map(String.init),
                                          signature: q["signature"].map(String.init))
            let zip = try catalog.code.zip(hex: hex)
            var h = HTTPFields()
            h[.contentType] = "application/zip"
            response = Response(status: .ok, headers: h, body: ResponseBody(byteBuffer: ByteBuffer(bytes: zip)))
        } catch let e as LambdaError {
            errorCode = e.code.rawValue
            response = APIResponse.error(e, requestID: requestID)
        } catch {
            errorCode = LambdaError.Code.service.rawValue
            response = APIResponse.error(LambdaError(.service, "Petrel could not read the code: \(error)"), requestID: requestID)
        }
        gate.record(req, ctx, action: "GetFunctionCode", caller: nil, resource: name,
                    parameters: AuditParameters.describe(query: [], path: ["Account": account, "FunctionName": name], body: nil, payloadIsData: false),
                    status: Int(response.status.code), error: errorCode)
        return response
    }

    // MARK: - permissions and tags

    func addPermission(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(FunctionCatalog.PermissionInput.self, call.body)
        let (f, statement) = try catalog.addPermission(try name(ctx), qualifier: req.uri.queryParameters["Qualifier"].map(String.init), input,
                                                       caller: call.caller)
        let resource = FunctionARN(region: region, account: f.account, name: f.name).description
        return APIResponse.json(["Statement": PolicyDocument.json(PolicyDocument.statement(statement, resource: resource))], status: .created)
    }

    func getPolicy(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let (f, list) = try catalog.policy(try name(ctx), qualifier: req.uri.queryParameters["Qualifier"].map(String.init), caller: call.caller)
        let resource = FunctionARN(region: region, account: f.account, name: f.name).description
        return APIResponse.json(["Policy": PolicyDocument.document(list, resource: resource), "RevisionId": f.revisionId])
    }

    func removePermission(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let sid = ctx.parameters.get("sid").map(SigV4.percentDecoded) ?? ""
        let q = req.uri.queryParameters
        try catalog.removePermission(try name(ctx), sid: sid, qualifier: q["Qualifier"].map(String.init), revision: q["RevisionId"].map(String.init),
                                     caller: call.caller)
        return Response(status: .noContent)
    }

    func resourceARN(_ ctx: PetrelRequestContext) -> String {
        SigV4.percentDecoded(ctx.parameters.get("arn") ?? "")
    }

    struct TagsShape: Codable { var Tags: [String: String]? }

    func tagResource(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(TagsShape.self, call.body)
        guard let tags = input.Tags else { throw LambdaError(.invalidParameterValue, "Tags is required.") }
        try catalog.tag(resourceARN(ctx), tags, caller: call.caller)
        return Response(status: .noContent)
    }

    func untagResource(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let keys = SigV4.queryPairs(req.uri.query.map { Substring($0) }).filter { $0.0 == "tagKeys" }.map(\.1)
        guard !keys.isEmpty else { throw LambdaError(.invalidParameterValue, "TagKeys is required.") }
        try catalog.untag(resourceARN(ctx), keys: keys, caller: call.caller)
        return Response(status: .noContent)
    }

    func listTags(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        APIResponse.json(TagsShape(Tags: try catalog.tags(resourceARN(ctx), caller: call.caller)))
    }

    func invoke(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let qualifier = req.uri.query == nil ? nil : req.uri.queryParameters["Qualifier"].map(String.init)
        let invocationType = req.headers.value(.amzInvocationType) ?? "RequestResponse"
        let logType = req.headers.value(.amzLogType) ?? "None"
        guard ["RequestResponse", "Event", "DryRun"].contains(invocationType) else {
            throw LambdaError.constraint(invocationType, at: "invocationType", "Member must satisfy enum value set: [Event, RequestResponse, DryRun]")
        }
        guard ["None", "Tail"].contains(logType) else {
            throw LambdaError.constraint(logType, at: "logType", "Member must satisfy enum value set: [Tail, None]")
        }
        let raw = try name(ctx)
        let ref = try FunctionReference(parsing: raw)
        let f = try catalog.resolve(ref, qualifier: qualifier, caller: call.caller, action: "lambda:InvokeFunction")
        let payload = try Self.payload(call.body, field: "the payload")
        var clientContext: String?
        if let cc = req.headers.value(.amzClientContext) {
            guard let decoded = Data(base64Encoded: cc), decoded.count <= 3583 else {
                throw LambdaError(.invalidParameterValue, "Client context must be a valid Base64-encoded JSON object of at most 3583 bytes.")
            }
            clientContext = String(decoding: decoded, as: UTF8.self)
        }
        switch invocationType {
        case "DryRun":
            return Response(status: .noContent)
        case "Event":
            return try await enqueueEvent(f, payload: payload, call: call)
        default:
            break
        }
        let arn = FunctionARN(region: region, account: f.account, name: f.name, qualifier: qualifier ?? ref.qualifier).description
        var request = InvocationRequest(requestID: call.id, payload: payload, invokedARN: arn, clientContext: clientContext)
        request.wantsLogTail = logType == "Tail"
        let result = try await dispatcher.invoke(f, request)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.amzExecutedVersion] = result.executedVersion
        if let fe = result.functionError { headers[.amzFunctionError] = fe }
        if logType == "Tail" { headers[.amzLogResult] = Data(result.logTail.utf8).base64EncodedString() }
        // Petrel's own: lets load tools count cold starts without asking for the log.
        if let initMs = result.initDurationMs { headers[.petrelInitDuration] = String(format: "%.2f", initMs) }
        if let p = result.phases {
            headers[.petrelSandboxMs] = String(format: "%.2f", p.sandboxMs)
            if let r = p.runtimeStartMs { headers[.petrelRuntimeStartMs] = String(format: "%.2f", r) }
            if let f = p.functionInitMs { headers[.petrelFunctionInitMs] = String(format: "%.2f", f) }
        }
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: result.payload))
    }
}
