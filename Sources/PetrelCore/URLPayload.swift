import Foundation

/// A function URL's request as the function sees it, and its answer as the client does:
/// API Gateway's payload format 2.0, which Lambda's function URLs speak and every Lambda
/// web adapter (Mangum, powertools, serverless-http, apig-wsgi) reads.
public enum URLPayload {
    /// What the URL server knows of one request.
    public struct Request: Sendable {
        public var method: String
        /// The path the client asked for, without any routing prefix, as sent (encoded).
        public var rawPath: String
        public var rawQuery: String
        /// In order, names as sent.
        public var headers: [(String, String)]
        public var body: [UInt8]
        public var sourceIP: String
        public var domainName: String
        public var urlID: String
        public var requestID: String
        public var accountID: String
        public var now: Date
        /// For AWS_IAM URLs: the caller.
        public var iam: (accessKey: String, account: String)?

        public init(
            method: String, rawPath: String, rawQuery: String, headers: [(String, String)], body: [UInt8], sourceIP: String,
            domainName: String, urlID: String, requestID: String, accountID: String, now: Date = Date(),
            iam: (accessKey: String, account: String)? = nil
        ) {
            self.method = method
            self.rawPath = rawPath
            self.rawQuery = rawQuery
            self.headers = headers
            self.body = body
            self.sourceIP = sourceIP
            self.domainName = domainName
            self.urlID = urlID
            self.requestID = requestID
            self.accountID = accountID
            self.now = now
            self.iam = iam
        }
    }

    /// Content types whose bodies are passed as text; every other body is base64.
    public static func isText(contentType: String?) -> Bool {
        guard let t = contentType?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased() else { return false }
        return t.hasPrefix("text/") || t == "application/json" || t.hasSuffix("+json") || t == "application/xml" || t.hasSuffix("+xml")
            || t == "application/javascript" || t == "application/x-www-form-urlencoded" || t == "application/graphql"
    }

    static func percentDecoded(_ s: Substring) -> String {
        let plus = s.replacingOccurrences(of: "+", with: " ")
        return plus.removingPercentEncoding ?? plus
    }

    /// The event (JSON).
    public static func event(_ r: Request) -> Data {
        var headers: [String: String] = [:]
        var cookies: [String] = []
        for (name, value) in r.headers {
            let n = name.lowercased()
            if n == "cookie" {
                cookies += value.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                continue
            }
            headers[n] = headers[n].map { $0 + "," + value } ?? value
        }
        var query: [String: String] = [:]
        for pair in r.rawQuery.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let k = percentDecoded(kv[0])
            let v = kv.count > 1 ? percentDecoded(kv[1]) : ""
            query[k] = query[k].map { $0 + "," + v } ?? v
        }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "dd/MMM/yyyy:HH:mm:ss Z"
        var http: [String: Any] = [
            "method": r.method, "path": r.rawPath, "protocol": "HTTP/1.1", "sourceIp": r.sourceIP,
            "userAgent": headers["user-agent"] ?? "",
        ]
        http["path"] = r.rawPath
        var context: [String: Any] = [
            "accountId": r.iam?.account ?? "anonymous", "apiId": r.urlID, "domainName": r.domainName,
            "domainPrefix": r.urlID, "http": http, "requestId": r.requestID, "routeKey": "$default", "stage": "$default",
            "time": f.string(from: r.now), "timeEpoch": Int64(r.now.timeIntervalSince1970 * 1000),
        ]
        if let iam = r.iam {
            context["authorizer"] = [
                "iam": [
                    "accessKey": iam.accessKey, "accountId": iam.account, "callerId": iam.accessKey,
                    "cognitoIdentity": NSNull(), "principalOrgId": NSNull(), "userArn": "arn:aws:iam::\(iam.account):root",
                    "userId": iam.account,
                ] as [String: Any]
            ]
        }
        var event: [String: Any] = [
            "version": "2.0", "routeKey": "$default", "rawPath": r.rawPath, "rawQueryString": r.rawQuery, "headers": headers,
            "requestContext": context, "isBase64Encoded": false,
        ]
        if !cookies.isEmpty { event["cookies"] = cookies }
        if !query.isEmpty { event["queryStringParameters"] = query }
        if !r.body.isEmpty {
            if isText(contentType: headers["content-type"]), let text = String(validating: r.body, as: UTF8.self) {
                event["body"] = text
            } else {
                event["body"] = Data(r.body).base64EncodedString()
                event["isBase64Encoded"] = true
            }
        }
        return (try? JSONSerialization.data(withJSONObject: event, options: [.withoutEscapingSlashes])) ?? Data("{}".utf8)
    }

    /// What the client gets.
    public struct Response: Sendable, Equatable {
        public var status: Int
        /// In order; `Set-Cookie` once per cookie.
        public var headers: [(String, String)]
        public var body: Data

        public static func == (a: Response, b: Response) -> Bool {
            a.status == b.status && a.body == b.body && a.headers.elementsEqual(b.headers) { $0 == $1 }
        }
    }

    /// Not a response the URL can send (Lambda answers 502 then).
    public struct Malformed: Error, Sendable {
        public var reason: String
    }

    /// The function's result as an HTTP response. An object with `statusCode` is a response
    /// (`headers`, `multiValueHeaders`, `cookies`, `body`, `isBase64Encoded`); anything else
    /// valid JSON is sent as it is, as JSON, with 200.
    public static func response(_ payload: Data) throws(Malformed) -> Response {
        let value: Any
        do { value = try JSONSerialization.jsonObject(with: payload, options: [.fragmentsAllowed]) } catch {
            throw Malformed(reason: "the function's result is not JSON")
        }
        guard let o = value as? [String: Any], let status = o["statusCode"] else {
            return Response(status: 200, headers: [("Content-Type", "application/json")], body: payload)
        }
        guard let code = (status as? NSNumber)?.intValue ?? (status as? String).flatMap(Int.init), (100...599).contains(code),
            !(status is Bool)
        else {
            throw Malformed(reason: "statusCode must be an HTTP status code")
        }
        var headers: [(String, String)] = []
        func text(_ v: Any) -> String? {
            switch v {
            case let s as String: s
            case let n as NSNumber: n.stringValue
            default: nil
            }
        }
        if let h = o["headers"] {
            guard let h = h as? [String: Any] else { throw Malformed(reason: "headers must be an object") }
            for (k, v) in h.sorted(by: { $0.key < $1.key }) {
                guard let s = text(v) else { throw Malformed(reason: "the header \(k) must be a string") }
                headers.append((k, s))
            }
        }
        if let m = o["multiValueHeaders"] {
            guard let m = m as? [String: Any] else { throw Malformed(reason: "multiValueHeaders must be an object") }
            for (k, v) in m.sorted(by: { $0.key < $1.key }) {
                guard let list = v as? [Any] else { throw Malformed(reason: "multiValueHeaders.\(k) must be a list") }
                for item in list {
                    guard let s = text(item) else { throw Malformed(reason: "multiValueHeaders.\(k) must hold strings") }
                    headers.append((k, s))
                }
            }
        }
        if let c = o["cookies"] {
            guard let c = c as? [Any] else { throw Malformed(reason: "cookies must be a list") }
            for item in c {
                guard let s = item as? String else { throw Malformed(reason: "cookies must hold strings") }
                headers.append(("Set-Cookie", s))
            }
        }
        var body = Data()
        if let b = o["body"], !(b is NSNull) {
            guard let s = b as? String else { throw Malformed(reason: "body must be a string") }
            if (o["isBase64Encoded"] as? Bool) == true {
                guard let d = Data(base64Encoded: s) else { throw Malformed(reason: "body is not base64") }
                body = d
            } else {
                body = Data(s.utf8)
            }
        }
        if !headers.contains(where: { $0.0.lowercased() == "content-type" }) { headers.append(("Content-Type", "application/json")) }
        return Response(status: code, headers: headers, body: body)
    }
}
