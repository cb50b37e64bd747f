import Crypto
import Foundation
import PetrelClient
import Testing

/// The verifier against the signer (which a test checks against botocore):
/// what one signs the other accepts, and any change to what was signed is caught.
@Suite("SigV4 verification")
struct SigV4VerifierTests {
    let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

    func request(_ method: String, _ url: URL, _ headers: [String: String]) -> SigV4Verifier.Request {
        let c = URLComponents(url: url, resolvingAgainstBaseURL: false)!
        let lowered = Dictionary(uniqueKeysWithValues: headers.map { ($0.key.lowercased(), $0.value) })
        let host = url.port.map { "\(url.host!):\($0)" } ?? url.host!
        return SigV4Verifier.Request(method: method, rawPath: c.percentEncodedPath, rawQuery: c.percentEncodedQuery.map { Substring($0) }) {
            name in
            name == "host" ? host : lowered[name]
        }
    }

    func verify(_ r: SigV4Verifier.Request, body: [UInt8], now: Date = Date()) throws(SigV4Verifier.Failure) {
        let claim = try SigV4Verifier.claim(r)
        try SigV4Verifier(region: "us-east-1").verify(claim, r, secret: secret, service: "lambda", now: now) { SigV4.payloadHash(body) }
    }

    /// A signed ListFunctions: its URL, the headers the signer added, and its Authorization.
    func signedList() throws -> (URL, [String: String], String) {
        let url = URL(string: "http://127.0.0.1:9000/2015-03-31/functions")!
        let signer = SigV4Signer(accessKey: "AKIDEXAMPLE", secretKey: secret, region: "us-east-1", service: "lambda")
        let headers = signer.sign(method: "GET", url: url, headers: [:], body: [])
        return (url, headers, try #require(headers["Authorization"]))
    }

    @Test("signed requests verify; changed ones do not")
    func roundTrip() throws {
        let url = URL(string: "http://127.0.0.1:9000/2015-03-31/functions/my%20fn/invocations?Qualifier=%24LATEST")!
        let body = Array("{\"a\":1}".utf8)
        let signer = SigV4Signer(accessKey: "AKIDEXAMPLE", secretKey: secret, region: "us-east-1", service: "lambda")
        let headers = signer.sign(method: "POST", url: url, headers: ["Content-Type": "application/json"], body: body)
            .merging(["Content-Type": "application/json"]) { a, _ in a }
        try verify(request("POST", url, headers), body: body)
        #expect(throws: SigV4Verifier.Failure.invalid(SigV4Verifier.mismatchMessage)) {
            try verify(request("POST", url, headers), body: Array("{\"a\":2}".utf8))
        }
        let other = URL(string: "http://127.0.0.1:9000/2015-03-31/functions/other/invocations?Qualifier=%24LATEST")!
        #expect(throws: SigV4Verifier.Failure.invalid(SigV4Verifier.mismatchMessage)) {
            try verify(request("POST", other, headers), body: body)
        }
        #expect(throws: SigV4Verifier.Failure.self) {
            try verify(request("POST", url, headers), body: body, now: Date().addingTimeInterval(301))
        }
        var noAuth = headers
        noAuth["Authorization"] = nil
        #expect(throws: SigV4Verifier.Failure.missing) { try verify(request("POST", url, noAuth), body: body) }
        var broken = headers
        broken["Authorization"] = "AWS4-HMAC-SHA256 SignedHeaders=host"
        #expect(throws: SigV4Verifier.Failure.self) { try verify(request("POST", url, broken), body: body) }
    }

    @Test("the Authorization header: spacing between its parts does not matter; a missing part is named")
    func authorizationHeader() throws {
        let (url, headers, auth) = try signedList()
        let parts = auth.dropFirst("AWS4-HMAC-SHA256 ".count).components(separatedBy: ", ")
        #expect(parts.count == 3)
        for spaced in [parts.joined(separator: ","), parts.joined(separator: " ,\t "), parts.reversed().joined(separator: ", ") + " "] {
            var h = headers
            h["Authorization"] = "AWS4-HMAC-SHA256 " + spaced
            try verify(request("GET", url, h), body: [])
        }
        for (i, name) in ["Credential", "SignedHeaders", "Signature"].enumerated() {
            var h = headers
            h["Authorization"] = "AWS4-HMAC-SHA256 " + parts.enumerated().filter { $0.offset != i }.map(\.element).joined(separator: ", ")
            do {
                try verify(request("GET", url, h), body: [])
                Issue.record("accepted without \(name)")
            } catch {
                guard case .incomplete(let message) = error else {
                    Issue.record("\(error)")
                    continue
                }
                #expect(message.contains("requires '\(name)' parameter"), "\(message)")
            }
        }
    }

    @Test("dates parse back to the instant they name")
    func dates() {
        let now = Date(timeIntervalSince1970: 1_795_000_000)
        #expect(SigV4.parseAmzDate(SigV4.amzDate(now)) == now)
        #expect(SigV4.parseAmzDate("20261301T000000Z") == nil)
        #expect(SigV4.parseAmzDate("2026-11-23T00:00:00Z") == nil)
    }

    @Test("the prepared MAC key gives RFC 4231's HMAC-SHA256 values, for a short key and one longer than a block")
    func preparedMAC() {
        let cases: [(key: [UInt8], message: [UInt8], mac: String)] = [
            // Test case 2: a 4-byte key.
            (
                Array("Jefe".utf8), Array("what do ya want for nothing?".utf8),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
            ),
            // Test case 6: a 131-byte key, hashed first.
            (
                [UInt8](repeating: 0xaa, count: 131), Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
            ),
        ]
        for c in cases {
            let key = SigV4.MACKey(SymmetricKey(data: c.key))
            let once = c.message.withUnsafeBytes { SigV4.hex(key.authenticationCode($0)) }
            #expect(once == c.mac)
            // The same key again: its prepared state is not used up by the first message.
            let twice = c.message.withUnsafeBytes { SigV4.hex(key.authenticationCode($0)) }
            #expect(twice == c.mac)
        }
    }

    @Test("the signature's hex may be in either case; a changed, short or long one is refused")
    func signatureSpelling() throws {
        let (url, headers, auth) = try signedList()
        let range = try #require(auth.range(of: "Signature="))
        let signature = String(auth[range.upperBound...])
        #expect(signature.count == 64)
        func with(_ sig: String) -> [String: String] {
            var h = headers
            h["Authorization"] = String(auth[..<range.upperBound]) + sig
            return h
        }
        try verify(request("GET", url, with(signature.uppercased())), body: [])
        let last = signature.last!
        for bad in [
            String(signature.dropLast()) + (last == "0" ? "1" : "0"), String(signature.dropLast()), signature + "0",
            String(signature.dropLast()) + "g",
        ] {
            #expect(throws: SigV4Verifier.Failure.invalid(SigV4Verifier.mismatchMessage)) {
                try verify(request("GET", url, with(bad)), body: [])
            }
        }
    }

    @Test("a Credential of other than five parts ending in aws4_request is incomplete")
    func credentialShapes() throws {
        let (url, headers, auth) = try signedList()
        let day = String(try #require(headers["X-Amz-Date"]).prefix(8))
        let good = "AKIDEXAMPLE/\(day)/us-east-1/lambda/aws4_request"
        #expect(auth.contains("Credential=\(good),"))
        for credential in [
            "AKIDEXAMPLE/\(day)/us-east-1/aws4_request", good + "/", good + "/x", "/\(day)/us-east-1/lambda/aws4_request",
            "AKIDEXAMPLE/\(day)/us-east-1/lambda/aws4_requests", "AKIDEXAMPLE",
        ] {
            var h = headers
            h["Authorization"] = auth.replacingOccurrences(of: "Credential=\(good),", with: "Credential=\(credential),")
            do {
                try verify(request("GET", url, h), body: [])
                Issue.record("accepted Credential=\(credential)")
            } catch {
                guard case .incomplete(let message) = error else {
                    Issue.record("\(credential): \(error)")
                    continue
                }
                #expect(message.contains("exactly 5 slash-delimited elements"), "\(message)")
            }
        }
    }
}
