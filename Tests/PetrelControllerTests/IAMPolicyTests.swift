import Foundation
import Testing

@testable import PetrelCore
@testable import PetrelStore

/// IAM's policy grammar as Petrel reads and evaluates it, and the sealed session tokens.
@Suite("IAM policies and sessions")
struct IAMPolicyTests {
    func identity(_ json: String) throws -> IAMPolicy { try IAMPolicy(json: json, kind: .identity) }

    @Test("wildcards: actions without regard to case, resources with it; ? is one character")
    func globs() {
        #expect(IAMPolicy.glob("lambda:Get*", "lambda:GetFunctionConfiguration", caseInsensitive: true))
        #expect(IAMPolicy.glob("LAMBDA:get*", "lambda:GetFunction", caseInsensitive: true))
        #expect(!IAMPolicy.glob("lambda:Get*", "lambda:ListFunctions", caseInsensitive: true))
        #expect(IAMPolicy.glob("arn:aws:sqs:*:*:q?", "arn:aws:sqs:us-east-1:1:q1", caseInsensitive: false))
        #expect(!IAMPolicy.glob("arn:aws:sqs:*:*:q?", "arn:aws:sqs:us-east-1:1:q10", caseInsensitive: false))
        #expect(!IAMPolicy.glob("arn:aws:sqs:*:*:Q1", "arn:aws:sqs:us-east-1:1:q1", caseInsensitive: false))
        #expect(IAMPolicy.glob("*", "", caseInsensitive: false))
        #expect(IAMPolicy.glob("a*b*c", "axxbyyc", caseInsensitive: false))
        #expect(!IAMPolicy.glob("a*b*c", "axxbyy", caseInsensitive: false))
    }

    @Test("explicit deny wins over allow, nothing allowed is denied, NotAction and NotResource invert")
    func decisions() throws {
        let p = try identity(
            """
            {"Version": "2012-10-17", "Statement": [
              {"Effect": "Allow", "Action": ["sqs:*", "lambda:InvokeFunction"], "Resource": "*"},
              {"Effect": "Deny", "Action": "sqs:DeleteQueue", "Resource": "arn:aws:sqs:*:*:keep-*"}
            ]}
            """)
        #expect(IAMPolicy.decide([p], action: "sqs:SendMessage", resource: "arn:aws:sqs:r:1:keep-me") == .allow)
        #expect(IAMPolicy.decide([p], action: "sqs:DeleteQueue", resource: "arn:aws:sqs:r:1:keep-me") == .explicitDeny)
        #expect(IAMPolicy.decide([p], action: "sqs:DeleteQueue", resource: "arn:aws:sqs:r:1:other") == .allow)
        #expect(IAMPolicy.decide([p], action: "sns:Publish", resource: "*") == .implicitDeny)
        #expect(IAMPolicy.decide([], action: "sns:Publish", resource: "*") == .implicitDeny)
        let not = try identity(
            #"{"Statement": {"Effect": "Allow", "NotAction": "iam:*", "NotResource": "arn:aws:lambda:*:*:function:admin*"}}"#)
        #expect(IAMPolicy.decide([not], action: "lambda:InvokeFunction", resource: "arn:aws:lambda:r:1:function:x") == .allow)
        #expect(IAMPolicy.decide([not], action: "iam:CreateRole", resource: "arn:aws:iam::1:role/x") == .implicitDeny)
        #expect(IAMPolicy.decide([not], action: "lambda:InvokeFunction", resource: "arn:aws:lambda:r:1:function:admin1") == .implicitDeny)
        // Across documents too.
        let deny = try identity(#"{"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}"#)
        #expect(IAMPolicy.decide([p, deny], action: "sqs:SendMessage", resource: "x") == .explicitDeny)
    }

    @Test("what Petrel cannot evaluate is refused, with the reason")
    func malformed() {
        let cases: [(String, IAMPolicy.Kind, String)] = [
            ("[]", .identity, "not a JSON object"),
            (#"{"Statement": []}"#, .identity, "no Statement"),
            (#"{"Version": "2020-01-01", "Statement": []}"#, .identity, "Version"),
            (#"{"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}"#, .identity, "Effect"),
            (#"{"Statement": [{"Effect": "Allow", "Resource": "*"}]}"#, .identity, "Action or NotAction"),
            (#"{"Statement": [{"Effect": "Allow", "Action": "s3", "Resource": "*"}]}"#, .identity, "service:Action"),
            (#"{"Statement": [{"Effect": "Allow", "Action": "*", "NotAction": "*", "Resource": "*"}]}"#, .identity, "both"),
            (#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {}}]}"#, .identity, "Condition"),
            (#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Principal": "*"}]}"#, .identity, "principal"),
            (#"{"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*", "Principal": "*"}]}"#, .trust, "Resource"),
            (#"{"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole"}]}"#, .trust, "Principal"),
            (#"{"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Federated": "x"}}]}"#, .trust, "Federated"),
            (
                #"{"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"AWS": "bob"}}]}"#, .trust,
                "Invalid principal"
            ),
        ]
        for (json, kind, words) in cases {
            let e = #expect(throws: DomainError.self, "\(json)") { try IAMPolicy(json: json, kind: kind) }
            #expect(e?.code == .malformedPolicy)
            #expect(e?.message.contains(words) == true, "\(json): \(e?.message ?? "")")
        }
    }

    @Test("a trust policy names accounts, roles (and their sessions) and services")
    func trust() throws {
        let t = try IAMPolicy(
            json: """
                {"Version": "2012-10-17", "Statement": [
                  {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"},
                  {"Effect": "Allow", "Principal": {"AWS": ["111111111111", "arn:aws:iam::222222222222:role/ops"]}, "Action": "sts:AssumeRole"},
                  {"Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::333333333333:root"}, "Action": "sts:*"}
                ]}
                """, kind: .trust)
        #expect(t.trusts(callerARN: nil, account: nil, service: "lambda.amazonaws.com") == .allow)
        #expect(t.trusts(callerARN: nil, account: nil, service: "events.amazonaws.com") == .implicitDeny)
        #expect(t.trusts(callerARN: "arn:aws:iam::111111111111:root", account: "111111111111") == .allow)
        #expect(t.trusts(callerARN: "arn:aws:sts::111111111111:assumed-role/any/s", account: "111111111111") == .allow)
        #expect(t.trusts(callerARN: "arn:aws:sts::222222222222:assumed-role/ops/s", account: "222222222222") == .allow)
        #expect(t.trusts(callerARN: "arn:aws:sts::222222222222:assumed-role/dev/s", account: "222222222222") == .implicitDeny)
        #expect(t.trusts(callerARN: "arn:aws:iam::222222222222:root", account: "222222222222") == .implicitDeny)
        #expect(t.trusts(callerARN: "arn:aws:iam::333333333333:root", account: "333333333333") == .explicitDeny)
    }

    @Test("session tokens: opened only as sealed, and only with the key they name")
    func sessions() throws {
        let dir = try makeScratchDirectory("sessions")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try PetrelDatabase(path: dir + "/petrel.sqlite")
        let accounts = AccountStore(db, keys: try KeyRing(directory: dir, db: db))
        let (token, s) = try accounts.sessions.issue(
            account: "111111111111", expires: 42, role: (name: "r", id: "AROAX", session: "fn"))
        #expect(s.accessKey.hasPrefix("ASIA") && s.secret.count == 40)
        #expect(s.arn == "arn:aws:sts::111111111111:assumed-role/r/fn")
        #expect(s.userID == "AROAX:fn")
        #expect(accounts.sessions.open(token) == s)
        #expect(!token.contains(s.secret), "the secret travels sealed")
        // One character changed: not a token of ours.
        var bytes = Array(token.utf8)
        bytes[20] = bytes[20] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(accounts.sessions.open(String(decoding: bytes, as: UTF8.self)) == nil)
        #expect(accounts.sessions.open("PTS1" + String(repeating: "A", count: 5000)) == nil)
    }

    @Test("role ARNs with and without paths")
    func roleARNs() {
        #expect(AccountStore.parseRoleARN("arn:aws:iam::111111111111:role/app")! == ("111111111111", "/", "app"))
        #expect(AccountStore.parseRoleARN("arn:aws:iam::111111111111:role/svc/team/app")! == ("111111111111", "/svc/team/", "app"))
        #expect(AccountStore.parseRoleARN("arn:aws:iam::111111111111:user/app") == nil)
        #expect(AccountStore.parseRoleARN("arn:aws:iam::111111111111:role/") == nil)
    }
}
