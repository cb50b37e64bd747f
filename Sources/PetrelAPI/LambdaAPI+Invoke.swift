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

    func invoke(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let invocationType = req.headers.value(.amzInvocationType) ?? "RequestResponse"
        let logType = req.headers.value(.amzLogType) ?? "None"
        guard ["RequestResponse", "Event", "DryRun"].contains(invocationType) else {
            throw LambdaError.constraint(
                invocationType, at: "invocationType", "Member must satisfy enum value set: [Event, RequestResponse, DryRun]")
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
        case "DryRun":
            return Response(status: .noContent)
        case "Event":
            return try await enqueueEvent(f, qualifier: q, payload: payload, call: call)
        default:
            break
        }
        let arn = FunctionARN(region: region, account: f.account, name: f.name, qualifier: q).description
        var request = InvocationRequest(requestID: call.id, payload: payload, invokedARN: arn, clientContext: clientContext)
        request.wantsLogTail = logType == "Tail"
        if case .alias(let a, _) = target { request.alias = a.name }
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
