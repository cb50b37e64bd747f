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
        await pipeline.runQuery(
            req, ctx, service: "sts", limit: 65536, namespace: Self.namespace, denied: LambdaError.Code("AccessDenied", status: 403),
            audit: { form in
                (form["RoleArn"], form.filter { ["RoleArn", "RoleSessionName", "DurationSeconds"].contains($0.key) })
            },
            access: { form, action, _ in
                switch action {
                // Anyone may ask who they are (as on AWS, no permission needed).
                case "GetCallerIdentity": []
                case "AssumeRole": [.init(action: "sts:AssumeRole", resource: form["RoleArn"] ?? "*")]
                default: [.init(action: "sts:" + action, resource: "*")]
                }
            }
        ) { form, action, call in
            switch action {
            case "GetCallerIdentity":
                return [
                    .text("Arn", call.caller.arn), .text("UserId", call.caller.session?.userID ?? call.caller.account),
                    .text("Account", call.caller.account),
                ]
            case "AssumeRole": return try assumeRole(form, caller: call.caller)
            case "GetSessionToken": return try sessionToken(form, caller: call.caller)
            default:
                throw Self.error(
                    "InvalidAction",
                    "Petrel's STS serves GetCallerIdentity, AssumeRole and GetSessionToken; \(action.isEmpty ? "no Action was given" : action) is not one of them."
                )
            }
        }
    }

    func assumeRole(_ f: [String: String], caller: Caller) throws -> [Node] {
        guard let arn = f["RoleArn"], arn.utf8.count >= 20 else {
            throw Self.error(
                "ValidationError",
                "1 validation error detected: Value at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20"
            )
        }
        guard let session = f["RoleSessionName"], QueryXML.isIAMName(session, length: 2...64) else {
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
        let requested = try QueryXML.int(f, "DurationSeconds", 900...43200) ?? 3600
        guard requested <= role.maxSessionSeconds else {
            throw Self.error(
                "ValidationError",
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role (\(role.maxSessionSeconds) seconds).")
        }
        let expires = Int64(Date().timeIntervalSince1970) + Int64(requested)
        let (token, s) = try sessions.issue(
            account: role.account, expires: expires, role: (role.name, role.id, session))
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
        let seconds = try QueryXML.int(f, "DurationSeconds", 900...129_600) ?? 43200
        let (token, s) = try sessions.issue(
            account: caller.account, expires: Int64(Date().timeIntervalSince1970) + Int64(seconds), baseKey: caller.accessKey)
        return [Self.credentials(token, s)]
    }

    static func credentials(_ token: String, _ s: SessionTokens.Session) -> Node {
        .element(
            "Credentials",
            [
                .text("AccessKeyId", s.accessKey), .text("SecretAccessKey", s.secret), .text("SessionToken", token),
                .text("Expiration", PlatformClock.iso8601(millis: s.expires * 1000)),
            ])
    }
}
