import Foundation
import PetrelClient
import Testing

@testable import PetrelSigV4

/// The CLI's signer against botocore's, the reference every AWS SDK test suite
/// agrees with: the same request, key and time must give the same signature.
@Suite("SigV4 signing")
struct SigV4Tests {
    /// botocore signs the request (python3 with botocore is on every machine; Scripts/setup ensures it).
    func botocoreSignature(method: String, url: String, headers: [String: String], body: String, amzDate: String) throws -> String {
        let script = """
            import sys, json, datetime
            from unittest import mock
            from botocore.auth import SigV4Auth
            from botocore.awsrequest import AWSRequest
            from botocore.credentials import Credentials
            a = json.loads(sys.argv[1])
            req = AWSRequest(method=a["method"], url=a["url"], data=a["body"].encode(), headers=a["headers"])
            req.context["payload_signing_enabled"] = True
            fixed = datetime.datetime.strptime(a["date"], "%Y%m%dT%H%M%SZ")
            with mock.patch("botocore.auth.get_current_datetime", return_value=fixed):
                SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "lambda", "us-east-1").add_auth(req)
            print(req.headers["Authorization"])
            """
        let args = try JSONSerialization.data(withJSONObject: [
            "method": method, "url": url, "headers": headers, "body": body, "date": amzDate,
        ])
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script, String(decoding: args, as: UTF8.self)]
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        try #require(p.terminationStatus == 0, "botocore could not sign (is boto3 installed? Scripts/setup installs it): \(errText)")
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test(
        "matches botocore for a POST with a body, an ARN in the path and a query string",
        arguments: [
            (
                "POST",
                "http://127.0.0.1:9000/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Ahello/invocations?Qualifier=%24LATEST",
                "{\"a\": 1}"
            ),
            ("GET", "http://127.0.0.1:9000/2015-03-31/functions/?MaxItems=2&Marker=page-1", ""),
            ("PUT", "http://localhost:9000/2015-03-31/functions/my_fn-1/configuration", "{\"Timeout\": 9}"),
        ])
    func matchesBotocore(method: String, url: String, body: String) throws {
        let date = Date(timeIntervalSince1970: 1_764_000_000)
        let signer = SigV4Signer(
            accessKey: "AKIDEXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            region: "us-east-1", service: "lambda")
        let headers = ["Content-Type": "application/json", "X-Amz-Log-Type": "Tail"]
        let ours = signer.sign(method: method, url: URL(string: url)!, headers: headers, body: Array(body.utf8), date: date)
        let theirs = try botocoreSignature(method: method, url: url, headers: headers, body: body, amzDate: ours["X-Amz-Date"]!)
        #expect(ours["Authorization"] == theirs)
    }
}

@Suite("SigV4 canonical forms")
struct SigV4CanonicalTests {
    @Test("plain paths are their own canonical URI; the rest are normalized and encoded once more")
    func uris() {
        #expect(SigV4.canonicalURI(wirePath: "/2015-03-31/functions/noop/invocations") == "/2015-03-31/functions/noop/invocations")
        #expect(SigV4.canonicalURI(wirePath: "/") == "/")
        #expect(SigV4.canonicalURI(wirePath: "") == "/")
        #expect(SigV4.canonicalURI(wirePath: "/a/") == "/a/")
        #expect(SigV4.canonicalURI(wirePath: "/a//b") == "/a/b")
        #expect(SigV4.canonicalURI(wirePath: "/a/./b/../c") == "/a/c")
        #expect(SigV4.canonicalURI(wirePath: "/a/..") == "/")
        #expect(SigV4.canonicalURI(wirePath: "/a/.../b") == "/a/.../b")
        #expect(SigV4.canonicalURI(wirePath: "/.x/y.") == "/.x/y.")
        #expect(SigV4.canonicalURI(wirePath: "/f/arn%3Aaws%3Alambda") == "/f/arn%253Aaws%253Alambda")
        #expect(SigV4.canonicalURI(wirePath: "/f/a b") == "/f/a%20b")
        // Escaped paths take a short way: the same answer as the full canonicalization.
        for path in ["/2015-03-31/functions/f%3A1/invocations", "/a/%2F/b", "/a/%41%7e", "/x%3A/./y", "/x%3A//y", "/x%3", "/x%zz", "/%"] {
            let full = SigV4.removeDotSegments(path).split(separator: "/", omittingEmptySubsequences: false).map { SigV4.encode($0) }
                .joined(separator: "/")
            #expect(SigV4.canonicalURI(wirePath: path) == full, "\(path)")
        }
    }

    @Test("percent-decoding answers what Foundation's does, without it; escapes that are not UTF-8 stay as they came")
    func percentDecoding() {
        var cases = ["plain", "f%3A1", "%E2%82%AC", "%e2%82%ac", "a%20b%2Fc", "%", "%4", "%zz", "%FF", "%C3%28", "100%25", "%00x"]
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("%%%0123456789abcdefABCDEFxyz:/ ")
        for _ in 0..<2000 {
            cases.append(String((0..<Int.random(in: 0...9, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }))
        }
        for c in cases {
            // Where the escapes are not UTF-8, Foundation answers nil or puts U+FFFD in (it varies);
            // Petrel keeps the text as it came.
            let foundation = c.removingPercentEncoding.flatMap { $0.contains("\u{FFFD}") ? nil : $0 }
            #expect(SigV4.percentDecoded(c) == (foundation ?? c), "\(c)")
        }
    }

    @Test("header values: trimmed, runs of blanks collapsed to one space, clean values unchanged")
    func headerValues() {
        #expect(SigV4.canonicalHeaderValue("application/json") == "application/json")
        #expect(SigV4.canonicalHeaderValue("  a   b\t\tc  ") == "a b c")
        #expect(SigV4.canonicalHeaderValue("a\tb") == "a b")
        #expect(SigV4.canonicalHeaderValue(" a") == "a")
        #expect(SigV4.canonicalHeaderValue("a ") == "a")
        #expect(SigV4.canonicalHeaderValue("a b") == "a b")
        #expect(SigV4.canonicalHeaderValue("   ") == "")
        #expect(SigV4.canonicalHeaderValue("") == "")
    }

    @Test("RFC 3986 encoding: unreserved bytes stay, the rest become %XX (upper case), UTF-8 byte by byte")
    func encoding() {
        #expect(SigV4.encode("AZaz09-_.~") == "AZaz09-_.~")
        #expect(SigV4.encode("a b/c:d") == "a%20b%2Fc%3Ad")
        #expect(SigV4.encode("é") == "%C3%A9")
        #expect(SigV4.encode("100%") == "100%25")
    }

    @Test("decoding: %XX back to UTF-8 bytes; text without % as it is; bad encoding kept as sent")
    func decoding() {
        #expect(SigV4.percentDecoded("arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Af") == "arn:aws:lambda:us-east-1:1:function:f")
        #expect(SigV4.percentDecoded("%C3%A9t%C3%A9") == "été")
        #expect(SigV4.percentDecoded("plain-name_1") == "plain-name_1")
        #expect(SigV4.percentDecoded("100%zz") == "100%zz")
        #expect(
            SigV4.queryPairs("Qualifier=%24LATEST&tagKeys=a%20b&empty").map { $0.0 + "=" + $0.1 } == [
                "Qualifier=$LATEST", "tagKeys=a b", "empty=",
            ])
    }
}
