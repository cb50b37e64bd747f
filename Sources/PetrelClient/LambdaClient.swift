import AsyncHTTPClient
import Foundation
import Glibc
import NIOCore
import NIOHTTP1

/// A small client of petreld's Lambda API, signing like the SDKs do.
public struct LambdaClient: Sendable {
    public var endpoint: URL
    public var signer: SigV4Signer
    let http: HTTPClient

    public init(endpoint: URL, credentials: Credentials, region: String, http: HTTPClient = .shared) {
        self.endpoint = endpoint
        signer = SigV4Signer(
            accessKey: credentials.accessKey, secretKey: credentials.secretKey,
            sessionToken: credentials.sessionToken, region: region, service: "lambda")
        self.http = http
    }

    /// Fails fast with a sentence when nothing listens at the endpoint (the HTTP
    /// client would otherwise retry the connection until the request's deadline).
    public func checkReachable() throws {
        let host = endpoint.host ?? "127.0.0.1"
        let port = endpoint.port ?? (endpoint.scheme == "https" ? 443 : 80)
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &res) == 0, let first = res else {
            throw APIError(code: "Unreachable", message: "cannot resolve \(host) (from --endpoint \(endpoint.absoluteString))", status: 0)
        }
        defer { freeaddrinfo(res) }
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype, a.pointee.ai_protocol)
            if fd >= 0 {
                var tv = timeval(tv_sec: 5, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                let ok = connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0
                close(fd)
                if ok { return }
            }
            ai = a.pointee.ai_next
        }
        throw APIError(
            code: "Unreachable",
            message: "cannot reach petreld at \(endpoint.absoluteString): nothing answers there; is it running? Start it with Scripts/run.",
            status: 0)
    }

    public struct Response: Sendable {
        public var status: Int
        public var headers: [String: String]
        public var body: [UInt8]
        public var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] }
    }

    /// An error the API answered with, or a failure to reach it; reads as a sentence.
    public struct APIError: Error, CustomStringConvertible {
        public var code: String
        public var message: String
        public var status: Int
        public var description: String { status == 0 ? message : "\(message) (\(code))" }
    }

    /// The endpoint with `path` (each segment percent-encoded, as the SDKs send it) and `query`.
    public func url(_ path: String, query: [String: String] = [:]) -> URL {
        var comps = URLComponents(url: endpoint, resolvingAgainstBaseURL: false)!
        comps.percentEncodedPath = path.split(separator: "/", omittingEmptySubsequences: false)
            .map { SigV4.encode(String($0)) }.joined(separator: "/")
        if !query.isEmpty { comps.queryItems = query.sorted { $0.key < $1.key }.map { URLQueryItem(name: $0.key, value: $0.value) } }
        return comps.url!
    }

    public func send(
        _ method: String, _ path: String, query: [String: String] = [:], headers: [String: String] = [:],
        body: [UInt8] = [], service: String = "lambda", timeout: TimeAmount = .seconds(960)
    ) async throws -> Response {
        let url = url(path, query: query)
        var s = signer
        s.service = service
        var all = headers
        let signed = s.sign(method: method, url: url, headers: all, body: body)
        all.merge(signed) { _, n in n }
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = HTTPMethod(rawValue: method)
        for (k, v) in all { request.headers.add(name: k, value: v) }
        request.headers.add(name: "User-Agent", value: "petrel-cli")
        if !body.isEmpty { request.body = .bytes(body) }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: timeout)
        } catch {
            throw APIError(
                code: "Unreachable",
                message: "cannot reach petreld at \(endpoint.absoluteString) (\(error)); is it running? Start it with Scripts/run.",
                status: 0)
        }
        let bytes = Array(buffer: try await response.body.collect(upTo: 64 * 1024 * 1024))
        var h: [String: String] = [:]
        for (k, v) in response.headers { h[k.lowercased()] = v }
        let out = Response(status: Int(response.status.code), headers: h, body: bytes)
        guard out.status < 300 else {
            let j = out.json ?? [:]
            let type = (j["__type"] as? String).map { String($0.split(separator: "#").last ?? "") }
            let code = h["x-amzn-errortype"].map { String($0.split(separator: ":")[0]) } ?? type ?? "HTTP \(out.status)"
            let message = (j["Message"] as? String) ?? (j["message"] as? String) ?? String(decoding: bytes, as: UTF8.self)
            throw APIError(code: code, message: message, status: out.status)
        }
        return out
    }

    /// A call of a query API (IAM, STS): the XML answer's text; a refusal's `<Code>` is the error's code.
    public func query(_ service: String, _ action: String, _ params: [String: String] = [:]) async throws -> String {
        var form = ["Action": action, "Version": service == "iam" ? "2010-05-08" : "2011-06-15"]
        form.merge(params) { _, p in p }
        let body = form.sorted { $0.key < $1.key }.map { SigV4.encode($0.key) + "=" + SigV4.encode($0.value) }.joined(separator: "&")
        do {
            let out = try await send(
                "POST", "/", headers: ["Content-Type": "application/x-www-form-urlencoded; charset=utf-8"], body: Array(body.utf8),
                service: service)
            return String(decoding: out.body, as: UTF8.self)
        } catch var e as APIError where e.status >= 400 {
            if let code = Self.element("Code", in: e.message) {
                e.message = Self.element("Message", in: e.message) ?? e.message
                e.code = code
            }
            throw e
        }
    }

    /// The text of the first `<name>` element of an XML answer (entities left as they are).
    public static func element(_ name: String, in xml: String) -> String? {
        guard let open = xml.range(of: "<\(name)>"), let close = xml.range(of: "</\(name)>", range: open.upperBound..<xml.endIndex) else {
            return nil
        }
        return String(xml[open.upperBound..<close.lowerBound])
    }

    /// A call of the SQS API (JSON 1.0, `X-Amz-Target: AmazonSQS.<operation>`).
    public func sqs(_ operation: String, _ body: [String: Any]) async throws -> [String: Any] {
        let out = try await send(
            "POST", "/", headers: ["Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS." + operation],
            body: Array(try JSONSerialization.data(withJSONObject: body)), service: "sqs")
        return out.json ?? [:]
    }
}
