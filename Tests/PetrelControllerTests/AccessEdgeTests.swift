import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PetrelCore
import PetrelStore
import Testing

@testable import PetrelAPI

/// Two promises of the API's edge that the end-to-end tests cannot reach from
/// loopback or within ten minutes: who may read /metrics, and how long a code
/// link holds.
@Suite("API edge")
struct AccessEdgeTests {
    @Test("/metrics' loopback check takes loopback addresses only")
    func loopback() {
        for ip in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] { #expect(PetrelRequestContext.isLoopback(ip), "\(ip)") }
        for ip in ["10.0.0.1", "192.168.127.1", "::ffff:10.0.0.1", "fe80::1", "unknown", ""] {
            #expect(!PetrelRequestContext.isLoopback(ip), "\(ip)")
        }
    }

    @Test("the invoke fast path takes POST …/functions/NAME/invocations only, and hands the rest to the router")
    func invokePaths() {
        func name(_ path: String, _ method: HTTPRequest.Method = .post) -> String? {
            FastPathHandler.invokeName(HTTPRequest(method: method, scheme: nil, authority: "h", path: path))
        }
        #expect(name("/2015-03-31/functions/fn/invocations") == "fn")
        #expect(name("/2015-03-31/functions/fn/invocations?Qualifier=%24LATEST") == "fn")
        #expect(
            name("/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Afn/invocations")
                == "arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Afn")
        #expect(name("/2015-03-31/functions/f\u{e9}/invocations") == "f\u{e9}")
        #expect(name("/2015-03-31/functions/x/invocations", .get) == nil)
        for path in [
            "/2015-03-31/functions//invocations", "/2015-03-31/functions/invocations", "/2015-03-31/functions/a/b/invocations",
            "/2015-03-31/functions/fn/invocation", "/2015-03-31/functions/fn/invocations/", "/2015-03-31/functions/fn",
            "/2015-03-31/function/fn/invocations", "/2015-03-31/functions/?/invocations", "/",
        ] {
            #expect(name(path) == nil, "\(path)")
        }
    }

    @Test("the signature check reads a signed header whatever its case, and several fields of it joined")
    func signedHeaderLookup() {
        var fields = HTTPFields()
        fields[HTTPField.Name("X-Amz-Date")!] = "20261123T000000Z"
        fields.append(HTTPField(name: HTTPField.Name("X-Multi")!, value: "a"))
        fields.append(HTTPField(name: HTTPField.Name("x-multi")!, value: "b"))
        let req = Request(
            head: HTTPRequest(method: .get, scheme: "http", authority: "127.0.0.1:9000", path: "/x", headerFields: fields),
            body: RequestBody(buffer: ByteBuffer()))
        let r = Gatekeeper.verifierRequest(req)
        #expect(r.header("x-amz-date") == "20261123T000000Z")
        #expect(r.header("X-Amz-Date") == "20261123T000000Z")
        #expect(r.header("x-multi") == "a,b")
        #expect(r.header("host") == "127.0.0.1:9000")
        #expect(r.header("x-amz-dat") == nil)
        #expect(r.header("x-amz-date-") == nil)
        #expect(r.header("bad name") == nil)
        #expect(Gatekeeper.sameName("x-amz-date", "X-AMZ-DATE") && !Gatekeeper.sameName("x-amz-date", "x_amz_date"))
    }

    @Test("a code link opens only its function's code, and only until it expires")
    func codeLinks() throws {
        let dir = try makeScratchDirectory("links")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keys = try KeyRing(directory: dir, db: try PetrelDatabase(path: dir + "/petrel.sqlite"))
        let links = try CodeLinks(keys: keys, scheme: "http")
        let f = FunctionRecord(
            account: "111111111111", name: "fn", runtime: .python311, handler: "a.h", role: "arn:aws:iam::111111111111:role/r",
            codeSha256: Data(repeating: 7, count: 32).base64EncodedString(), codeSize: 1)
        let now = Date()
        let q = Dictionary(
            uniqueKeysWithValues: URLComponents(string: "http://h" + links.path(for: f, now: now))!.queryItems!.map { ($0.name, $0.value!) }
        )
        func check(
            account: String = "111111111111", name: String = "fn", hex: String? = q["sha"], signature: String? = q["signature"],
            at: Date = now
        ) throws -> String {
            try links.check(account: account, name: name, hex: hex, expires: q["expires"], signature: signature, now: at)
        }
        #expect(try check() == f.codeDigestHex)
        #expect(try check(at: now.addingTimeInterval(599)) == f.codeDigestHex)
        #expect(throws: LambdaError.self) { try check(at: now.addingTimeInterval(601)) }
        #expect(throws: LambdaError.self) { try check(name: "other") }
        #expect(throws: LambdaError.self) { try check(account: "222222222222") }
        #expect(throws: LambdaError.self) { try check(hex: String(repeating: "0", count: 64)) }
        #expect(throws: LambdaError.self) { try check(signature: String(repeating: "0", count: 64)) }
        #expect(throws: LambdaError.self) { try check(signature: nil) }
        // Links made by another process on the same data directory hold (the key is derived, not random per run).
        let reopened = try KeyRing(directory: dir, db: try PetrelDatabase(path: dir + "/petrel.sqlite"))
        #expect(
            try CodeLinks(keys: reopened, scheme: "http").check(
                account: "111111111111", name: "fn", hex: q["sha"], expires: q["expires"],
                signature: q["signature"], now: now) == f.codeDigestHex)
    }
}
