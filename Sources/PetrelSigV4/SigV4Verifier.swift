import Crypto
import Foundation

/// Checks a request's AWS Signature Version 4, in either form the SDKs produce:
/// the `Authorization` header, or the query string of a presigned URL. The
/// failures carry the messages AWS services answer with, so SDK users see the
/// errors they know.
public struct SigV4Verifier: Sendable {
    public var region: String
    /// How far a request's date may be from the server's clock.
    public var maxSkew: TimeInterval = 300
    /// The longest validity a presigned URL may ask for (7 days, as on AWS).
    public static let maxPresignedSeconds = 604_800

    public init(region: String) { self.region = region }

    /// What a request needs for verification. `header` takes a lowercase name and
    /// answers every value of that header joined by commas, nil when absent.
    public struct Request {
        public var method: String
        public var rawPath: String
        public var rawQuery: Substring?
        public var header: (String) -> String?

        public init(method: String, rawPath: String, rawQuery: Substring?, header: @escaping (String) -> String?) {
            self.method = method
            self.rawPath = rawPath
            self.rawQuery = rawQuery
            self.header = header
        }
    }

    /// What the request claims: who signed it, when, for what scope.
    public struct Claim: Sendable {
        public var accessKey: String
        public var amzDate: String
        public var date: Date
        public var day: String
        public var region: String
        public var service: String
        public var signedHeaders: [String]
        public var signature: String
        /// Presigned URLs: their validity in seconds.
        public var expires: Int?
    }

    public enum Failure: Error, Equatable, Sendable {
        /// No signature at all (403 MissingAuthenticationTokenException).
        case missing
        /// A signature that is not well formed (400 IncompleteSignatureException).
        case incomplete(String)
        /// A signature that does not hold (403 InvalidSignatureException).
        case invalid(String)
    }

    public static let mismatchMessage =
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."

    /// Reads the claim from the `Authorization` header or the presigned query.
    public static func claim(_ r: Request) throws(Failure) -> Claim {
        if let auth = r.header("authorization") {
            guard auth.hasPrefix(SigV4.algorithm + " ") else {
                throw .incomplete(
                    "Only \(SigV4.algorithm) signatures are accepted; the Authorization header starts with '\(auth.prefix(20))'.")
            }
            // `Credential=…, SignedHeaders=…, Signature=…`, read as bytes in one pass: this runs
            // on every request, and slicing the header (Character-wise, later by `split`) stood
            // out in the daemon's profile.
            var credential: Substring?
            var signedHeaders: Substring?
            var signature: Substring?
            let bytes = auth.utf8
            func blank(_ b: UInt8) -> Bool { b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") }
            var next = bytes.index(bytes.startIndex, offsetBy: SigV4.algorithm.utf8.count + 1)
            while next < bytes.endIndex {
                let end = bytes[next...].firstIndex(of: UInt8(ascii: ",")) ?? bytes.endIndex
                var item = bytes[next..<end]
                next = end < bytes.endIndex ? bytes.index(after: end) : end
                item = item.drop(while: blank)
                guard let eq = item.firstIndex(of: UInt8(ascii: "=")) else { continue }
                let key = item[..<eq]
                item = item[item.index(after: eq)...]
                while let last = item.last, blank(last) { item = item.dropLast() }
                let value = Substring(item)
                if key.elementsEqual("Credential".utf8) {
                    credential = value
                } else if key.elementsEqual("SignedHeaders".utf8) {
                    signedHeaders = value
                } else if key.elementsEqual("Signature".utf8) {
                    signature = value
                }
            }
            var missing: [String] = []
            for (name, value) in [("Credential", credential), ("SignedHeaders", signedHeaders), ("Signature", signature)] where value == nil
            {
                missing.append("Authorization header requires '\(name)' parameter.")
            }
            guard let amzDate = r.header("x-amz-date") else {
                missing.append("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
                throw .incomplete(missing.joined(separator: " ") + " Authorization=\(SigV4.algorithm)")
            }
            guard missing.isEmpty else { throw .incomplete(missing.joined(separator: " ") + " Authorization=\(SigV4.algorithm)") }
            return try make(
                credential: String(credential!), amzDate: amzDate, signedHeaders: String(signedHeaders!),
                signature: String(signature!), expires: nil)
        }
        let q = Dictionary(SigV4.queryPairs(r.rawQuery), uniquingKeysWith: { a, _ in a })
        guard let algorithm = q["X-Amz-Algorithm"] else { throw .missing }
        guard algorithm == SigV4.algorithm else { throw .incomplete("X-Amz-Algorithm must be \(SigV4.algorithm).") }
        var missing: [String] = []
        for name in ["X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Expires"] where q[name] == nil {
            missing.append("AWS query-string parameters must include '\(name)'.")
        }
        guard missing.isEmpty else { throw .incomplete(missing.joined(separator: " ") + " Re-examine the query-string parameters.") }
        guard let expires = Int(q["X-Amz-Expires"]!), (1...maxPresignedSeconds).contains(expires) else {
            throw .incomplete("X-Amz-Expires must be a number of seconds from 1 to \(maxPresignedSeconds).")
        }
        return try make(
            credential: q["X-Amz-Credential"]!, amzDate: q["X-Amz-Date"]!, signedHeaders: q["X-Amz-SignedHeaders"]!,
            signature: q["X-Amz-Signature"]!, expires: expires)
    }

    static func make(credential: String, amzDate: String, signedHeaders: String, signature: String, expires: Int?) throws(Failure) -> Claim
    {
        // keyid/date/region/service/aws4_request
        var parts: [Substring] = []
        parts.reserveCapacity(6)
        let c = credential.utf8
        var start = c.startIndex
        var more = true
        while more, parts.count <= 5 {
            let slash = c[start...].firstIndex(of: UInt8(ascii: "/")) ?? c.endIndex
            parts.append(Substring(c[start..<slash]))
            more = slash < c.endIndex
            if more { start = c.index(after: slash) }
        }
        guard parts.count == 5, !more, parts[4] == "aws4_request", !parts[0].isEmpty else {
            throw .incomplete(
                "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '\(credential)'")
        }
        guard let date = SigV4.parseAmzDate(amzDate) else {
            throw .incomplete("Date must be in ISO-8601 'basic format'. Got '\(amzDate)'. See http://en.wikipedia.org/wiki/ISO_8601")
        }
        var headers: [String] = []
        var h = signedHeaders.utf8[...]
        while !h.isEmpty {
            let semicolon = h.firstIndex(of: UInt8(ascii: ";")) ?? h.endIndex
            if semicolon > h.startIndex { headers.append(String(Substring(h[..<semicolon]))) }
            h = semicolon < h.endIndex ? h[h.index(after: semicolon)...] : h[h.endIndex...]
        }
        guard !headers.isEmpty, !signature.isEmpty else { throw .incomplete("SignedHeaders and Signature must not be empty.") }
        return Claim(
            accessKey: String(parts[0]), amzDate: amzDate, date: date, day: String(parts[1]), region: String(parts[2]),
            service: String(parts[3]), signedHeaders: headers, signature: signature, expires: expires)
    }

    /// Checks the claim's scope, time and signature against the key's secret. `payloadHash`
    /// is asked only when the request does not name its own (`X-Amz-Content-Sha256`).
    public func verify(
        _ claim: Claim, _ r: Request, secret: String, service: String, now: Date = Date(),
        payloadHash: () -> String
    ) throws(Failure) {
        let key = SigV4.signingKey(secret: secret, day: claim.day[...], region: claim.region, service: claim.service)
        try verify(claim, r, signingKey: SigV4.MACKey(key), service: service, now: now, payloadHash: payloadHash)
    }

    /// The same, with the signing key of the claim's day, region and service derived already.
    public func verify(
        _ claim: Claim, _ r: Request, signingKey: SigV4.MACKey, service: String, now: Date = Date(),
        payloadHash: () -> String
    ) throws(Failure) {
        guard claim.region == region else { throw .invalid("Credential should be scoped to a valid region. ") }
        guard claim.service == service else { throw .invalid("Credential should be scoped to correct service: '\(service)'. ") }
        guard claim.day.utf8.elementsEqual(claim.amzDate.utf8.prefix(8)) else {
            throw .invalid(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '\(claim.day)' != '\(claim.amzDate.prefix(8))', from '\(claim.amzDate)'."
            )
        }
        let signedNames = claim.signedHeaders.sorted()
        guard signedNames.contains("host") else {
            throw .invalid("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
        }
        if let expires = claim.expires {
            if now.timeIntervalSince(claim.date) > TimeInterval(expires) {
                throw .invalid(
                    "Signature expired: the presigned request was valid for \(expires) seconds from \(claim.amzDate); it is now \(SigV4.amzDate(now))."
                )
            }
            if claim.date.timeIntervalSince(now) > maxSkew {
                throw .invalid(
                    "Signature not yet current: \(claim.amzDate) is still later than \(SigV4.amzDate(now.addingTimeInterval(maxSkew))) (\(SigV4.amzDate(now)) + 5 min.)"
                )
            }
        } else if now.timeIntervalSince(claim.date) > maxSkew {
            throw .invalid(
                "Signature expired: \(claim.amzDate) is now earlier than \(SigV4.amzDate(now.addingTimeInterval(-maxSkew))) (\(SigV4.amzDate(now)) - 5 min.)"
            )
        } else if claim.date.timeIntervalSince(now) > maxSkew {
            throw .invalid(
                "Signature not yet current: \(claim.amzDate) is still later than \(SigV4.amzDate(now.addingTimeInterval(maxSkew))) (\(SigV4.amzDate(now)) + 5 min.)"
            )
        }
        var headers: [(String, String)] = []
        for name in signedNames {
            guard let v = r.header(name) else { throw .invalid(Self.mismatchMessage) }
            headers.append((name, SigV4.canonicalHeaderValue(v)))
        }
        var query = SigV4.queryPairs(r.rawQuery)
        if claim.expires != nil { query.removeAll { $0.0 == "X-Amz-Signature" } }
        // The payload hash the signer used: the one it declares, else the body's. Presigned
        // URLs are signed over the body's hash by botocore (every service but S3) and over
        // UNSIGNED-PAYLOAD by S3-style signers; either is accepted.
        var hashes: [String]
        if let declared = r.header("x-amz-content-sha256") {
            if declared != SigV4.unsignedPayload, declared != payloadHash() {
                throw .invalid("The provided 'x-amz-content-sha256' header does not match what was computed.")
            }
            hashes = [declared]
        } else {
            hashes = [payloadHash()]
            if claim.expires != nil { hashes.append(SigV4.unsignedPayload) }
        }
        let uri = SigV4.canonicalURI(wirePath: r.rawPath)
        let canonicalQuery = SigV4.canonicalQuery(query)
        let signed = signedNames.joined(separator: ";")
        for hash in hashes {
            let canonical = SigV4.canonicalRequest(
                method: r.method, uri: uri, query: canonicalQuery, headers: headers,
                signedHeaders: signed, payloadHash: hash)
            let expected = SigV4.signatureDigest(
                key: signingKey, amzDate: claim.amzDate, region: claim.region, service: claim.service,
                canonicalRequest: canonical)
            if SigV4.signatureMatches(expected, claim.signature) { return }
        }
        throw .invalid(Self.mismatchMessage)
    }
}
