import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PetrelCore

/// The one request pipeline every API of petreld runs its operations through:
/// the body is read within the operation's limit, the signature checked (SigV4,
/// for the service the API speaks), the operation run, any failure mapped to
/// Lambda's terms (`LambdaError.from`) and written in the protocol's error shape,
/// logged with the request id, and the call recorded in the audit trail. An API
/// adds a file of operations and picks its `ErrorStyle`; it does not copy these steps.
public struct RequestPipeline: Sendable {
    let gate: Gatekeeper
    let logger: Logger

    public init(gate: Gatekeeper, logger: Logger) {
        self.gate = gate
        self.logger = logger
    }

    /// How a protocol writes an error.
    enum ErrorStyle: Sendable {
        /// Lambda's REST JSON: `X-Amzn-ErrorType`, `{__type, Type, Message, message[, Reason]}`.
        case restJSON
        /// JSON 1.1 (CloudWatch Logs): `X-Amzn-ErrorType`, `{__type, message}`; a failure of
        /// the service itself is `ServiceUnavailableException`.
        case json11
        /// SQS's JSON 1.0: `{__type: "com.amazonaws.sqs#Name", message}`; a failure of the
        /// service itself is `InternalError`.
        case sqsJSON
        /// SNS's query protocol: `<ErrorResponse><Error><Type/><Code/><Message/></Error>…` in XML.
        case queryXML

        func response(_ e: LambdaError, requestID: String) -> Response {
            switch self {
            case .restJSON:
                return APIResponse.error(e, requestID: requestID)
            case .json11:
                let name = e.code == .service ? "ServiceUnavailableException" : e.code.rawValue
                var r = APIResponse.json11Error(name, e.message, status: e.code.status)
                r.headers[HTTPField.Name("X-Amzn-ErrorType")!] = name
                r.headers[.amzRequestID] = requestID
                return r
            case .sqsJSON:
                let name = e.code == .service ? "InternalError" : e.code.rawValue
                var r = APIResponse.json11Error("com.amazonaws.sqs#" + name, e.message, status: e.code.status)
                r.headers[.contentType] = "application/x-amz-json-1.0"
                r.headers[.amzRequestID] = requestID
                return r
            case .queryXML:
                let name = e.code == .service ? "InternalError" : e.code.rawValue
                return QueryXML.error(name, e.message, status: e.code.status, sender: e.code.status < 500, requestID: requestID)
            }
        }
    }

    /// What an operation gets: its request id, the account that signed, and the body
    /// (read once, within the operation's limit, before the signature was checked).
    struct Call: Sendable {
        var id: String
        var caller: Caller
        var body: ByteBuffer
    }

    /// What the audit trail records of a call: the resource it named and its parameters
    /// (described, never copied where they are data or secrets; see `AuditParameters`).
    struct Audit {
        var resource: String?
        var parameters: String
    }

    /// What a call does in IAM's terms: `service:Action` on a resource's ARN (`*` for none).
    struct Access: Sendable, Equatable {
        var action: String
        var resource: String
    }

    /// Runs a signed operation. `tooLarge` is the protocol's answer to a body over `limit`;
    /// `audit` describes the call from its body (nil when it could not be read). `access` says
    /// what the call does in IAM's terms: a role's session must be allowed every one of them
    /// (`denied` is the protocol's name for a refusal); without it, `service:Action` on `*`.
    func run(
        _ req: Request, _ ctx: PetrelRequestContext, action: String, limit: Int, service: String, style: ErrorStyle,
        tooLarge: @Sendable (Int) -> LambdaError, audit: (ByteBuffer?) -> Audit,
        actionInBody: ((ByteBuffer) -> String)? = nil,
        access: ((Call, String) throws -> [Access])? = nil, denied: LambdaError.Code = .accessDenied,
        _ op: (Call) async throws -> Response
    ) async -> Response {
        await execute(req, ctx, action: action, style: style, audit: audit) { requestID, body, caller, action in
            let buffer = try await Self.body(req, limit: limit, tooLarge: tooLarge)
            body = buffer
            // The query protocol names its action in the body: the log and the audit use that name.
            if let actionInBody { action = actionInBody(buffer) }
            caller = try gate.authenticate(req, body: buffer, service: service)
            let call = Call(id: requestID, caller: caller!, body: buffer)
            if caller!.policies != nil {
                let wanted = try access?(call, action) ?? [Access(action: "\(service):\(action)", resource: "*")]
                for a in wanted { try gate.authorize(caller!, action: a.action, resource: a.resource, denied: denied) }
            }
            return try await op(call)
        }
    }

    /// Runs an operation that carries its own proof (a link the daemon signed): no body,
    /// no SigV4; failures, logging and the audit trail as for every other call.
    func runUnsigned(
        _ req: Request, _ ctx: PetrelRequestContext, action: String, style: ErrorStyle, audit: Audit,
        _ op: (String) async throws -> Response
    ) async -> Response {
        await execute(req, ctx, action: action, style: style, audit: { _ in audit }) { requestID, _, _, _ in try await op(requestID) }
    }

    private func execute(
        _ req: Request, _ ctx: PetrelRequestContext, action given: String, style: ErrorStyle, audit: (ByteBuffer?) -> Audit,
        _ body: (String, inout ByteBuffer?, inout Caller?, inout String) async throws -> Response
    ) async -> Response {
        var action = given
        let requestID = FastIDs.uuid()
        // The request's metadata is attached only when something is logged: setting a
        // logger's metadata formats it again, on every request.
        func log(_ level: Logger.Level, _ message: @autoclosure () -> Logger.Message, _ metadata: Logger.Metadata) {
            guard logger.logLevel <= level else { return }
            logger.log(
                level: level, message(),
                metadata: metadata.merging(["request.id": "\(requestID)", "api.action": "\(action)"]) { a, _ in a })
        }
        var caller: Caller?
        var buffer: ByteBuffer?
        let response: Response
        var errorCode: String?
        do {
            var r = try await body(requestID, &buffer, &caller, &action)
            r.headers[.amzRequestID] = requestID
            log(.debug, "ok", ["http.status": "\(r.status.code)"])
            response = r
        } catch {
            let e = LambdaError.from(error, action: action)
            if e.code.status >= 500 {
                log(.error, "failed", ["error": "\(error)"])
            } else {
                log(.info, "refused", ["error.type": "\(e.code.rawValue)", "error.message": "\(e.message)"])
            }
            errorCode = e.code.rawValue
            response = style.response(e, requestID: requestID)
        }
        let a = audit(buffer)
        gate.record(
            req, ctx, action: action, caller: caller, resource: a.resource, parameters: a.parameters,
            status: Int(response.status.code), error: errorCode)
        return response
    }

    /// The body, within `limit` (the declared length is checked before anything is read).
    static func body(_ req: Request, limit: Int, tooLarge: (Int) -> LambdaError) async throws -> ByteBuffer {
        if let len = req.headers.value(.contentLength).flatMap(Int.init), len > limit {
            throw tooLarge(limit)
        }
        do {
            return try await req.body.collect(upTo: limit)
        } catch {
            throw tooLarge(limit)
        }
    }
}
