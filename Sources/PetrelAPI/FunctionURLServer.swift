import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PetrelCore
import PetrelRuntime
import PetrelStore

/// Serves function URLs on a listener of their own: finds the URL (by host with a
/// configured domain, else by the first path segment), answers CORS preflights,
/// checks the URL's auth type against the function's policy, turns the request into
/// a payload format 2.0 event, invokes, and turns the result into the HTTP answer.
/// Every request is an invocation like any other (limits, metrics, logs, audit).
public struct FunctionURLServer: HTTPResponder {
    public typealias Context = PetrelRequestContext
    let catalog: FunctionCatalog
    let dispatcher: Dispatcher
    let gate: Gatekeeper
    let addressing: URLAddressing
    let region: String
    /// The event loops' executors: a request's task stays on its connection's loop.
    let loops: LoopExecutors?
    let logger: Logger

    public init(
        catalog: FunctionCatalog, dispatcher: Dispatcher, gate: Gatekeeper, addressing: URLAddressing, region: String,
        loops: LoopExecutors? = nil, logger: Logger
    ) {
        self.loops = loops
        self.catalog = catalog
        self.dispatcher = dispatcher
        self.gate = gate
        self.addressing = addressing
        self.region = region
        self.logger = logger
    }

    /// A refusal in the URL's own terms: a status and `{"Message": …}`.
    struct Refusal: Error {
        var status: HTTPResponse.Status
        var message: String
        static let forbidden = Refusal(status: .forbidden, message: "Forbidden")
    }

    static func json(_ status: HTTPResponse.Status, _ message: String) -> Response {
        var h = HTTPFields()
        h[.contentType] = "application/json"
        let body = (try? JSONSerialization.data(withJSONObject: ["Message": message])) ?? Data()
        return Response(status: status, headers: h, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// The URL id a request names and the path the function sees.
    func route(_ req: Request) -> (id: String, rawPath: String, domain: String)? {
        let host = req.head.authority ?? ""
        if let domain = addressing.domain, host.count > domain.count + 1, host.lowercased().hasSuffix("." + domain.lowercased()) {
            let id = host.prefix(host.count - domain.count - 1).lowercased()
            guard FunctionURLConfig.isID(Substring(id)) else { return nil }
            return (id, req.uri.path.isEmpty ? "/" : req.uri.path, host)
        }
        let path = req.uri.path
        let segments = path.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard segments.count >= 2, segments[0].isEmpty else { return nil }
        let rest = segments[1].split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard FunctionURLConfig.isID(rest[0]) else { return nil }
        return (String(rest[0]), rest.count > 1 ? "/" + rest[1] : "/", host)
    }

    /// Every request of the URL listener is answered from its connection's pipeline, as
    /// Invoke is on the API's (its task on the connection's loop, where the instance most
    /// likely serves its Runtime API too); `respond` is the fallback Hummingbird would call.
    public func handler() -> FastPathHandler {
        FastPathHandler(path: FastPath(claim: { _ in "" }, limit: LambdaAPI.maxInvokePayload, answer: serve, loops: loops), logger: logger)
    }

    public func respond(to req: Request, context ctx: PetrelRequestContext) async throws -> Response {
        guard let here = loops?.executor(for: ctx.eventLoop) else { return await serve(req, ctx) }
        return await withTaskExecutorPreference(here) { await serve(req, ctx) }
    }

    @Sendable func serve(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        let requestID = FastIDs.uuid()
        var caller: Caller?
        var url: FunctionURLConfig?
        var response: Response
        do {
            guard let (id, rawPath, domain) = route(req), let u = try catalog.urls.url(id: id) else { throw Refusal.forbidden }
            url = u
            if let preflight = Self.preflight(req, u.cors) {
                response = preflight
            } else {
                let body = try await RequestPipeline.body(req, limit: LambdaAPI.maxInvokePayload) { _ in
                    LambdaError(
                        .requestTooLarge,
                        "Request must be smaller than \(LambdaAPI.maxInvokePayload) bytes for the InvokeFunction operation")
                }
                caller = try authorize(req, u, body: body)
                response = try await invoke(req, ctx, u, rawPath: rawPath, domain: domain, body: body, caller: caller, requestID: requestID)
                Self.addCORS(&response, req, u.cors)
            }
        } catch let r as Refusal {
            response = Self.json(r.status, r.message)
        } catch let e as LambdaError where e.code == .requestTooLarge {
            response = Self.json(.contentTooLarge, e.message)
        } catch let e as RuntimeError where e.code == .throttled {
            response = Self.json(.tooManyRequests, "Rate Exceeded.")
        } catch {
            logger.error("a function URL request failed", metadata: ["request.id": "\(requestID)", "error": "\(error)"])
            response = Self.json(.internalServerError, "Internal Server Error")
        }
        response.headers[.amzRequestID] = requestID
        gate.record(
            req, ctx, action: "InvokeFunctionUrl", caller: caller, resource: url?.function,
            parameters: AuditParameters.describe(
                query: Gatekeeper.query(req), path: ["FunctionUrlId": url?.id ?? "", "Qualifier": url?.qualifier ?? ""], body: nil,
                payloadIsData: true),
            status: Int(response.status.code), error: response.status.code >= 400 ? "\(response.status.code)" : nil)
        return response
    }

    /// NONE: the function's policy must let anyone invoke through an unauthenticated URL (both
    /// `lambda:InvokeFunctionUrl` with `FunctionUrlAuthType: NONE` and `lambda:InvokeFunction`
    /// through a URL). AWS_IAM: a valid signature of the owner's account, or of one its policy
    /// grants `lambda:InvokeFunctionUrl`.
    func authorize(_ req: Request, _ u: FunctionURLConfig, body: ByteBuffer) throws -> Caller? {
        guard let f = try catalog.functions.get(account: u.account, u.function) else { throw Refusal.forbidden }
        let policy = (f.policy ?? []).filter { $0.guards(u.qualifier) }
        switch u.authType {
        case .none:
            let url = policy.contains {
                $0.principal == "*" && $0.allows(account: "", action: "lambda:InvokeFunctionUrl", urlAuthType: "NONE")
            }
            let invoke = policy.contains {
                $0.principal == "*" && $0.allows(account: "", action: "lambda:InvokeFunction", urlAuthType: "NONE")
            }
            guard url && invoke else { throw Refusal.forbidden }
            return nil
        case .awsIAM:
            let caller: Caller
            do { caller = try gate.authenticate(req, body: body, service: "lambda") } catch { throw Refusal.forbidden }
            // A role's session also needs its own policies to allow it.
            let arn = FunctionARN(region: region, account: u.account, name: u.function, qualifier: u.qualifier).description
            do { try gate.authorize(caller, action: "lambda:InvokeFunctionUrl", resource: arn) } catch { throw Refusal.forbidden }
            guard
                caller.account == u.account
                    || policy.contains(where: {
                        $0.allows(account: caller.account, action: "lambda:InvokeFunctionUrl", urlAuthType: "AWS_IAM")
                    })
            else { throw Refusal.forbidden }
            return caller
        }
    }

    func invoke(
        _ req: Request, _ ctx: PetrelRequestContext, _ u: FunctionURLConfig, rawPath: String, domain: String, body: ByteBuffer,
        caller: Caller?, requestID: String
    ) async throws -> Response {
        guard let f = try catalog.functions.resolve(account: u.account, u.function, qualifier: u.qualifier)?.record else {
            throw Refusal.forbidden
        }
        let event = URLPayload.event(
            URLPayload.Request(
                method: req.method.rawValue, rawPath: rawPath, rawQuery: req.uri.query ?? "",
                headers: Self.forwardedHeaders(req, sourceIP: ctx.remoteAddress, scheme: addressing.scheme),
                body: Array(body.readableBytesView),
                sourceIP: ctx.remoteAddress,
                domainName: domain, urlID: u.id, requestID: requestID,
                iam: caller.map { ($0.accessKey, $0.account) }))
        var request = InvocationRequest(
            requestID: requestID, payload: ByteBuffer(bytes: event),
            invokedARN: FunctionARN(region: region, account: f.account, name: f.name, qualifier: u.qualifier).description)
        request.wantsLogTail = false
        request.alias = u.qualifier
        request.viaURL = true
        if u.invokeMode == .responseStream { return try await invokeStreaming(f, request, ctx) }
        return answer(try await dispatcher.invoke(f, request), requestID: requestID)
    }

    /// A buffered answer: the function's result read as payload format 2.0's response.
    func answer(_ result: InvocationResult, requestID: String) -> Response {
        guard result.functionError == nil else { return Self.json(.badGateway, "Internal Server Error") }
        let answer: URLPayload.Response
        do { answer = try URLPayload.response(Data(result.payload.readableBytesView)) } catch {
            logger.info("a function URL's answer is malformed", metadata: ["request.id": "\(requestID)", "reason": "\(error.reason)"])
            return Self.json(.badGateway, "Internal Server Error")
        }
        return Response(
            status: HTTPResponse.Status(code: answer.status), headers: Self.fields(answer.headers, executedVersion: result.executedVersion),
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer.body)))
    }

    /// The request's headers as the function sees them: with `host` (HTTP/1.1's, which HTTPTypes
    /// keeps apart) and the `x-forwarded-*` headers Lambda's front adds.
    static func forwardedHeaders(_ req: Request, sourceIP: String, scheme: String) -> [(String, String)] {
        var h: [(String, String)] = []
        h.reserveCapacity(req.headers.count + 4)
        if let host = req.head.authority { h.append(("host", host)) }
        var forwarded = (for: false, proto: false, port: false)
        for field in req.headers {
            let n = field.name.canonicalName // lower case already
            if n.utf8.first == UInt8(ascii: "x") {
                if n == "x-forwarded-for" { forwarded.for = true }
                if n == "x-forwarded-proto" { forwarded.proto = true }
                if n == "x-forwarded-port" { forwarded.port = true }
            }
            h.append((n, field.value))
        }
        if !forwarded.for { h.append(("x-forwarded-for", sourceIP)) }
        if !forwarded.proto { h.append(("x-forwarded-proto", scheme)) }
        if !forwarded.port, let authority = req.head.authority, let colon = authority.utf8.lastIndex(of: UInt8(ascii: ":")) {
            h.append(("x-forwarded-port", String(authority[authority.index(after: colon)...])))
        }
        return h
    }

    /// The content type with which a streamed answer starts with its status and headers (a
    /// JSON prelude, then eight NUL bytes), as Lambda's `HttpResponseStream.from` writes it.
    static let integrationResponse = "application/vnd.awslambda.http-integration-response"

    /// RESPONSE_STREAM: the answer goes out as the function writes it (chunked). Its status
    /// and headers come from the stream's prelude when it has one, else 200 and the runtime's
    /// content type; a function that does not stream is answered as a buffered one.
    func invokeStreaming(_ f: FunctionRecord, _ given: InvocationRequest, _ ctx: PetrelRequestContext) async throws -> Response {
        var iterator = StreamedInvocation.start(f, given, dispatcher: dispatcher, on: loops?.executor(for: ctx.eventLoop))
        var contentType: String?
        switch await iterator.next() {
        case .done(.failure(let error))?: throw error
        case .done(.success(let result))?: return answer(result, requestID: given.requestID)
        case .begin(let type)?: contentType = type
        case .chunk, nil: break
        }
        var status = 200
        var headers: [(String, String)] = [("Content-Type", contentType ?? "application/octet-stream")]
        var pending = ByteBuffer()
        var ahead: StreamedInvocation.Event?
        if contentType != Self.integrationResponse {
            // The head waits for the first part: a function that fails before writing anything is a 502.
            switch await iterator.next() {
            case .done(.failure(let error))?: throw error
            case .done(.success(let r))? where r.functionError != nil: return Self.json(.badGateway, "Internal Server Error")
            case let event: ahead = event
            }
        } else {
            // The prelude: JSON up to eight NUL bytes.
            prelude: while let event = await iterator.next() {
                switch event {
                case .chunk(var b): pending.writeBuffer(&b)
                case .begin: continue
                case .done(let outcome):
                    if case .success(let r) = outcome, r.functionError == nil, pending.readableBytes == 0 { break prelude }
                    return Self.json(.badGateway, "Internal Server Error")
                }
                let bytes = Array(pending.readableBytesView)
                guard let end = Self.nulRun(bytes) else { continue }
                guard let head = try? URLPayload.response(Data(bytes[..<end])) else {
                    return Self.json(.badGateway, "Internal Server Error")
                }
                status = head.status
                headers = head.headers
                pending.moveReaderIndex(forwardBy: end + 8)
                break prelude
            }
        }
        let h = Self.fields(headers, executedVersion: f.version)
        let rest = PeekedStream(iterator, first: ahead)
        let first = pending
        return Response(
            status: HTTPResponse.Status(code: status), headers: h,
            body: ResponseBody { writer in
                if first.readableBytes > 0 { try await writer.write(first) }
                while let event = await rest.next() {
                    if case .chunk(let b) = event { try await writer.write(b) }
                }
                try await writer.finish(nil)
            })
    }

    /// Where eight NUL bytes begin, if they do.
    static func nulRun(_ b: [UInt8]) -> Int? {
        guard b.count >= 8 else { return nil }
        var run = 0
        for (i, x) in b.enumerated() {
            run = x == 0 ? run + 1 : 0
            if run == 8 { return i - 7 }
        }
        return nil
    }

    /// The function's headers as the answer's (hop-by-hop ones are the connection's own), and the version that ran.
    static func fields(_ headers: [(String, String)], executedVersion: String) -> HTTPFields {
        var h = HTTPFields()
        for (name, value) in headers {
            guard let n = HTTPField.Name(name), !hopByHop.contains(n.canonicalName) else { continue }
            h.append(HTTPField(name: n, value: value))
        }
        h[.amzExecutedVersion] = executedVersion
        return h
    }

    static let hopByHop: Set<String> = ["connection", "transfer-encoding", "content-length", "keep-alive", "upgrade"]

    // MARK: - CORS

    static let requestMethod = HTTPField.Name("Access-Control-Request-Method")!
    static let allowOrigin = HTTPField.Name("Access-Control-Allow-Origin")!

    /// A CORS preflight, answered by the platform when the URL has CORS settings.
    static func preflight(_ req: Request, _ cors: URLCors?) -> Response? {
        guard let cors, req.method == .options, let origin = req.headers[.origin], let method = req.headers[requestMethod] else {
            return nil
        }
        var h = HTTPFields()
        if let allowed = cors.allowedOrigin(origin), cors.allows(method: method) {
            h[allowOrigin] = allowed
            h[HTTPField.Name("Access-Control-Allow-Methods")!] = (cors.allowMethods ?? []).joined(separator: ",")
            if let headers = cors.allowHeaders, !headers.isEmpty {
                h[HTTPField.Name("Access-Control-Allow-Headers")!] = headers.joined(separator: ",")
            }
            if let age = cors.maxAge { h[HTTPField.Name("Access-Control-Max-Age")!] = String(age) }
            if cors.allowCredentials == true { h[HTTPField.Name("Access-Control-Allow-Credentials")!] = "true" }
        }
        h[.vary] = "Origin"
        return Response(status: .ok, headers: h)
    }

    /// The URL's CORS headers on an answer (the function's own are replaced when the URL has settings).
    static func addCORS(_ r: inout Response, _ req: Request, _ cors: URLCors?) {
        guard let cors else { return }
        r.headers = HTTPFields(r.headers.filter { !$0.name.canonicalName.hasPrefix("access-control-") })
        guard let origin = req.headers[.origin], let allowed = cors.allowedOrigin(origin) else { return }
        r.headers[allowOrigin] = allowed
        if let expose = cors.exposeHeaders, !expose.isEmpty {
            r.headers[HTTPField.Name("Access-Control-Expose-Headers")!] = expose.joined(separator: ",")
        }
        if cors.allowCredentials == true { r.headers[HTTPField.Name("Access-Control-Allow-Credentials")!] = "true" }
        r.headers[.vary] = "Origin"
    }
}

/// A stream's iterator with the events already read put back in front: the caller reads
/// ahead to decide a response's head, then hands the rest to its body (one task at a time).
final class PeekedStream<Element: Sendable>: @unchecked Sendable {
    var iterator: AsyncStream<Element>.Iterator
    var ahead: [Element]
    init(_ iterator: AsyncStream<Element>.Iterator, first: Element?) {
        self.iterator = iterator
        ahead = first.map { [$0] } ?? []
    }
    func next() async -> Element? {
        if !ahead.isEmpty { return ahead.removeFirst() }
        return await iterator.next()
    }
}

/// An invocation whose response the runtime may stream, run in a task of its own (on
/// `executor`, the caller's loop): its events, in order, as it happens.
enum StreamedInvocation {
    enum Event: Sendable {
        /// The runtime began streaming, with its content type.
        case begin(String?)
        case chunk(ByteBuffer)
        case done(Result<InvocationResult, any Error>)
    }

    static func start(
        _ f: FunctionRecord, _ given: InvocationRequest, dispatcher: Dispatcher, on executor: (any TaskExecutor)?
    ) -> AsyncStream<Event>.Iterator {
        var request = given
        let (events, sink) = AsyncStream.makeStream(of: Event.self)
        request.stream = ResponseStream(begin: { sink.yield(.begin($0)) }, { sink.yield(.chunk($0)) })
        let run: @Sendable () async -> Void = { [request] in
            do { sink.yield(.done(.success(try await dispatcher.invoke(f, request)))) } catch { sink.yield(.done(.failure(error))) }
            sink.finish()
        }
        if let executor { Task(executorPreference: executor, operation: run) } else { Task(operation: run) }
        return events.makeAsyncIterator()
    }
}
