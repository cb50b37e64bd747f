import Foundation

/// AWS Signature Version 4, header form, as the AWS SDKs sign requests.
public struct SigV4Signer: Sendable {
    public var accessKey: String
    public var secretKey: String
    public var sessionToken: String?
    public var region: String
    public var service: String

    public init(accessKey: String, secretKey: String, sessionToken: String? = nil, region: String, service: String) {
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.sessionToken = sessionToken
        self.region = region
        self.service = service
    }

    /// Headers to add to a request: `Authorization`, `X-Amz-Date` (and the token). The payload's
    /// hash is always signed; it is sent as `X-Amz-Content-Sha256` only when asked (S3 style),
    /// as botocore does for Lambda.
    public func sign(
        method: String, url: URL, headers: [String: String], body: [UInt8], date: Date = Date(),
        contentHashHeader: Bool = false
    ) -> [String: String] {
        let amzDate = SigV4.amzDate(date)
        let payloadHash = SigV4.payloadHash(body)
        var all = headers
        all["host"] = url.port.map { "\(url.host ?? ""):\($0)" } ?? (url.host ?? "")
        all["x-amz-date"] = amzDate
        if contentHashHeader { all["x-amz-content-sha256"] = payloadHash }
        if let sessionToken { all["x-amz-security-token"] = sessionToken }
        let lowered = Dictionary(all.map { ($0.key.lowercased(), SigV4.canonicalHeaderValue($0.value)) }, uniquingKeysWith: { a, _ in a })
        let names = lowered.keys.sorted()
        let signedHeaders = names.joined(separator: ";")
        let components = URLComponents(url: url, resolvingAgainstBaseURL: false)
        let query = (components?.queryItems ?? []).map { ($0.name, $0.value ?? "") }
        let canonical = SigV4.canonicalRequest(
            method: method, uri: SigV4.canonicalURI(wirePath: components?.percentEncodedPath ?? "/"),
            query: SigV4.canonicalQuery(query), headers: names.map { ($0, lowered[$0]!) },
            signedHeaders: signedHeaders, payloadHash: payloadHash)
        let signature = SigV4.signature(secret: secretKey, amzDate: amzDate, region: region, service: service, canonicalRequest: canonical)
        let scope = SigV4.scope(day: amzDate.prefix(8), region: region, service: service)
        var out = [
            "X-Amz-Date": amzDate,
            "Authorization": "\(SigV4.algorithm) Credential=\(accessKey)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)",
        ]
        if let sessionToken { out["X-Amz-Security-Token"] = sessionToken }
        if contentHashHeader { out["X-Amz-Content-Sha256"] = payloadHash }
        return out
    }
}
