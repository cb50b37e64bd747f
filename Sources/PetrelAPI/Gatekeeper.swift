import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import NIOCore
import PetrelCore
import PetrelSigV4
import PetrelStore
import PetrelSystem
import ServiceLifecycle
import Synchronization

/// Who made a request: the account and the access key that signed it, and for temporary
/// credentials the session (an assumed role's, whose policies then say what it may do).
public struct Caller: Sendable, Equatable {
    public var account: String
    public var accessKey: String
    /// A role's session, or a `GetSessionToken` session of the account's key.
    public var session: SessionTokens.Session?
    /// nil: the account's own keys, which may do everything in the account (resource policies
    /// decide across accounts). Otherwise the role's policies, which must allow each action.
    public var policies: [IAMPolicy]?
    public init(account: String, accessKey: String, session: SessionTokens.Session? = nil, policies: [IAMPolicy]? = nil) {
        self.account = account
        self.accessKey = accessKey
        self.session = session
        self.policies = policies
    }
    var arn: String { session?.arn ?? "arn:aws:iam::\(account):root" }
    /// The principal the audit trail names beside the key: a role's session.
    var principal: String? { session?.role == nil ? nil : session?.arn }
}

/// The door of the API: every request is checked against its SigV4 signature
/// and the key's account before it does anything, and every call, let in or
/// refused, goes into the audit trail.
public final class Gatekeeper: Sendable {
    let accounts: AccountStore
    let sessions: SessionTokens
    let verifier: SigV4Verifier
    let audit: BatchWriter<AuditStore.Record>
    let logger: Logger
    private let cache = Mutex(KeyCache())

    /// Active keys seen lately, with their signing keys per day, region and service
    /// (deriving one costs four HMACs), ready to sign with. Emptied whenever the store's key
    /// generation changes, i.e. after any revocation, by this process or an operator command;
    /// never trusted when that generation cannot be read; and each key is checked against
    /// the store again once its last check is `AccountStore.revalidateSeconds` old, so a
    /// revocation whose announcement failed still counts within that time.
    struct KeyCache {
        struct Entry {
            var account: String
            var checked: UInt64
            var signing: [String: SigV4.MACKey] = [:]
            /// Temporary credentials: their session and (a role's) policies as they were at `checked`.
            var session: SessionTokens.Session?
            var policies: [IAMPolicy]?
            /// The session token that came with the key: a request with another one (or none) is checked afresh.
            var token: String?
        }
        var generation: AccountStore.Generation?
        var entries: [String: Entry] = [:]
    }

    static let revalidateNanos = UInt64(AccountStore.revalidateSeconds) * 1_000_000_000

    /// What signs a claim: its account, signing key and (temporary credentials) session and
    /// policies; nil when its key is unknown or revoked, or its session's role is gone.
    struct Signer {
        var account: String
        var key: SigV4.MACKey
        var session: SessionTokens.Session?
        var policies: [IAMPolicy]?
    }

    /// The signer of a claim. `token` is the request's session token, for `ASIA…` keys.
    func signer(_ claim: SigV4Verifier.Claim, token: String?) throws -> Signer? {
        let generation = accounts.generation()
        let now = Sys.monotonicNanoseconds()
        let scope = claim.day + "/" + claim.region + "/" + claim.service
        let hit = cache.withLock { c -> (KeyCache.Entry, SigV4.MACKey?)? in
            guard let generation, c.generation == generation else {
                c = KeyCache(generation: generation)
                return nil
            }
            guard let e = c.entries[claim.accessKey], now &- e.checked < Self.revalidateNanos, e.token == token else { return nil }
            return (e, e.signing[scope])
        }
        if let (e, prepared) = hit, let prepared {
            try Self.checkExpiry(e.session)
            return Signer(account: e.account, key: prepared, session: e.session, policies: e.policies)
        }
        var found: (account: String, secret: String, session: SessionTokens.Session?, policies: [IAMPolicy]?)?
        if claim.accessKey.hasPrefix("ASIA") {
            found = try temporary(claim.accessKey, token: token)
        } else if let key = try accounts.activeKey(claim.accessKey) {
            found = (key.account, key.secret, nil, nil)
        }
        guard let found else {
            cache.withLock { _ = $0.entries.removeValue(forKey: claim.accessKey) }
            return nil
        }
        try Self.checkExpiry(found.session)
        let derived = SigV4.MACKey(
            SigV4.signingKey(secret: found.secret, day: claim.day[...], region: claim.region, service: claim.service))
        cache.withLock { c in
            guard let generation, c.generation == generation else { return }
            if c.entries.count > 10_000 { c.entries.removeAll() }
            var e = c.entries[claim.accessKey] ?? KeyCache.Entry(account: found.account, checked: now)
            if e.signing.count > 8 { e.signing.removeAll() }
            e.checked = now
            e.signing[scope] = derived
            e.session = found.session
            e.token = token
            e.policies = found.policies
            c.entries[claim.accessKey] = e
        }
        return Signer(account: found.account, key: derived, session: found.session, policies: found.policies)
    }

    /// Temporary credentials: the token must be ours and name this key; a role's session needs
    /// its role (the same one: its id) and gets the role's policies as they are now; a
    /// `GetSessionToken` session needs its long-term key still active.
    func temporary(_ accessKey: String, token: String?) throws -> (String, String, SessionTokens.Session?, [IAMPolicy]?)? {
        guard let token else {
            throw LambdaError(
                .unrecognizedClient,
                "The security token included in the request is invalid: temporary credentials need their session token.")
        }
        guard let s = sessions.open(token), s.accessKey == accessKey else { return nil }
        if let role = s.role {
            guard let r = try accounts.role(account: s.account, name: role), r.id == s.roleID else { return nil }
            return (s.account, s.secret, s, try accounts.identityPolicies(account: s.account, role: r.name))
        }
        guard let base = s.baseKey, let key = try accounts.activeKey(base), key.account == s.account else { return nil }
        return (s.account, s.secret, s, nil)
    }

    static func checkExpiry(_ session: SessionTokens.Session?) throws {
        guard let session, Double(session.expires) <= Date().timeIntervalSince1970 else { return }
        throw LambdaError(.expiredToken, "The security token included in the request is expired")
    }

    /// Refuses what a role's session may not do: `action` (`service:Action`) on `resource`.
    /// The account's own keys may do everything here (resource policies decide across accounts).
    func authorize(_ caller: Caller, action: String, resource: String, denied: LambdaError.Code = .accessDenied) throws {
        guard let policies = caller.policies else { return }
        switch IAMPolicy.decide(policies, action: action, resource: resource) {
        case .allow: return
        case .explicitDeny:
            throw LambdaError(
                denied, "User: \(caller.arn) is not authorized to perform: \(action) on resource: \(resource) with an explicit deny")
        case .implicitDeny:
            throw LambdaError(
                denied,
                "User: \(caller.arn) is not authorized to perform: \(action) on resource: \(resource) because no identity-based policy allows the \(action) action"
            )
        }
    }

    public init(accounts: AccountStore, audit: AuditStore, region: String, logger: Logger) {
        self.accounts = accounts
        sessions = accounts.sessions
        verifier = SigV4Verifier(region: region)
        let dropped = Counter(label: "petrel_audit_records_dropped_total")
        self.audit = BatchWriter("audit records", logger: logger, onLoss: { dropped.increment(by: Int64($0)) }) { try audit.append($0) }
        self.logger = logger
    }

    /// A request as the verifier reads it.
    static func verifierRequest(_ req: Request) -> SigV4Verifier.Request {
        let headers = req.headers
        return SigV4Verifier.Request(method: req.method.rawValue, rawPath: req.uri.path, rawQuery: req.uri.query.map { Substring($0) }) {
            name in
            if name == "host" { return req.head.authority }
            // The fields of that name (ASCII case aside), several joined with ",": found by
            // walking the fields rather than through HTTPField.Name(name) and an array of
            // values, which every signed header of every request paid for.
            var found: String?
            var more: [String] = []
            for field in headers where Self.sameName(field.name.canonicalName, name) {
                if found == nil { found = field.value } else { more.append(field.value) }
            }
            guard let first = found else { return nil }
            return more.isEmpty ? first : ([first] + more).joined(separator: ",")
        }
    }

    /// `canonical` (lower case) and `name` spell the same header name, ASCII case aside.
    static func sameName(_ canonical: String, _ name: String) -> Bool {
        let a = canonical.utf8
        let b = name.utf8
        guard a.count == b.count else { return false }
        for (x, y) in zip(a, b) where x != y && x != (y >= 0x41 && y <= 0x5a ? y | 0x20 : y) { return false }
        return true
    }

    /// The signer of a request whose body has been read, or the error to answer with.
    func authenticate(_ req: Request, body: ByteBuffer, service: String) throws -> Caller {
        let r = Self.verifierRequest(req)
        do {
            let claim = try SigV4Verifier.claim(r)
            let token = claim.accessKey.hasPrefix("ASIA") ? Self.securityToken(req) : nil
            guard let key = try signer(claim, token: token) else {
                throw LambdaError(.unrecognizedClient, "The security token included in the request is invalid.")
            }
            try verifier.verify(claim, r, signingKey: key.key, service: service) {
                body.withUnsafeReadableBytes { SigV4.payloadHash($0) }
            }
            return Caller(account: key.account, accessKey: claim.accessKey, session: key.session, policies: key.policies)
        } catch let f as SigV4Verifier.Failure {
            switch f {
            case .missing: throw LambdaError(.missingAuthenticationToken, "Missing Authentication Token")
            case .incomplete(let m): throw LambdaError(.incompleteSignature, m)
            case .invalid(let m): throw LambdaError(.invalidSignature, m)
            }
        }
    }

    /// `X-Amz-Security-Token`, from the headers or (a presigned request) the query.
    static func securityToken(_ req: Request) -> String? {
        if let t = req.headers[HTTPField.Name("X-Amz-Security-Token")!] { return t }
        return req.uri.queryParameters["X-Amz-Security-Token"].map { SigV4.percentDecoded(String($0)) }
    }

    /// The access key id a refused request names, when its signature is well formed (for the audit trail).
    static func claimedKey(_ req: Request) -> String? {
        (try? SigV4Verifier.claim(verifierRequest(req)))?.accessKey.prefix(128).description
    }

    static func query(_ req: Request) -> [(String, String)] { SigV4.queryPairs(req.uri.query.map { Substring($0) }) }

    func record(
        _ req: Request, _ ctx: PetrelRequestContext, action: String, caller: Caller?, resource: String?,
        parameters: String, status: Int, error: String?
    ) {
        audit.append(
            AuditStore.Record(
                time: Int64(Date().timeIntervalSince1970 * 1000), account: caller?.account,
                accessKey: caller?.accessKey ?? Self.claimedKey(req), source: ctx.remoteAddress, action: action, resource: resource,
                parameters: parameters, status: status, errorCode: error, principal: caller?.principal))
    }

    func run() async { await audit.run() }
    func finish() { audit.finish() }
}

/// A call's parameters for the audit trail, with the secrets taken out: code
/// archives, environment variable values and invocation payloads are described,
/// never copied.
enum AuditParameters {
    static func describe(query: [(String, String)], path: [String: String], body: ByteBuffer?, payloadIsData: Bool) -> String {
        if payloadIsData || body == nil || body!.readableBytes == 0 {
            // The hot path (every Invoke): strings only, no JSON parser or serializer.
            var fields: [(String, String)] = path.map { ($0.key, quoted($0.value)) }
            for (k, v) in query where !k.hasPrefix("X-Amz-") { fields.append((k, quoted(v))) }
            if let body, body.readableBytes > 0 { fields.append(("PayloadBytes", String(body.readableBytes))) }
            fields.sort { $0.0 < $1.0 }
            return "{" + fields.map { quoted($0.0) + ":" + $0.1 }.joined(separator: ",") + "}"
        }
        var out: [String: Any] = [:]
        for (k, v) in path { out[k] = v }
        for (k, v) in query where !k.hasPrefix("X-Amz-") { out[k] = v }
        if let body, body.readableBytes > 0 {
            if payloadIsData {
                out["PayloadBytes"] = body.readableBytes
            } else if let json = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] {
                for (k, v) in json { out[k] = redact(k, v) }
            } else {
                out["BodyBytes"] = body.readableBytes
            }
        }
        let data = (try? JSONSerialization.data(withJSONObject: out, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// A JSON string literal.
    static func quoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    static func redact(_ key: String, _ value: Any) -> Any {
        switch key {
        case "ZipFile":
            return "(redacted: \((value as? String)?.count ?? 0) base64 characters)"
        case "Variables":
            guard let vars = value as? [String: Any] else { return "(redacted)" }
            return vars.mapValues { _ in "(redacted)" }
        case "SecretString", "SecretBinary":
            return "(redacted)"
        default:
            if let nested = value as? [String: Any] {
                return Dictionary(uniqueKeysWithValues: nested.map { ($0.key, redact($0.key, $0.value)) })
            }
            return value
        }
    }
}

/// The audit writer as a Service of the daemon: it writes until graceful
/// shutdown reaches it (after the API has drained), then flushes what is queued.
public struct AuditService: Service {
    let gate: Gatekeeper
    public init(gate: Gatekeeper) { self.gate = gate }

    public func run() async throws {
        let gate = self.gate
        await withGracefulShutdownHandler {
            await gate.run()
        } onGracefulShutdown: {
            gate.finish()
        }
    }
}
