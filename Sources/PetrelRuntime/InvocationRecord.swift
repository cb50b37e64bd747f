import Foundation
import PetrelCore

/// Lambda's invocation record (what destinations receive) and EventBridge's
/// scheduled-event document, built as JSON text: payloads go in as they are.
enum EventDocuments {
    static func isoSeconds(_ s: Int64) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: Date(timeIntervalSince1970: Double(s)))
    }

    static func string(_ s: String) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: [s], options: [])) ?? Data("[\"\"]".utf8)
        return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
    }

    /// A payload as a JSON value: itself when it is JSON, else as a string.
    static func value(_ payload: Data) -> String {
        if !payload.isEmpty, (try? JSONSerialization.jsonObject(with: payload, options: [.fragmentsAllowed])) != nil {
            return String(decoding: payload, as: UTF8.self)
        }
        return string(String(decoding: payload, as: UTF8.self))
    }

    struct Response {
        var payload: Data
        var functionError: String?
        /// The version that ran.
        var executedVersion = "$LATEST"
    }

    static func invocationRecord(
        requestID: String, functionARN: String, condition: String, attempts: Int, now: Int64,
        requestPayload: Data, response: Response?
    ) -> Data {
        var json = "{\"version\":\"1.0\",\"timestamp\":\(string(PlatformClock.iso8601(millis: now)))"
        json += ",\"requestContext\":{\"requestId\":\(string(requestID)),\"functionArn\":\(string(functionARN))"
        json += ",\"condition\":\(string(condition)),\"approximateInvokeCount\":\(attempts)}"
        json += ",\"requestPayload\":\(value(requestPayload))"
        if let response {
            json += ",\"responseContext\":{\"statusCode\":200,\"executedVersion\":\(string(response.executedVersion))"
            if let fe = response.functionError { json += ",\"functionError\":\(string(fe))" }
            json += "},\"responsePayload\":\(value(response.payload))"
        }
        json += "}"
        return Data(json.utf8)
    }

    static func scheduledEvent(id: String, account: String, region: String, schedule: String, slot: Int64) -> Data {
        let rule = "arn:aws:events:\(region):\(account):rule/\(schedule)"
        let json =
            "{\"version\":\"0\",\"id\":\(string(id)),\"detail-type\":\"Scheduled Event\",\"source\":\"aws.events\""
            + ",\"account\":\(string(account)),\"time\":\(string(isoSeconds(slot))),\"region\":\(string(region))"
            + ",\"resources\":[\(string(rule))],\"detail\":{}}"
        return Data(json.utf8)
    }
}
