import Foundation
import PetrelAPI
import PetrelCore
import PetrelStore
import Testing

@Suite("Function URL payloads (format 2.0)")
struct URLPayloadTests {
    func request(
        query: String = "", headers: [(String, String)] = [], body: [UInt8] = [], iam: (accessKey: String, account: String)? = nil
    ) -> URLPayload.Request {
        URLPayload.Request(
            method: "POST", rawPath: "/a/b%20c", rawQuery: query, headers: headers, body: body, sourceIP: "10.0.0.1",
            domainName: "h:1", urlID: String(repeating: "a", count: 32), requestID: "rid",
            now: Date(timeIntervalSince1970: 1_796_638_289.682), iam: iam)
    }

    func event(_ r: URLPayload.Request) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: URLPayload.event(r)) as? [String: Any])
    }

    @Test("the event: headers in lower case with repeats joined, cookies apart, query decoded and joined, the context")
    func eventShape() throws {
        let e = try event(
            request(
                query: "a=1&a=2&b=x+y%21&flag",
                headers: [("X-Tag", "one"), ("x-tag", "two"), ("Cookie", "c1=v1; c2=v2"), ("User-Agent", "ua")]))
        #expect(e["version"] as? String == "2.0" && e["rawPath"] as? String == "/a/b%20c")
        #expect(e["headers"] as? [String: String] == ["x-tag": "one,two", "user-agent": "ua"])
        #expect(e["cookies"] as? [String] == ["c1=v1", "c2=v2"])
        #expect(e["queryStringParameters"] as? [String: String] == ["a": "1,2", "b": "x y!", "flag": ""])
        let ctx = try #require(e["requestContext"] as? [String: Any])
        #expect(ctx["accountId"] as? String == "anonymous" && ctx["authorizer"] == nil)
        #expect(ctx["time"] as? String == "07/Dec/2026:10:11:29 +0000" && ctx["timeEpoch"] as? Int == 1_796_638_289_682)
        let http = try #require(ctx["http"] as? [String: String])
        #expect(http == ["method": "POST", "path": "/a/b%20c", "protocol": "HTTP/1.1", "sourceIp": "10.0.0.1", "userAgent": "ua"])
        #expect(e["isBase64Encoded"] as? Bool == false && e["body"] == nil)
    }

    @Test("bodies: text content types as text (escaped as JSON), every other body base64; the IAM caller")
    func bodies() throws {
        let text = "quote \" backslash \\ newline \n tab \t bell \u{07} é"
        var e = try event(request(headers: [("Content-Type", "application/json; charset=utf-8")], body: Array(text.utf8)))
        #expect(e["body"] as? String == text && e["isBase64Encoded"] as? Bool == false)
        let blob: [UInt8] = Array(0...255)
        e = try event(request(headers: [("Content-Type", "image/png")], body: blob))
        #expect(e["isBase64Encoded"] as? Bool == true && Data(base64Encoded: e["body"] as? String ?? "") == Data(blob))
        // Text that is not UTF-8 is sent as base64 too.
        e = try event(request(headers: [("Content-Type", "text/plain")], body: [0xff, 0xfe]))
        #expect(e["isBase64Encoded"] as? Bool == true)
        e = try event(request(iam: ("AKIDEXAMPLE", "123456789012")))
        let ctx = try #require(e["requestContext"] as? [String: Any])
        let iam = try #require((ctx["authorizer"] as? [String: Any])?["iam"] as? [String: Any])
        #expect(ctx["accountId"] as? String == "123456789012" && iam["accessKey"] as? String == "AKIDEXAMPLE")
        #expect(iam["cognitoIdentity"] is NSNull)
        for t in ["text/html", "application/xml", "application/vnd.api+json", "application/x-www-form-urlencoded"] {
            #expect(URLPayload.isText(contentType: t), "\(t)")
        }
        for t in ["application/octet-stream", "image/png", "multipart/form-data; boundary=x"] {
            #expect(!URLPayload.isText(contentType: t), "\(t)")
        }
    }

    @Test("answers: a response object, or anything else as JSON with 200; malformed ones refused")
    func answers() throws {
        var r = try URLPayload.response(Data(#"{"hello": "world"}"#.utf8))
        #expect(r.status == 200 && r.body == Data(#"{"hello": "world"}"#.utf8) && r.headers.map(\.0) == ["Content-Type"])
        r = try URLPayload.response(Data(#""text""#.utf8))
        #expect(r.status == 200 && r.body == Data(#""text""#.utf8))
        r = try URLPayload.response(
            Data(
                #"{"statusCode": 201, "headers": {"x-a": "1", "n": 2}, "multiValueHeaders": {"x-m": ["a", "b"]}, "cookies": ["c=1"], "body": "ok"}"#
                    .utf8))
        #expect(r.status == 201 && r.body == Data("ok".utf8))
        #expect(
            r.headers.map { "\($0.0)=\($0.1)" } == ["n=2", "x-a=1", "x-m=a", "x-m=b", "Set-Cookie=c=1", "Content-Type=application/json"])
        r = try URLPayload.response(
            Data(#"{"statusCode": 200, "headers": {"content-type": "image/png"}, "body": "AAEC", "isBase64Encoded": true}"#.utf8))
        #expect(r.body == Data([0, 1, 2]) && r.headers.count == 1)
        for bad in [
            #"{"statusCode": "teapot"}"#, #"{"statusCode": 99}"#, #"{"statusCode": true}"#, #"{"statusCode": 200, "headers": []}"#,
            #"{"statusCode": 200, "body": 5}"#, #"{"statusCode": 200, "body": "!!", "isBase64Encoded": true}"#,
            #"{"statusCode": 200, "cookies": "c=1"}"#, "",
        ] {
            #expect(throws: URLPayload.Malformed.self, "\(bad)") { try URLPayload.response(Data(bad.utf8)) }
        }
    }

    @Test("URL ids: 32 base32 characters, each new one different; URL qualifiers are aliases")
    func ids() throws {
        let ids = (0..<1000).map { _ in FunctionURLConfig.newID() }
        #expect(Set(ids).count == 1000 && ids.allSatisfy { FunctionURLConfig.isID(Substring($0)) })
        #expect(!FunctionURLConfig.isID("short") && !FunctionURLConfig.isID(Substring(String(repeating: "A", count: 32))))
        try FunctionURLConfig.validate(qualifier: "live")
        for bad in ["1", "123", "a b", ""] {
            #expect(throws: DomainError.self) { try FunctionURLConfig.validate(qualifier: bad) }
        }
    }

    @Test("event stream messages: CRC-32 as zlib's, lengths and headers where AWS's framing puts them")
    func eventStream() {
        #expect(Checksum.crc32(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(Checksum.crc32([UInt8]()) == 0)
        let m = EventStream.event("PayloadChunk", contentType: "application/octet-stream", payload: [1, 2, 3])
        func u32(_ at: Int) -> UInt32 { m[at..<at + 4].reduce(0) { $0 << 8 | UInt32($1) } }
        #expect(Int(u32(0)) == m.count)
        #expect(u32(8) == Checksum.crc32(Array(m[0..<8])))
        #expect(u32(m.count - 4) == Checksum.crc32(Array(m[0..<(m.count - 4)])))
        let headersLength = Int(u32(4))
        #expect(Array(m[(12 + headersLength)..<(m.count - 4)]) == [1, 2, 3])
        #expect(m[12] == UInt8(":event-type".utf8.count) && m[12 + 1 + 11] == 7)
    }
}
