import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PetrelSigV4

/// The AWS query protocol: form-encoded parameters in, XML out (SNS, STS, IAM).
enum QueryXML {
    /// The form's parameters (`+` is a space, then percent-decoding).
    static func form(_ body: ByteBuffer) -> [String: String] {
        var out: [String: String] = [:]
        let text = String(buffer: body)
        for pair in text.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String { SigV4.percentDecoded(s.replacingOccurrences(of: "+", with: " ")) }
            out[decode(kv[0])] = kv.count > 1 ? decode(kv[1]) : ""
        }
        return out
    }

    /// `Prefix.member.N` (or `Prefix.entry.N`) values, in order of N, each a map of the rest of its keys.
    static func list(_ form: [String: String], _ prefix: String, _ member: String = "member") -> [[String: String]] {
        var items: [Int: [String: String]] = [:]
        let head = prefix + "." + member + "."
        for (k, v) in form where k.hasPrefix(head) {
            let rest = k.dropFirst(head.count)
            let n = rest.prefix { $0.isNumber }
            guard let i = Int(n) else { continue }
            let field = rest.dropFirst(n.count).drop { $0 == "." }
            items[i, default: [:]][String(field)] = v
        }
        return items.keys.sorted().map { items[$0]! }
    }

    /// A map given as `Prefix.entry.N.key`/`.value`.
    static func map(_ form: [String: String], _ prefix: String) -> [String: String] {
        var out: [String: String] = [:]
        for e in list(form, prefix, "entry") {
            if let k = e["key"] { out[k] = e["value"] ?? "" }
        }
        return out
    }

    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case "\r": out += "&#xD;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// An XML element tree, written in order.
    indirect enum Node {
        case text(String, String)
        case element(String, [Node])

        func write(into s: inout String) {
            switch self {
            case .text(let name, let value): s += "<\(name)>\(QueryXML.escape(value))</\(name)>"
            case .element(let name, let children):
                s += "<\(name)>"
                for c in children { c.write(into: &s) }
                s += "</\(name)>"
            }
        }
    }

    static func response(_ action: String, namespace: String, _ result: [Node], requestID: String) -> Response {
        var s = "<?xml version=\"1.0\"?>\n<\(action)Response xmlns=\"\(namespace)\">"
        Node.element("\(action)Result", result).write(into: &s)
        Node.element("ResponseMetadata", [.text("RequestId", requestID)]).write(into: &s)
        s += "</\(action)Response>"
        var h = HTTPFields()
        h[.contentType] = "text/xml"
        return Response(status: .ok, headers: h, body: ResponseBody(byteBuffer: ByteBuffer(string: s)))
    }

    static func error(_ code: String, _ message: String, status: Int, sender: Bool, requestID: String) -> Response {
        var s = "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">"
        Node.element(
            "Error", [.text("Type", sender ? "Sender" : "Receiver"), .text("Code", code), .text("Message", message)]
        ).write(into: &s)
        Node.text("RequestId", requestID).write(into: &s)
        s += "</ErrorResponse>"
        var h = HTTPFields()
        h[.contentType] = "text/xml"
        h[.amzRequestID] = requestID
        return Response(status: .init(code: status), headers: h, body: ResponseBody(byteBuffer: ByteBuffer(string: s)))
    }
}

extension RequestPipeline {
    /// A call of a query-protocol API (SNS, STS, IAM): the form read once, its `Action` naming the
    /// call for the log, the audit and IAM; `audit` says what the trail may keep of the form (its
    /// resource and parameters: no messages, no policy documents); `op` makes the result of
    /// `<ActionResponse>`. A body over `limit` is `RequestEntityTooLarge`.
    func runQuery(
        _ req: Request, _ ctx: PetrelRequestContext, service: String, limit: Int, namespace: String, denied: LambdaError.Code,
        audit: ([String: String]) -> (resource: String?, parameters: [String: String]),
        access: @escaping (_ form: [String: String], _ action: String, Call) throws -> [Access],
        _ op: ([String: String], String, Call) async throws -> [QueryXML.Node]
    ) async -> Response {
        var form: [String: String] = [:]
        let unnamed = service.uppercased()
        return await run(
            req, ctx, action: unnamed, limit: limit, service: service, style: .queryXML,
            tooLarge: { _ in .named("RequestEntityTooLarge", "The request is too large.", status: 413) },
            audit: { _ in
                let a = audit(form)
                let data = (try? JSONSerialization.data(withJSONObject: a.parameters, options: [.sortedKeys])) ?? Data("{}".utf8)
                return .init(resource: a.resource, parameters: String(decoding: data, as: UTF8.self))
            },
            actionInBody: { body in
                form = QueryXML.form(body)
                return form["Action"] ?? unnamed
            },
            access: { call, action in try access(form, action, call) }, denied: denied
        ) { call in
            let action = form["Action"] ?? ""
            return QueryXML.response(action, namespace: namespace, try await op(form, action, call), requestID: call.id)
        }
    }
}

extension QueryXML {
    /// An integer parameter within `range`, or nil when absent; outside it, the query APIs'
    /// `ValidationError` in botocore's words.
    static func int(_ form: [String: String], _ field: String, _ range: ClosedRange<Int>) throws -> Int? {
        guard let raw = form[field] else { return nil }
        guard let v = Int(raw), range.contains(v) else {
            throw LambdaError.named(
                "ValidationError",
                "1 validation error detected: Value '\(raw)' at '\(field.prefix(1).lowercased() + field.dropFirst())' failed to satisfy constraint: Member must have value between \(range.lowerBound) and \(range.upperBound)"
            )
        }
        return v
    }

    /// IAM's names (roles, policies, role sessions): `[\\w+=,.@-]`, `length` characters.
    static func isIAMName(_ s: String, length: ClosedRange<Int>) -> Bool {
        length.contains(s.count)
            && s.unicodeScalars.allSatisfy {
                CharacterSet.alphanumerics.contains($0) && $0.isASCII || "_+=,.@-".unicodeScalars.contains($0)
            }
    }
}
