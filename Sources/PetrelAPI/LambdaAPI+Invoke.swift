import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PetrelCore
import PetrelRuntime
import PetrelSigV4
import PetrelStore

/// Synchronous invocation (`Invoke` with `RequestResponse` or `DryRun`; `Event` goes to
/// `enqueueEvent`), answered in the connection's pipeline by `FastPathHandler`.
extension LambdaAPI {
    /// Invoke, as `FastPathHandler` runs it: its task already runs on the connection's loop.
    func answerInvoke(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        await run(req, ctx, "Invoke", limit: Self.maxInvokePayload, self.invoke)
    }

    /// The handler that answers Invoke in a connection's pipeline (see `FastPathHandler`).
    public func invokeHandler() -> FastPathHandler {
        FastPathHandler(
            path: FastPath(
                claim: { FastPathHandler.invokeName($0) }, limit: Self.maxInvokePayload, answer: { await self.answerInvoke($0, $1) },
                loops: loops),
            logger: logger)
    }

    /// An invocation's event: the body, `{}` when empty; it must be JSON.
    static func payload(_ body: ByteBuffer, field: String) throws -> ByteBuffer {
        if body.readableBytes == 0 { return ByteBuffer(string: "{}") }
        guard (try? JSONSerialization.jsonObject(with: Data(buffer: body), options: [.fragmentsAllowed])) != nil else {
            throw LambdaError(.invalidRequestContent, "Could not parse request body into json: \(field) is not valid JSON")
        }
        return body
    }

    /// What an Invoke-like call asks for, checked: the types, the function, the payload.
    enum Prepared {
        case dryRun
        case event(FunctionRecord, qualifier: String?, payload: ByteBuffer)
        case sync(FunctionRecord, InvocationRequest, logTail: Bool)
    }

    /// Reads Invoke's (and InvokeWithResponseStream's) headers, query and body.
    func prepareInvocation(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call, types: [String]) throws -> Prepared {
        let invocationType = req.headers.value(.amzInvocationType) ?? "RequestResponse"
        let logType = req.headers.value(.amzLogType) ?? "None"
        guard types.contains(invocationType) else {
            throw LambdaError.constraint(
                invocationType, at: "invocationType", "Member must satisfy enum value set: [\(types.sorted().joined(separator: ", "))]")
        }
        guard ["None", "Tail"].contains(logType) else {
            throw LambdaError.constraint(logType, at: "logType", "Member must satisfy enum value set: [Tail, None]")
        }
        let raw = try name(ctx)
        let ref = try FunctionReference(parsing: raw)
        let q = try catalog.qualifier(ref, qualifier(req))
        let target = try catalog.target(ref, qualifier: q, caller: call.caller, action: "lambda:InvokeFunction")
        let f = target.record
        let payload = try Self.payload(call.body, field: "the payload")
        var clientContext: String?
        if let cc = req.headers.value(.amzClientContext) {
            guard let decoded = Data(base64Encoded: cc), decoded.count <= 3583 else {
                throw LambdaError(
                    .invalidParameterValue, "Client context must be a valid Base64-encoded JSON object of at most 3583 bytes.")
            }
            clientContext = String(decoding: decoded, as: UTF8.self)
        }
        switch invocationType {
        case "DryRun": return .dryRun
        case "Event": return .event(f, qualifier: q, payload: payload)
        default: break
        }
        let arn = FunctionARN(region: region, account: f.account, name: f.name, qualifier: q).description
        var request = InvocationRequest(requestID: call.id, payload: payload, invokedARN: arn, clientContext: clientContext)
        request.wantsLogTail = logType == "Tail"
        if case .alias(let a, _) = target { request.alias = a.name }
        return .sync(f, request, logTail: logType == "Tail")
    }

    func invoke(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let f: FunctionRecord
        let request: InvocationRequest
        let logTail: Bool
        switch try prepareInvocation(req, ctx, call, types: ["RequestResponse", "Event", "DryRun"]) {
        case .dryRun: return Response(status: .noContent)
        case .event(let f, let q, let payload): return try await enqueueEvent(f, qualifier: q, payload: payload, call: call)
        case .sync(let rf, let r, let tail): (f, request, logTail) = (rf, r, tail)
        }
        let result = try await dispatcher.invoke(f, request)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.amzExecutedVersion] = result.executedVersion
        if let fe = result.functionError { headers[.amzFunctionError] = fe }
        if logTail { headers[.amzLogResult] = Data(result.logTail.utf8).base64EncodedString() }
        // Petrel's own: lets load tools count cold starts without asking for the log.
        if let initMs = result.initDurationMs { headers[.petrelInitDuration] = String(format: "%.2f", initMs) }
        if let p = result.phases {
            headers[.petrelSandboxMs] = String(format: "%.2f", p.sandboxMs)
            headers[.petrelStart] = p.start.description
            if let r = p.runtimeStartMs { headers[.petrelRuntimeStartMs] = String(format: "%.2f", r) }
            if let f = p.functionInitMs { headers[.petrelFunctionInitMs] = String(format: "%.2f", f) }
        }
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: result.payload))
    }

    /// InvokeWithResponseStream: the answer in AWS's event stream framing. A runtime that
    /// streams its response (`Lambda-Runtime-Function-Response-Mode: streaming`) has each part
    /// sent as a `PayloadChunk` as it arrives; any other response goes out as one chunk. An
    /// `InvokeComplete` ends the stream, with the error and the log's tail when asked for.
    /// Whatever goes wrong before the first byte is an HTTP error, as for Invoke.
    func invokeWithResponseStream(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        guard case .sync(let f, let request, let logTail) = try prepareInvocation(req, ctx, call, types: ["RequestResponse", "DryRun"])
        else { return Response(status: .noContent) }
        var iterator = StreamedInvocation.start(f, request, dispatcher: dispatcher, on: loops?.executor(for: ctx.eventLoop))
        var first = await iterator.next()
        if case .begin? = first { first = await iterator.next() } // the content type is not part of the event stream
        if case .done(.failure(let error))? = first { throw error }
        let stream = PeekedStream(iterator, first: first)
        var headers = HTTPFields()
        headers[.contentType] = "application/vnd.amazon.eventstream"
        headers[.amzExecutedVersion] = f.version
        if case .done(.success(let r))? = first, let initMs = r.initDurationMs {
            headers[.petrelInitDuration] = String(format: "%.2f", initMs)
        }
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                while let event = await stream.next() {
                    switch event {
                    case .begin: continue
                    case .chunk(let b):
                        try await writer.write(EventStream.payloadChunk(b))
                    case .done(let outcome):
                        var complete: [String: String] = [:]
                        switch outcome {
                        case .success(let result):
                            if result.functionError != nil {
                                complete["ErrorCode"] = result.errorType ?? "Unhandled"
                                complete["ErrorDetails"] = String(decoding: result.payload.readableBytesView, as: UTF8.self)
                            } else if result.payload.readableBytes > 0 {
                                // A response the runtime did not stream: one chunk.
                                try await writer.write(EventStream.payloadChunk(result.payload))
                            }
                            if logTail { complete["LogResult"] = Data(result.logTail.utf8).base64EncodedString() }
                        case .failure(let error):
                            let e = LambdaError.from(error, action: "InvokeWithResponseStream")
                            complete["ErrorCode"] = e.code.rawValue
                            complete["ErrorDetails"] = e.message
                        }
                        let json = (try? JSONSerialization.data(withJSONObject: complete, options: [.sortedKeys])) ?? Data("{}".utf8)
                        try await writer.write(
                            ByteBuffer(bytes: EventStream.event("InvokeComplete", contentType: "application/json", payload: Array(json))))
                    }
                }
                try await writer.finish(nil)
            })
    }
}
