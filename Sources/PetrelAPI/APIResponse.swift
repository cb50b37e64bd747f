import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PetrelCore

/// Building responses in the shapes the AWS SDKs parse.
enum APIResponse {
    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        var h = headers
        h[.contentType] = "application/json"
        return Response(status: status, headers: h, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// A Lambda REST error: `X-Amzn-ErrorType` plus `{__type, Type, Message}` (and `Reason` where it applies).
    static func error(_ e: LambdaError, requestID: String) -> Response {
        var body: [String: String] = ["__type": e.code.rawValue, "Type": e.type, "Message": e.message, "message": e.message]
        if let r = e.reason { body["Reason"] = r }
        var headers: HTTPFields = [:]
        headers[HTTPField.Name("X-Amzn-ErrorType")!] = e.code.rawValue
        headers[HTTPField.Name("X-Amzn-RequestId")!] = requestID
        return json(body, status: .init(code: e.code.status), headers: headers)
    }

    /// A JSON 1.1 (CloudWatch Logs) error: `{__type, message}`.
    static func json11Error(_ code: String, _ message: String, status: Int = 400) -> Response {
        var r = json(["__type": code, "message": message], status: .init(code: status))
        r.headers[.contentType] = "application/x-amz-json-1.1"
        return r
    }
}

extension HTTPFields {
    /// `self[name]` (several fields of the name: their values joined with ", "), without
    /// the array that subscript builds for the usual single field: this runs for a few
    /// headers of every invocation.
    func value(_ name: HTTPField.Name) -> String? {
        var found: String?
        for field in self where field.name == name {
            if found != nil { return self[name] }
            found = field.value
        }
        return found
    }
}

extension HTTPField.Name {
    static let amzRequestID = HTTPField.Name("X-Amzn-RequestId")!
    static let amzInvocationType = HTTPField.Name("X-Amz-Invocation-Type")!
    static let amzLogType = HTTPField.Name("X-Amz-Log-Type")!
    static let amzClientContext = HTTPField.Name("X-Amz-Client-Context")!
    static let amzFunctionError = HTTPField.Name("X-Amz-Function-Error")!
    static let amzLogResult = HTTPField.Name("X-Amz-Log-Result")!
    static let amzExecutedVersion = HTTPField.Name("X-Amz-Executed-Version")!
    static let amzTarget = HTTPField.Name("X-Amz-Target")!
    static let petrelInitDuration = HTTPField.Name("X-Petrel-Init-Duration")!
    static let petrelSandboxMs = HTTPField.Name("X-Petrel-Sandbox-Ms")!
    static let petrelStart = HTTPField.Name("X-Petrel-Start")!
    static let petrelRuntimeStartMs = HTTPField.Name("X-Petrel-Runtime-Start-Ms")!
    static let petrelFunctionInitMs = HTTPField.Name("X-Petrel-Function-Init-Ms")!
}

/// The AWS JSON protocols (1.0 for SQS, 1.1 for CloudWatch Logs and Secrets Manager):
/// `POST /`, the operation in `X-Amz-Target: PREFIX.Operation`, a JSON object each way.
/// Every API of that kind reads and answers through here.
enum JSONProtocol {
    /// The operation a request names after `prefix` (`AmazonSQS.`); empty when it names none.
    static func operation(_ req: Request, prefix: String) -> String {
        let target = req.headers[.amzTarget] ?? ""
        return target.hasPrefix(prefix) ? String(target.dropFirst(prefix.count)) : ""
    }

    /// The request's object (an empty body is an empty object); anything else is `invalid`.
    static func object(_ body: ByteBuffer, invalid: @autoclosure () -> any Error) throws -> [String: Any] {
        guard body.readableBytes > 0 else { return [:] }
        guard let o = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] else { throw invalid() }
        return o
    }

    /// An answer of protocol `version` ("1.0" or "1.1").
    static func response(_ out: [String: Any], version: String) throws -> Response {
        let data = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys, .withoutEscapingSlashes])
        var h = HTTPFields()
        h[.contentType] = "application/x-amz-json-" + version
        return Response(status: .ok, headers: h, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}

extension LambdaError {
    /// An error under another service's own exception name (CloudWatch Logs, Secrets Manager, …).
    static func named(_ name: String, _ message: String, status: Int = 400) -> LambdaError {
        LambdaError(Code(name, status: status), message)
    }
}
