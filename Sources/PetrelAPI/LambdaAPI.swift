import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PetrelCore
import PetrelRuntime
import PetrelStore

/// The Lambda REST API (`/2015-03-31/functions…`, `/2016-08-19/account-settings`).
public struct LambdaAPI: Sendable {
    let catalog: FunctionCatalog
    let dispatcher: Dispatcher
    let region: String
    let account: String
    let logger: Logger

    /// Sync payloads: 6 MB each way.
    static let maxInvokePayload = 6_291_456
    /// CreateFunction / UpdateFunctionCode requests (50 MB of ZIP, base64 in JSON).
    static let maxCodeRequest = 69_905_067

    public init(catalog: FunctionCatalog, dispatcher: Dispatcher, region: String, account: String, logger: Logger) {
        self.catalog = catalog
        self.dispatcher = dispatcher
        self.region = region
        self.account = account
        self.logger = logger
    }

    public func register(on router: Router<BasicRequestContext>) {
        let fn = "/2015-03-31/functions"
        router.post(RouterPath(fn)) { req, ctx in await handle(req, ctx, "CreateFunction", self.createFunction) }
        router.get(RouterPath(fn)) { req, ctx in await handle(req, ctx, "ListFunctions", self.listFunctions) }
        router.get(RouterPath(fn + "/{name}")) { req, ctx in await handle(req, ctx, "GetFunction", self.getFunction) }
        router.get(RouterPath(fn + "/{name}/configuration")) { req, ctx in await handle(req, ctx, "GetFunctionConfiguration", self.getConfiguration) }
        router.put(RouterPath(fn + "/{name}/configuration")) { req, ctx in await handle(req, ctx, "UpdateFunctionConfiguration", self.updateConfiguration) }
        router.put(RouterPath(fn + "/{name}/code")) { req, ctx in await handle(req, ctx, "UpdateFunctionCode", self.updateCode) }
        router.delete(RouterPath(fn + "/{name}")) { req, ctx in await handle(req, ctx, "DeleteFunction", self.deleteFunction) }
        router.post(RouterPath(fn + "/{name}/invocations")) { req, ctx in await handle(req, ctx, "Invoke", self.invoke) }
        router.get(RouterPath("/2016-08-19/account-settings")) { req, ctx in await handle(req, ctx, "GetAccountSettings", self.accountSettings) }
        router.put(RouterPath("/2017-10-31/functions/{name}/concurrency")) { req, ctx in await handle(req, ctx, "PutFunctionConcurrency", self.putConcurrency) }
        router.get(RouterPath("/2019-09-30/functions/{name}/concurrency")) { req, ctx in await handle(req, ctx, "GetFunctionConcurrency", self.getConcurrency) }
        router.delete(RouterPath("/2017-10-31/functions/{name}/concurrency")) { req, ctx in await handle(req, ctx, "DeleteFunctionConcurrency", self.deleteConcurrency) }
        let pc = "/2019-09-30/functions/{name}/provisioned-concurrency"
        router.put(RouterPath(pc)) { req, ctx in await handle(req, ctx, "PutProvisionedConcurrencyConfig", self.putProvisioned) }
        router.get(RouterPath(pc)) { req, ctx in await handle(req, ctx, "GetProvisionedConcurrencyConfig", self.getProvisioned) }
        router.delete(RouterPath(pc)) { req, ctx in await handle(req, ctx, "DeleteProvisionedConcurrencyConfig", self.deleteProvisioned) }
        router.get(RouterPath("/petrel/code/{name}")) { req, ctx in await handle(req, ctx, "GetFunctionCode", self.downloadCode) }
    }

    typealias Operation = @Sendable (Request, BasicRequestContext, String) async throws -> Response

    /// Runs one operation and maps every failure to Lambda's error shape; logs it with its request id.
    func handle(_ req: Request, _ ctx: BasicRequestContext, _ action: String, _ op: Operation) async -> Response {
        let requestID = FastIDs.uuid()
        var log = logger
        log[metadataKey: "request.id"] = "\(requestID)"
        log[metadataKey: "api.action"] = "\(action)"
        do {
            var r = try await op(req, ctx, requestID)
            r.headers[.amzRequestID] = requestID
            log.debug("ok", metadata: ["http.status": "\(r.status.code)"])
            return r
        } catch let e as LambdaError {
            log.info("refused", metadata: ["error.type": "\(e.code.rawValue)", "error.message": "\(e.message)"])
            return APIResponse.error(e, requestID: requestID)
        } catch {
            log.error("failed", metadata: ["error": "\(error)"])
            return APIResponse.error(LambdaError(.service, "Petrel could not complete \(action): \(error)"), requestID: requestID)
        }
    }

    // MARK: - bodies

    static func body(_ req: Request, limit: Int, operation: String) async throws -> ByteBuffer {
        if let len = req.headers[.contentLength].flatMap(Int.init), len > limit {
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

    static func decode<T: Decodable>(_ type: T.Type, _ req: Request, limit: Int = 1_048_576, operation: String) async throws -> T {
        let buf = try await body(req, limit: limit, operation: operation)
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer: buf))
        } catch let DecodingError.typeMismatch(_, ctx), let DecodingError.valueNotFound(_, ctx) {
            let field = ctx.codingPath.map(\.stringValue).joined(separator: ".")
            throw LambdaError(.invalidRequestContent, "Could not parse request body into json: the value of \(field) has the wrong type")
        } catch {
            throw LambdaError(.invalidRequestContent, "Could not parse request body into json: the body is not a JSON object of the expected shape")
        }
    }

    func name(_ ctx: BasicRequestContext) throws -> String {
        guard let raw = ctx.parameters.get("name") else { throw LambdaError(.invalidParameterValue, "FunctionName is required.") }
        return raw.removingPercentEncoding ?? raw
    }

    func configuration(_ f: FunctionRecord) -> FunctionConfigurationShape {
        FunctionConfigurationShape(f, region: region, account: account)
    }

    // MARK: - operations

    func createFunction(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        let input = try await Self.decode(CreateFunctionInput.self, req, limit: Self.maxCodeRequest, operation: "CreateFunction")
        let f = try catalog.create(input)
        return APIResponse.json(configuration(f), status: .created)
    }

    func listFunctions(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        let q = req.uri.queryParameters
        var limit = 50
        if let m = q["MaxItems"] {
            guard let n = Int(m), (1...10_000).contains(n) else {
                throw LambdaError.constraint(String(m), at: "maxItems", "Member must have value between 1 and 10000")
            }
            limit = n
        }
        let marker = q["Marker"].map { String($0).removingPercentEncoding ?? String($0) }
        if let marker, !marker.isEmpty, !FunctionReference.isValidName(marker) {
            throw LambdaError(.invalidParameterValue, "The Marker \(marker) is not valid; pass the NextMarker of the previous page.")
        }
        let page = try catalog.functions.list(after: marker, limit: limit + 1)
        let shown = page.prefix(limit)
        return APIResponse.json(ListFunctionsShape(Functions: shown.map(configuration),
                                                   NextMarker: page.count > limit ? shown.last?.name : nil))
    }

    func getFunction(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        let f = try catalog.resolve(try name(ctx), qualifier: req.uri.queryParameters["Qualifier"].map(String.init))
        let host = req.head.authority ?? "127.0.0.1:9000"
        return APIResponse.json(GetFunctionShape(Configuration: configuration(f),
                                                 Code: .init(Location: "http://\(host)/petrel/code/\(f.name)"),
                                                 Concurrency: f.reservedConcurrency.map { .init(ReservedConcurrentExecutions: $0) }))
    }

    func getConfiguration(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        let f = try catalog.resolve(try name(ctx), qualifier: req.uri.queryParameters["Qualifier"].map(String.init))
        return APIResponse.json(configuration(f))
    }

    func updateConfiguration(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        let input = try await Self.decode(UpdateFunctionConfigurationInput.self, req, operation: "UpdateFunctionConfiguration")
        return APIResponse.json(configuration(try await catalog.updateConfiguration(try name(ctx), input)))
    }

    func updateCode(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        let input = try await Self.decode(UpdateFunctionCodeInput.self, req, limit: Self.maxCodeRequest, operation: "UpdateFunctionCode")
        return APIResponse.json(configuration(try await catalog.updateCode(try name(ctx), input)))
    }

    func deleteFunction(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        try await catalog.delete(try name(ctx), qualifier: req.uri.queryParameters["Qualifier"].map(String.init))
        return Response(status: .noContent)
    }

    func accountSettings(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        let s = await dispatcher.snapshot
        return APIResponse.json(AccountSettingsShape(
            AccountLimit: .init(TotalCodeSize: 80_530_636_800, CodeSizeUnzipped: CodeArchive.maxUnzippedBytes,
                                CodeSizeZipped: CodeArchive.maxZippedBytes, ConcurrentExecutions: s.accountLimit,
                                UnreservedConcurrentExecutions: s.unreservedLimit),
            AccountUsage: .init(TotalCodeSize: try catalog.functions.totalCodeSize(), FunctionCount: try catalog.functions.count())))
    }

    struct ConcurrencyShape: Codable { var ReservedConcurrentExecutions: Int? }

    func putConcurrency(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        let input = try await Self.decode(ConcurrencyShape.self, req, operation: "PutFunctionConcurrency")
        guard let value = input.ReservedConcurrentExecutions else {
            throw LambdaError(.invalidParameterValue, "ReservedConcurrentExecutions is required.")
        }
        let f = try await catalog.setReservedConcurrency(try name(ctx), value)
        return APIResponse.json(ConcurrencyShape(ReservedConcurrentExecutions: f.reservedConcurrency))
    }

    func getConcurrency(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        let f = try catalog.resolve(try name(ctx))
        return APIResponse.json(ConcurrencyShape(ReservedConcurrentExecutions: f.reservedConcurrency))
    }

    func deleteConcurrency(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        _ = try await catalog.setReservedConcurrency(try name(ctx), nil)
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

    func putProvisioned(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        let input = try await Self.decode(ProvisionedInput.self, req, operation: "PutProvisionedConcurrencyConfig")
        guard let n = input.ProvisionedConcurrentExecutions else {
            throw LambdaError(.invalidParameterValue, "ProvisionedConcurrentExecutions is required.")
        }
        let f = try await catalog.setProvisionedConcurrency(try name(ctx), qualifier: req.uri.queryParameters["Qualifier"].map(String.init), n)
        return APIResponse.json(try await provisionedShape(f.name), status: .accepted)
    }

    func getProvisioned(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        let q = req.uri.queryParameters["Qualifier"].map(String.init)
        guard q == "$LATEST" else {
            throw LambdaError(LambdaError.Code("ProvisionedConcurrencyConfigNotFoundException", status: 404),
                              "No Provisioned Concurrency Config found for this function (Petrel configures $LATEST only)")
        }
        let f = try catalog.resolve(try name(ctx))
        return APIResponse.json(try await provisionedShape(f.name))
    }

    func deleteProvisioned(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        let f = try catalog.resolve(try name(ctx))
        _ = try await provisionedShape(f.name) // 404 when there is none
        _ = try await catalog.setProvisionedConcurrency(f.name, qualifier: req.uri.queryParameters["Qualifier"].map(String.init), nil)
        return Response(status: .noContent)
    }

    func downloadCode(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        let f = try catalog.resolve(try name(ctx))
        let zip = try catalog.code.zip(hex: f.codeDigestHex)
        var h = HTTPFields()
        h[.contentType] = "application/zip"
        return Response(status: .ok, headers: h, body: ResponseBody(byteBuffer: ByteBuffer(bytes: zip)))
    }

    func invoke(_ req: Request, _ ctx: BasicRequestContext, _ id: String) async throws -> Response {
        let qualifier = req.uri.queryParameters["Qualifier"].map(String.init)
        let invocationType = req.headers[.amzInvocationType] ?? "RequestResponse"
        let logType = req.headers[.amzLogType] ?? "None"
        guard ["RequestResponse", "Event", "DryRun"].contains(invocationType) else {
            throw LambdaError.constraint(invocationType, at: "invocationType", "Member must satisfy enum value set: [Event, RequestResponse, DryRun]")
        }
        guard ["None", "Tail"].contains(logType) else {
            throw LambdaError.constraint(logType, at: "logType", "Member must satisfy enum value set: [Tail, None]")
        }
        let raw = try name(ctx)
        let ref = try FunctionReference(parsing: raw)
        let f = try catalog.resolve(ref, qualifier: qualifier)
        var payload = try await Self.body(req, limit: Self.maxInvokePayload, operation: "InvokeFunction")
        if payload.readableBytes == 0 { payload = ByteBuffer(string: "{}") }
        guard (try? JSONSerialization.jsonObject(with: Data(buffer: payload), options: [.fragmentsAllowed])) != nil else {
            throw LambdaError(.invalidRequestContent, "Could not parse request body into json: the payload is not valid JSON")
        }
        var clientContext: String?
        if let cc = req.headers[.amzClientContext] {
            guard let decoded = Data(base64Encoded: cc), decoded.count <= 3583 else {
                throw LambdaError(.invalidParameterValue, "Client context must be a valid Base64-encoded JSON object of at most 3583 bytes.")
            }
            clientContext = String(decoding: decoded, as: UTF8.self)
        }
        switch invocationType {
        case "DryRun":
            return Response(status: .noContent)
        case "Event":
            throw LambdaError(.invalidParameterValue, "InvocationType Event (asynchronous invocation) is not supported by Petrel yet; invoke with RequestResponse.")
        default:
            break
        }
        let arn = FunctionARN(region: region, account: account, name: f.name, qualifier: qualifier ?? ref.qualifier).description
        var request = InvocationRequest(requestID: id, payload: payload, invokedARN: arn, clientContext: clientContext)
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
