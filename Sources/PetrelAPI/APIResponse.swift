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
    static let petrelRuntimeStartMs = HTTPField.Name("X-Petrel-Runtime-Start-Ms")!
    static let petrelFunctionInitMs = HTTPField.Name("X-Petrel-Function-Init-Ms")!
}
