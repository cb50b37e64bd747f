import Foundation
import Glibc

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
        public var now: Date
        /// For AWS_IAM URLs: the caller.
        public var iam: (accessKey: String, account: String)?

        public init(
            method: String, rawPath: String, rawQuery: String, headers: [(String, String)], body: [UInt8], sourceIP: String,
            domainName: String, urlID: String, requestID: String, now: Date = Date(),
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
            self.now = now
            self.iam = iam
        }
    }

    /// Content types whose bodies are passed as text; every other body is base64.
    public static func isText(contentType: String?) -> Bool {
        // Bytes: this runs for every request with a body.
        guard let raw = contentType else { return false }
        var u = Array(raw.utf8.prefix { $0 != 0x3b })
        while u.last == 0x20 || u.last == 0x09 { u.removeLast() }
        let start = u.firstIndex { $0 != 0x20 && $0 != 0x09 } ?? u.count
        let t = lowerASCII(String(decoding: u[start...], as: UTF8.self))
        return t.hasPrefix("text/") || t == "application/json" || t.hasSuffix("+json") || t == "application/xml" || t.hasSuffix("+xml")
            || t == "application/javascript" || t == "application/x-www-form-urlencoded" || t == "application/graphql"
    }

    /// A query component decoded (`+` is a space; invalid escapes stay as they are).
    static func queryDecoded(_ s: Substring) -> String {
        guard s.utf8.contains(where: { $0 == 0x25 || $0 == 0x2b }) else { return String(s) }
        let u = Array(s.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(u.count)
        var i = 0
        while i < u.count {
            if u[i] == 0x2b {
                out.append(0x20)
                i += 1
            } else if u[i] == 0x25, i + 2 < u.count, let h = FastIDs.hexValue(u[i + 1]), let l = FastIDs.hexValue(u[i + 2]) {
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(u[i])
                i += 1
            }
        }
        return String(validating: out, as: UTF8.self) ?? String(s)
    }

    /// ASCII letters in lower case (header names; most arrive so already).
    static func lowerASCII(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 >= 0x41 && $0 <= 0x5a }) else { return s }
        return String(decoding: s.utf8.map { $0 >= 0x41 && $0 <= 0x5a ? $0 | 0x20 : $0 }, as: UTF8.self)
    }

    /// A JSON string literal.
    static func quoted(_ s: String, into out: inout [UInt8]) {
        out.append(0x22)
        for b in s.utf8 {
            switch b {
            case 0x22: out += [0x5c, 0x22]
            case 0x5c: out += [0x5c, 0x5c]
            case 0x0a: out += [0x5c, 0x6e]
            case 0x0d: out += [0x5c, 0x72]
            case 0x09: out += [0x5c, 0x74]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out += [0x5c, 0x75, 0x30, 0x30, hex[Int(b >> 4)], hex[Int(b & 0xf)]]
            default: out.append(b)
            }
        }
        out.append(0x22)
    }

    /// `07/Dec/2026:10:11:29 +0000`, as API Gateway writes `requestContext.time`.
    static func clfTime(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var tm = tm()
        gmtime_r(&t, &tm)
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return
            "\(two(tm.tm_mday))/\(months[Int(tm.tm_mon)])/\(tm.tm_year + 1900):\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)) +0000"
    }

    /// The event (JSON), written directly: every URL request makes one.
    public static func event(_ r: Request) -> Data {
        var headers: [(String, String)] = []
        var index: [String: Int] = [:]
        var cookies: [String] = []
        for (name, value) in r.headers {
            let n = lowerASCII(name)
            if n == "cookie" {
                for c in value.split(separator: ";") {
                    let t = c.drop { $0 == " " || $0 == "\t" }
                    if !t.isEmpty { cookies.append(String(t)) }
                }
                continue
            }
            if let i = index[n] {
                headers[i].1 += "," + value
            } else {
                index[n] = headers.count
                headers.append((n, value))
            }
        }
        var query: [(String, String)] = []
        var qindex: [String: Int] = [:]
        for pair in r.rawQuery.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let k = queryDecoded(kv[0])
            let v = kv.count > 1 ? queryDecoded(kv[1]) : ""
            if let i = qindex[k] {
                query[i].1 += "," + v
            } else {
                qindex[k] = query.count
                query.append((k, v))
            }
        }
        var o: [UInt8] = []
        o.reserveCapacity(1024 + r.body.count * 4 / 3)
        func key(_ k: String) {
            if o.last != 0x7b { o.append(0x2c) }
            quoted(k, into: &o)
            o.append(0x3a)
        }
        func str(_ k: String, _ v: String) {
            key(k)
            quoted(v, into: &o)
        }
        func object(_ k: String, _ pairs: [(String, String)]) {
            key(k)
            o.append(0x7b)
            for (n, v) in pairs { str(n, v) }
            o.append(0x7d)
        }
        o.append(0x7b)
        str("version", "2.0")
        str("routeKey", "$default")
        str("rawPath", r.rawPath)
        str("rawQueryString", r.rawQuery)
        if !cookies.isEmpty {
            key("cookies")
            o.append(0x5b)
            for (i, c) in cookies.enumerated() {
                if i > 0 { o.append(0x2c) }
                quoted(c, into: &o)
            }
            o.append(0x5d)
        }
        object("headers", headers)
        if !query.isEmpty { object("queryStringParameters", query) }
        key("requestContext")
        o.append(0x7b)
        str("accountId", r.iam?.account ?? "anonymous")
        str("apiId", r.urlID)
        if let iam = r.iam {
            key("authorizer")
            o.append(0x7b)
            key("iam")
            o.append(0x7b)
            str("accessKey", iam.accessKey)
            str("accountId", iam.account)
            str("callerId", iam.accessKey)
            key("cognitoIdentity")
            o += Array("null".utf8)
            key("principalOrgId")
            o += Array("null".utf8)
            str("userArn", "arn:aws:iam::\(iam.account):root")
            str("userId", iam.account)
            o += [0x7d, 0x7d]
        }
        str("domainName", r.domainName)
        str("domainPrefix", r.urlID)
        object(
            "http",
            [
                ("method", r.method), ("path", r.rawPath), ("protocol", "HTTP/1.1"), ("sourceIp", r.sourceIP),
                ("userAgent", index["user-agent"].map { headers[$0].1 } ?? ""),
            ])
        str("requestId", r.requestID)
        str("routeKey", "$default")
        str("stage", "$default")
        str("time", clfTime(r.now))
        key("timeEpoch")
        o += Array(String(Int64(r.now.timeIntervalSince1970 * 1000)).utf8)
        o.append(0x7d)
        var base64 = false
        if !r.body.isEmpty {
            let contentType = index["content-type"].map { headers[$0].1 }
            if isText(contentType: contentType), let text = String(validating: r.body, as: UTF8.self) {
                str("body", text)
            } else {
                str("body", Data(r.body).base64EncodedString())
                base64 = true
            }
        }
        key("isBase64Encoded")
        o += Array((base64 ? "true" : "false").utf8)
        o.append(0x7d)
        return Data(o)
    }

    /// What the client gets.
    public struct Response: Sendable {
        public var status: Int
        /// In order; `Set-Cookie` once per cookie.
        public var headers: [(String, String)]
        public var body: Data
    }

    /// Not a response the URL can send (Lambda answers 502 then).
    public struct Malformed: Error, Sendable {
        public var reason: String
    }

    /// The function's result as an HTTP response. An object with `statusCode` is a response
    /// (`headers`, `multiValueHeaders`, `cookies`, `body`, `isBase64Encoded`); anything else
    /// valid JSON is sent as it is, as JSON, with 200.
    public static func response(_ payload: Data) throws(Malformed) -> Response {
        // Most answers are not a response object (or are one without statusCode): sent as they
        // are, with no parsing (the runtime already sent JSON).
        if payload.firstRange(of: Data("\"statusCode\"".utf8)) == nil,
            payload.first(where: { $0 != 0x20 && $0 != 0x0a && $0 != 0x09 && $0 != 0x0d }) != nil
        {
            return Response(status: 200, headers: [("Content-Type", "application/json")], body: payload)
        }
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
