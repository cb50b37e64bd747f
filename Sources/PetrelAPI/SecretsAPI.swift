import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PetrelCore
import PetrelStore

/// The part of AWS Secrets Manager (JSON 1.1, `X-Amz-Target: secretsmanager.…`) that
/// keeps credentials for event sources and functions: CreateSecret, GetSecretValue,
/// PutSecretValue, DescribeSecret, ListSecrets, DeleteSecret. Secrets belong to accounts
/// and are sealed at rest like every other secret.
public struct SecretsAPI: Sendable {
    let secrets: SecretStore
    let region: String
    let pipeline: RequestPipeline
    let clock: PlatformClock

    public init(secrets: SecretStore, gate: Gatekeeper, region: String, clock: PlatformClock = PlatformClock(), logger: Logger) {
        self.secrets = secrets
        self.region = region
        self.clock = clock
        pipeline = RequestPipeline(gate: gate, logger: logger)
    }

    static func error(_ code: String, _ message: String, status: Int = 400) -> LambdaError { .named(code, message, status: status) }

    static let notFound = error("ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
    /// A secret value (string or binary) is at most 65,536 bytes.
    static let maxValue = 65_536

    func serve(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        let op = JSONProtocol.operation(req, prefix: "secretsmanager.")
        // The body as the operation read it, for the audit record (read once).
        var parsed: [String: Any]?
        return await pipeline.run(
            req, ctx, action: op, limit: 262_144, service: "secretsmanager", style: .json11,
            tooLarge: { _ in Self.error("InvalidRequestException", "The request is larger than Secrets Manager accepts.") },
            audit: { body in
                // Values never go into the audit trail (AuditParameters redacts them): only which secret.
                .init(
                    resource: parsed?["SecretId"] as? String ?? parsed?["Name"] as? String,
                    parameters: AuditParameters.describe(query: [], path: [:], body: body, payloadIsData: false))
            },
            access: { call, _ in
                // A role's session: the body is read here, once, for the operation too.
                parsed = try? JSONProtocol.object(call.body, invalid: Self.notFound)
                return [.init(action: "secretsmanager:" + op, resource: try self.secretARN(parsed ?? [:], account: call.caller.account))]
            }
        ) { call in
            let body =
                try parsed
                ?? JSONProtocol.object(call.body, invalid: Self.error("InvalidRequestException", "The request body is not a JSON object."))
            parsed = body
            return try JSONProtocol.response(try dispatch(op, body, account: call.caller.account), version: "1.1")
        }
    }

    /// The secret a call names, as its ARN (with its random suffix when it exists; `*` for none).
    func secretARN(_ b: [String: Any], account: String) throws -> String {
        guard let id = b["SecretId"] as? String ?? b["Name"] as? String, !id.isEmpty else { return "*" }
        if id.hasPrefix("arn:") { return id }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        return try secrets.secret(account: account, id: id, now: now)?.arn ?? "arn:aws:secretsmanager:\(region):\(account):secret:\(id)"
    }

    func value(_ b: [String: Any]) throws -> (String?, Data?) {
        let string = b["SecretString"] as? String
        var binary: Data?
        if let s = b["SecretBinary"] as? String {
            guard let d = Data(base64Encoded: s) else { throw Self.error("InvalidParameterException", "SecretBinary is not base64.") }
            binary = d
        }
        guard !(string != nil && binary != nil) else {
            throw Self.error(
                "InvalidParameterException", "You can't specify both a binary secret value and a string secret value in the same secret.")
        }
        guard (string?.utf8.count ?? binary?.count ?? 0) <= Self.maxValue else {
            throw Self.error("InvalidParameterException", "The secret value is larger than \(Self.maxValue) bytes.")
        }
        return (string, binary)
    }

    func token(_ b: [String: Any]) throws -> String {
        guard let t = b["ClientRequestToken"] as? String else { return UUID().uuidString.lowercased() }
        guard (32...64).contains(t.utf8.count) else {
            throw Self.error("InvalidParameterException", "ClientRequestToken must be 32 to 64 characters.")
        }
        return t
    }

    func live(_ b: [String: Any], account: String, now: Int64, allowDeleted: Bool = false) throws -> SecretRecord {
        guard let id = b["SecretId"] as? String, !id.isEmpty else { throw Self.error("InvalidParameterException", "SecretId is required.") }
        guard let s = try secrets.secret(account: account, id: id, now: now) else { throw Self.notFound }
        if s.deleted != nil && !allowDeleted {
            throw Self.error(
                "InvalidRequestException",
                "You can't perform this operation on the secret because it was marked for deletion.")
        }
        return s
    }

    static func seconds(_ ms: Int64) -> Double { Double(ms) / 1000 }

    func describe(_ s: SecretRecord) -> [String: Any] {
        var o: [String: Any] = [
            "ARN": s.arn, "Name": s.name, "CreatedDate": Self.seconds(s.created), "LastChangedDate": Self.seconds(s.changed),
            "VersionIdsToStages": s.versions, "RotationEnabled": false,
        ]
        if !s.description.isEmpty { o["Description"] = s.description }
        if !s.tags.isEmpty { o["Tags"] = s.tags }
        if let a = s.accessed { o["LastAccessedDate"] = Self.seconds(a) }
        if let d = s.deleted { o["DeletedDate"] = Self.seconds(d) }
        return o
    }

    func dispatch(_ op: String, _ b: [String: Any], account: String) throws -> [String: Any] {
        let now = clock.nowMillis()
        switch op {
        case "CreateSecret":
            guard let name = b["Name"] as? String, (1...512).contains(name.utf8.count),
                name.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) || "/_+=.@-".unicodeScalars.contains($0) })
            else {
                throw Self.error("InvalidParameterException", "Name must be 1 to 512 of letters, digits and /_+=.@-.")
            }
            let (string, binary) = try value(b)
            let tags = (b["Tags"] as? [[String: String]]) ?? []
            let suffix = String((0..<6).map { _ in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".randomElement()! })
            let record = SecretRecord(
                arn: "arn:aws:secretsmanager:\(region):\(account):secret:\(name)-\(suffix)", account: account, name: name,
                description: (b["Description"] as? String) ?? "", tags: tags, created: now, changed: now, versions: [:])
            let version = try token(b)
            guard try secrets.create(record, version: version, string: string, binary: binary, now: now) else {
                throw Self.error("ResourceExistsException", "The operation failed because the secret \(name) already exists.")
            }
            var out: [String: Any] = ["ARN": record.arn, "Name": name]
            if string != nil || binary != nil { out["VersionId"] = version }
            return out
        case "PutSecretValue":
            let s = try live(b, account: account, now: now)
            let (string, binary) = try value(b)
            guard string != nil || binary != nil else {
                throw Self.error("InvalidParameterException", "You must provide either SecretString or SecretBinary.")
            }
            let version = try token(b)
            let stages = (b["VersionStages"] as? [String]) ?? ["AWSCURRENT"]
            guard try secrets.put(arn: s.arn, version: version, string: string, binary: binary, stages: stages, now: now) else {
                throw Self.error("ResourceExistsException", "You can't modify an existing version, you can only create a new version.")
            }
            return ["ARN": s.arn, "Name": s.name, "VersionId": version, "VersionStages": stages]
        case "GetSecretValue":
            let s = try live(b, account: account, now: now)
            guard let v = try secrets.value(arn: s.arn, version: b["VersionId"] as? String, stage: b["VersionStage"] as? String, now: now)
            else {
                throw Self.error(
                    "ResourceNotFoundException", "Secrets Manager can't find the specified secret value for the version or stage asked for."
                )
            }
            var out: [String: Any] = [
                "ARN": s.arn, "Name": s.name, "VersionId": v.version, "VersionStages": v.stages, "CreatedDate": Self.seconds(v.created),
            ]
            if let str = v.string { out["SecretString"] = str }
            if let bin = v.binary { out["SecretBinary"] = bin.base64EncodedString() }
            return out
        case "DescribeSecret":
            return describe(try live(b, account: account, now: now, allowDeleted: true))
        case "ListSecrets":
            let includeDeleted = (b["IncludePlannedDeletion"] as? Bool) ?? false
            let all = try secrets.list(account: account, now: now).filter { includeDeleted || $0.deleted == nil }
            let max = (b["MaxResults"] as? Int) ?? 100
            guard (1...100).contains(max) else { throw Self.error("InvalidParameterException", "MaxResults must be 1 to 100.") }
            var start = 0
            if let t = b["NextToken"] as? String {
                guard let n = Int(t), n >= 0, n <= all.count else {
                    throw Self.error("InvalidNextTokenException", "The NextToken is not valid.")
                }
                start = n
            }
            let page = Array(all[start...].prefix(max))
            var out: [String: Any] = [
                "SecretList": page.map { s -> [String: Any] in
                    var o = describe(s)
                    o["SecretVersionsToStages"] = o.removeValue(forKey: "VersionIdsToStages")
                    return o
                }
            ]
            if start + page.count < all.count { out["NextToken"] = String(start + page.count) }
            return out
        case "DeleteSecret":
            let force = (b["ForceDeleteWithoutRecovery"] as? Bool) ?? false
            // A secret marked for deletion may still be deleted at once.
            let s = try live(b, account: account, now: now, allowDeleted: force)
            let window = b["RecoveryWindowInDays"] as? Int
            if force && window != nil {
                throw Self.error(
                    "InvalidParameterException", "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.")
            }
            if let window, !(7...30).contains(window) {
                throw Self.error("InvalidParameterException", "RecoveryWindowInDays must be between 7 and 30 days.")
            }
            let at = force ? now : now + Int64(window ?? 30) * 86_400_000
            try secrets.delete(arn: s.arn, at: at, now: now)
            return ["ARN": s.arn, "Name": s.name, "DeletionDate": Self.seconds(at)]
        default:
            throw Self.error(
                "UnknownOperationException",
                op.isEmpty ? "The request names no Secrets Manager operation." : "Petrel does not implement \(op) of Secrets Manager.")
        }
    }
}
