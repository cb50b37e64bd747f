import Crypto
import Foundation
import Glibc

/// The parts of AWS Signature Version 4 that signing and verifying share: the
/// canonical request, the scope, the signing key and the signature. Both sides
/// build the canonical request the way botocore does, so a signature from any
/// AWS SDK verifies here and ours verify there.
public enum SigV4 {
    public static let algorithm = "AWS4-HMAC-SHA256"
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"

    /// The canonical URI: the path as sent (percent-encoded), with dot segments and
    /// repeated slashes removed, each segment encoded once more (every service but S3).
    public static func canonicalURI(wirePath: String) -> String {
        // Every request: a plain path (unreserved bytes and single slashes, no dot segment)
        // is its own canonical form; one with escapes (a qualified name's `%3A`) only has
        // each `%` encoded once more.
        switch shape(wirePath) {
        case .plain: return wirePath
        case .escaped:
            var out: [UInt8] = []
            out.reserveCapacity(wirePath.utf8.count + 8)
            for b in wirePath.utf8 {
                out.append(b)
                if b == UInt8(ascii: "%") { out.append(contentsOf: [UInt8(ascii: "2"), UInt8(ascii: "5")]) }
            }
            return String(decoding: out, as: UTF8.self)
        case .other: break
        }
        let normalized = removeDotSegments(wirePath.isEmpty ? "/" : wirePath)
        return normalized.split(separator: "/", omittingEmptySubsequences: false).map { encode($0) }.joined(separator: "/")
    }

    enum PathShape { case plain, escaped, other }

    /// `plain`: unreserved bytes and single slashes, no dot segment; `escaped`: the same with
    /// `%XX` escapes too; `other`: anything that needs the full canonicalization.
    static func shape(_ path: String) -> PathShape {
        var previous: UInt8 = 0
        var segmentDots = 0
        var segmentLength = 0
        var any = false
        var escapes = false
        let u = path.utf8
        var i = u.startIndex
        while i != u.endIndex {
            let b = u[i]
            any = true
            if b == UInt8(ascii: "/") {
                if previous == UInt8(ascii: "/") { return .other }
                if segmentLength > 0, segmentDots == segmentLength, segmentLength <= 2 { return .other }
                segmentDots = 0
                segmentLength = 0
            } else if b == UInt8(ascii: "%") {
                let h = u.index(after: i)
                guard h != u.endIndex, hexValue(u[h]) != nil, u.index(after: h) != u.endIndex, hexValue(u[u.index(after: h)]) != nil
                else { return .other }
                escapes = true
                segmentLength += 1
            } else {
                guard isUnreserved(b) else { return .other }
                segmentLength += 1
                if b == UInt8(ascii: ".") { segmentDots += 1 }
            }
            previous = b
            i = u.index(after: i)
        }
        if segmentLength > 0, segmentDots == segmentLength, segmentLength <= 2 { return .other }
        guard any && u.first == UInt8(ascii: "/") else { return .other }
        return escapes ? .escaped : .plain
    }

    static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// RFC 3986 section 5.2.4, plus the collapsing of empty segments AWS asks for.
    static func removeDotSegments(_ path: String) -> String {
        var out: [Substring] = []
        for seg in path.split(separator: "/", omittingEmptySubsequences: true) where seg != "." {
            if seg == ".." { _ = out.popLast() } else { out.append(seg) }
        }
        let lead = path.hasPrefix("/") ? "/" : ""
        let trail = path.hasSuffix("/") && !out.isEmpty ? "/" : ""
        return lead + out.joined(separator: "/") + trail
    }

    /// The canonical query string of decoded pairs: each name and value encoded, sorted by name then value.
    public static func canonicalQuery(_ pairs: [(String, String)]) -> String {
        var encoded = pairs.map { (encode($0.0), encode($0.1)) }
        encoded.sort { a, b in a.0 == b.0 ? a.1 < b.1 : a.0 < b.0 }
        return encoded.map { $0.0 + "=" + $0.1 }.joined(separator: "&")
    }

    /// A raw query string (`a=1&b=%20`) as decoded pairs.
    public static func queryPairs(_ raw: Substring?) -> [(String, String)] {
        guard let raw, !raw.isEmpty else { return [] }
        return raw.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (percentDecoded(String(parts[0])), parts.count > 1 ? percentDecoded(String(parts[1])) : "")
        }
    }

    /// A URI component decoded (kept as it is when it is not valid percent-encoding or does
    /// not decode to UTF-8, as Foundation's `removingPercentEncoding` answers nil then).
    public static func percentDecoded(_ raw: String) -> String {
        guard raw.utf8.contains(UInt8(ascii: "%")) else { return raw }
        let u = Array(raw.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(u.count)
        var i = 0
        while i < u.count {
            if u[i] == UInt8(ascii: "%") {
                guard i + 2 < u.count, let h = hexValue(u[i + 1]), let l = hexValue(u[i + 2]) else { return raw }
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(u[i])
                i += 1
            }
        }
        return String(validating: out, as: UTF8.self) ?? raw
    }

    /// A header's value as signed: trimmed, inner runs of spaces collapsed.
    public static func canonicalHeaderValue(_ v: String) -> String {
        func blank(_ b: UInt8) -> Bool { b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") }
        // Every request: most values have nothing to trim or collapse.
        var clean = true
        var previous: UInt8 = 0
        for b in v.utf8 {
            if b == UInt8(ascii: "\t") || (b == UInt8(ascii: " ") && previous == UInt8(ascii: " ")) {
                clean = false
                break
            }
            previous = b
        }
        if clean, let first = v.utf8.first, let last = v.utf8.last, !blank(first), !blank(last) { return v }
        var out: [UInt8] = []
        out.reserveCapacity(v.utf8.count)
        var pendingSpace = false
        for b in v.utf8 {
            if blank(b) {
                pendingSpace = !out.isEmpty
            } else {
                if pendingSpace { out.append(UInt8(ascii: " ")) }
                pendingSpace = false
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The canonical request, as the bytes that are hashed.
    public static func canonicalRequest(
        method: String, uri: String, query: String, headers: [(String, String)],
        signedHeaders: String, payloadHash: String
    ) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(
            method.utf8.count + uri.utf8.count + query.utf8.count + signedHeaders.utf8.count + 160
                + headers.reduce(0) { $0 + $1.0.utf8.count + $1.1.utf8.count + 2 })
        let newline = UInt8(ascii: "\n")
        out.append(contentsOf: method.utf8)
        out.append(newline)
        out.append(contentsOf: uri.utf8)
        out.append(newline)
        out.append(contentsOf: query.utf8)
        out.append(newline)
        for (name, value) in headers {
            out.append(contentsOf: name.utf8)
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: value.utf8)
            out.append(newline)
        }
        out.append(newline)
        out.append(contentsOf: signedHeaders.utf8)
        out.append(newline)
        out.append(contentsOf: payloadHash.utf8)
        return out
    }

    public static func scope(day: Substring, region: String, service: String) -> String {
        "\(day)/\(region)/\(service)/aws4_request"
    }

    public static func signingKey(secret: String, day: Substring, region: String, service: String) -> SymmetricKey {
        var key = SymmetricKey(data: Array("AWS4\(secret)".utf8))
        for part in [String(day), region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key)))
        }
        return key
    }

    public static func signature(secret: String, amzDate: String, region: String, service: String, canonicalRequest: [UInt8]) -> String {
        let key = MACKey(signingKey(secret: secret, day: amzDate.prefix(8), region: region, service: service))
        return hex(signatureDigest(key: key, amzDate: amzDate, region: region, service: service, canonicalRequest: canonicalRequest))
    }

    /// The signature's 32 bytes: HMAC of the string to sign (algorithm, date, scope and the
    /// canonical request's hash).
    static func signatureDigest(
        key: MACKey, amzDate: String, region: String, service: String,
        canonicalRequest: [UInt8]
    ) -> HashedAuthenticationCode<SHA256> {
        var toSign: [UInt8] = []
        toSign.reserveCapacity(algorithm.utf8.count + amzDate.utf8.count + region.utf8.count + service.utf8.count + 96)
        for part in [algorithm, "\n", amzDate, "\n"] { toSign.append(contentsOf: part.utf8) }
        toSign.append(contentsOf: amzDate.utf8.prefix(8))
        for part in ["/", region, "/", service, "/aws4_request\n"] { toSign.append(contentsOf: part.utf8) }
        appendHex(canonicalRequest.withUnsafeBytes { sha256($0) }, to: &toSign)
        return toSign.withUnsafeBytes { key.authenticationCode($0) }
    }

    static func sha256(_ bytes: UnsafeRawBufferPointer) -> SHA256Digest {
        var h = SHA256()
        h.update(bufferPointer: bytes)
        return h.finalize()
    }

    /// HMAC-SHA256 set up once for a key (swift-crypto's HMAC, its padded key blocks hashed);
    /// each message works on a copy. The daemon keeps one per signing key.
    /// Shared read-only: the hashers are copy-on-write, and every use copies before it updates.
    public struct MACKey: @unchecked Sendable {
        let prepared: HMAC<SHA256>

        public init(_ key: SymmetricKey) { prepared = HMAC<SHA256>(key: key) }

        public func authenticationCode(_ message: UnsafeRawBufferPointer) -> HashedAuthenticationCode<SHA256> {
            var h = prepared
            h.update(data: message)
            return h.finalize()
        }
    }

    /// Whether `signature` (hex, either case) spells `digest`, in time that does not depend
    /// on where they differ.
    static func signatureMatches(_ digest: HashedAuthenticationCode<SHA256>, _ signature: String) -> Bool {
        var signature = signature
        return signature.withUTF8 { s in
            guard s.count == 2 * SHA256.byteCount else { return false }
            // ASCII letters fold to lower case; digits are unchanged by the OR.
            func lower(_ b: UInt8) -> UInt8 { b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") ? b | 0x20 : b }
            var diff: UInt8 = 0
            var i = 0
            digest.withUnsafeBytes { d in
                for b in d {
                    diff |= hexDigits[Int(b >> 4)] ^ lower(s[i])
                    diff |= hexDigits[Int(b & 0x0f)] ^ lower(s[i + 1])
                    i += 2
                }
            }
            return diff == 0
        }
    }

    static func appendHex<S: Sequence>(_ bytes: S, to out: inout [UInt8]) where S.Element == UInt8 {
        for b in bytes {
            out.append(hexDigits[Int(b >> 4)])
            out.append(hexDigits[Int(b & 0x0f)])
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
    private static let upperHexDigits = Array("0123456789ABCDEF".utf8)

    public static func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        appendHex(bytes, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    public static func payloadHash<D: DataProtocol>(_ body: D) -> String { hex(SHA256.hash(data: body)) }

    /// The same for bytes in memory, without the generic walk over a DataProtocol's regions.
    public static func payloadHash(_ body: UnsafeRawBufferPointer) -> String { hex(sha256(body)) }

    /// `yyyyMMdd'T'HHmmss'Z'` in UTC (DateFormatter is slow to make, and this runs per request).
    public static func amzDate(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var tm = tm()
        gmtime_r(&t, &tm)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(tm.tm_year + 1900)\(two(tm.tm_mon + 1))\(two(tm.tm_mday))T\(two(tm.tm_hour))\(two(tm.tm_min))\(two(tm.tm_sec))Z"
    }

    /// Parses `yyyyMMdd'T'HHmmss'Z'`; nil when it is not that.
    public static func parseAmzDate(_ s: String) -> Date? {
        let b = Array(s.utf8)
        guard b.count == 16, b[8] == UInt8(ascii: "T"), b[15] == UInt8(ascii: "Z") else { return nil }
        func num(_ r: Range<Int>) -> Int32? {
            var v: Int32 = 0
            for i in r {
                guard (48...57).contains(b[i]) else { return nil }
                v = v * 10 + Int32(b[i] - 48)
            }
            return v
        }
        guard let y = num(0..<4), let mo = num(4..<6), let d = num(6..<8), let h = num(9..<11), let mi = num(11..<13),
            let se = num(13..<15),
            (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, se < 61
        else { return nil }
        var tm = tm()
        tm.tm_year = y - 1900
        tm.tm_mon = mo - 1
        tm.tm_mday = d
        tm.tm_hour = h
        tm.tm_min = mi
        tm.tm_sec = se
        return Date(timeIntervalSince1970: TimeInterval(timegm(&tm)))
    }

    static func isUnreserved(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// RFC 3986 unreserved characters stay; everything else is percent-encoded.
    public static func encode<S: StringProtocol>(_ s: S) -> String {
        if s.utf8.allSatisfy(isUnreserved) { return String(s) }
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count * 3)
        for b in s.utf8 {
            if isUnreserved(b) {
                out.append(b)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(upperHexDigits[Int(b >> 4)])
                out.append(upperHexDigits[Int(b & 0x0f)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Compares two signatures in time that does not depend on where they differ.
    public static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<x.count { diff |= x[i] ^ y[i] }
        return diff == 0
    }
}
