import Foundation
import Hummingbird
import Logging
import PetrelCore
import PetrelStore

/// STS (query protocol, as botocore's `sts` model describes it): `GetCallerIdentity`, which
/// the AWS tools call to check credentials; `AssumeRole`, a role's temporary credentials when
/// its trust policy lets the caller in (within an account or across accounts); and
/// `GetSessionToken`, temporary credentials standing for an account's key.
public struct STSAPI: Sendable {
    let pipeline: RequestPipeline
    let accounts: AccountStore
    let sessions: SessionTokens
    static let namespace = "https://sts.amazonaws.com/doc/2011-06-15/"

    public init(accounts: AccountStore, gate: Gatekeeper, logger: Logger) {
        self.accounts = accounts
        sessions = accounts.sessions
        pipeline = RequestPipeline(gate: gate, logger: logger)
    }

    typealias Node = QueryXML.Node
    static func error(_ code: String, _ message: String, status: Int = 400) -> LambdaError { .named(code, message, status: status) }

    func serve(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        var form: [String: String] = [:]
        return await pipeline.run(
            req, ctx, action: "STS", limit: 65536, service: "sts", style: .queryXML,
            tooLarge: { _ in .named("RequestEntityTooLarge", "The request is too large.", status: 413) },
            audit: { _ in
                var described: [String: String] = [:]
                for k in ["RoleArn", "RoleSessionName", "DurationSeconds"] { described[k] = form[k] }
                let data = (try? JSONSerialization.data(withJSONObject: described, options: [.sortedKeys])) ?? Data("{}".utf8)
                return .init(resource: form["RoleArn"], parameters: String(decoding: data, as: UTF8.self))
            },
            actionInBody: { body in
                form = QueryXML.form(body)
                return form["Action"] ?? "STS"
            },
            access: { _, action in
                switch action {
                // Anyone may ask who they are (as on AWS, no permission needed).
                case "GetCallerIdentity": []
                case "AssumeRole": [.init(action: "sts:AssumeRole", resource: form["RoleArn"] ?? "*")]
                default: [.init(action: "sts:" + action, resource: "*")]
                }
            },
            denied: LambdaError.Code("AccessDenied", status: 403)
        ) { call in
            let action = form["Action"] ?? ""
            let result: [Node]
            switch action {
            case "GetCallerIdentity":
                result = [
                    .text("Arn", call.caller.arn), .text("UserId", call.caller.session?.userID ?? call.caller.account),
                    .text("Account", call.caller.account),
                ]
            case "AssumeRole": result = try assumeRole(form, caller: call.caller)
            case "GetSessionToken": result = try sessionToken(form, caller: call.caller)
            default:
                throw Self.error(
                    "InvalidAction",
                    "Petrel's STS serves GetCallerIdentity, AssumeRole and GetSessionToken; \(action.isEmpty ? "no Action was given" : action) is not one of them."
                )
            }
            return QueryXML.response(action, namespace: Self.namespace, result, requestID: call.id)
        }
    }

    func assumeRole(_ f: [String: String], caller: Caller) throws -> [Node] {
        guard let arn = f["RoleArn"], arn.utf8.count >= 20 else {
            throw Self.error(
                "ValidationError",
                "1 validation error detected: Value at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20"
            )
        }
        guard let session = f["RoleSessionName"], (2...64).contains(session.count),
            session.unicodeScalars.allSatisfy({
                CharacterSet.alphanumerics.contains($0) && $0.isASCII || "_+=,.@-".unicodeScalars.contains($0)
            })
        else {
            throw Self.error(
                "ValidationError",
                "1 validation error detected: Value '\(f["RoleSessionName"] ?? "null")' at 'roleSessionName' failed to satisfy constraint: Member must have length from 2 to 64 and match the pattern [\\w+=,.@-]*"
            )
        }
        guard f["Policy"] == nil, f["PolicyArns.member.1.arn"] == nil else {
            throw Self.error("ValidationError", "Petrel does not support session policies: the session gets its role's policies.")
        }
        let denied = Self.error(
            "AccessDenied", "User: \(caller.arn) is not authorized to perform: sts:AssumeRole on resource: \(arn)", status: 403)
        guard let role = try accounts.role(arn: arn) else { throw denied }
        guard let trust = try? IAMPolicy(json: role.trustPolicy, kind: .trust),
            trust.trusts(callerARN: caller.arn, account: caller.account) == .allow
        else { throw denied }
        let requested = try int(f, "DurationSeconds", 900...43200) ?? 3600
        guard requested <= role.maxSessionSeconds else {
            throw Self.error(
                "ValidationError",
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role (\(role.maxSessionSeconds) seconds).")
        }
        let expires = Int64(Date().timeIntervalSince1970) + Int64(requested)
        let (token, s) = try sessions.issue(
            account: role.account, expires: expires, role: (role.name, role.id, role.path, session))
        return [
            Self.credentials(token, s),
            .element("AssumedRoleUser", [.text("AssumedRoleId", s.userID), .text("Arn", s.arn)]),
            .text("PackedPolicySize", "0"),
        ]
    }

    func sessionToken(_ f: [String: String], caller: Caller) throws -> [Node] {
        guard caller.session == nil else {
            throw Self.error("AccessDenied", "Cannot call GetSessionToken with session credentials", status: 403)
        }
        let seconds = try int(f, "DurationSeconds", 900...129_600) ?? 43200
        let (token, s) = try sessions.issue(
            account: caller.account, expires: Int64(Date().timeIntervalSince1970) + Int64(seconds), baseKey: caller.accessKey)
        return [Self.credentials(token, s)]
    }

    func int(_ f: [String: String], _ field: String, _ range: ClosedRange<Int>) throws -> Int? {
        guard let raw = f[field] else { return nil }
        guard let v = Int(raw), range.contains(v) else {
            throw Self.error(
                "ValidationError",
                "1 validation error detected: Value '\(raw)' at '\(field.prefix(1).lowercased() + field.dropFirst())' failed to satisfy constraint: Member must have value between \(range.lowerBound) and \(range.upperBound)"
            )
        }
        return v
    }

    static func credentials(_ token: String, _ s: SessionTokens.Session) -> Node {
        .element(
            "Credentials",
            [
                .text("AccessKeyId", s.accessKey), .text("SecretAccessKey", s.secret), .text("SessionToken", token),
                .text("Expiration", IAMAPI.iso8601(Date(timeIntervalSince1970: Double(s.expires)))),
            ])
    }
}
