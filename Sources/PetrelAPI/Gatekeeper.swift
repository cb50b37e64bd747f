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

/// Who made a request: the account and the access key that signed it.
public struct Caller: Sendable, Equatable {
    public var account: String
    public var accessKey: String
    public init(account: String, accessKey: String) {
        self.account = account
        self.accessKey = accessKey
    }
    var arn: String { "arn:aws:iam::\(account):root" }
}

/// The door of the API: every request is checked against its SigV4 signature
/// and the key's account before it does anything, and every call, let in or
/// refused, goes into the audit trail.
public final class Gatekeeper: Sendable {
    let accounts: AccountStore
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
        }
        var generation: AccountStore.Generation?
        var entries: [String: Entry] = [:]
    }

    static let revalidateNanos = UInt64(AccountStore.revalidateSeconds) * 1_000_000_000

    /// The signing key of a claim, or nil when its key is unknown or revoked.
    func signingKey(_ claim: SigV4Verifier.Claim) throws -> (account: String, key: SigV4.MACKey)? {
        let generation = accounts.generation()
        let now = Sys.monotonicNanoseconds()
        let scope = claim.day + "/" + claim.region + "/" + claim.service
        let hit = cache.withLock { c -> (String, SigV4.MACKey?)? in
            guard let generation, c.generation == generation else {
                c = KeyCache(generation: generation)
                return nil
            }
            guard let e = c.entries[claim.accessKey], now &- e.checked < Self.revalidateNanos else { return nil }
            return (e.account, e.signing[scope])
        }
        if let (account, prepared) = hit, let prepared { return (account, prepared) }
        guard let key = try accounts.activeKey(claim.accessKey) else {
            cache.withLock { _ = $0.entries.removeValue(forKey: claim.accessKey) }
            return nil
        }
        let derived = SigV4.MACKey(SigV4.signingKey(secret: key.secret, day: claim.day[...], region: claim.region, service: claim.service))
        cache.withLock { c in
            guard let generation, c.generation == generation else { return }
            if c.entries.count > 10_000 { c.entries.removeAll() }
            var e = c.entries[claim.accessKey] ?? KeyCache.Entry(account: key.account, checked: now)
            if e.signing.count > 8 { e.signing.removeAll() }
            e.checked = now
            e.signing[scope] = derived
            c.entries[claim.accessKey] = e
        }
        return (key.account, derived)
    }

    public init(accounts: AccountStore, audit: AuditStore, region: String, logger: Logger) {
        self.accounts = accounts
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
            guard let key = try signingKey(claim) else {
                throw LambdaError(.unrecognizedClient, "The security token included in the request is invalid.")
            }
            try verifier.verify(claim, r, signingKey: key.key, service: service) {
                body.withUnsafeReadableBytes { SigV4.payloadHash($0) }
            }
            return Caller(account: key.account, accessKey: claim.accessKey)
        } catch let f as SigV4Verifier.Failure {
            switch f {
            case .missing: throw LambdaError(.missingAuthenticationToken, "Missing Authentication Token")
            case .incomplete(let m): throw LambdaError(.incompleteSignature, m)
            case .invalid(let m): throw LambdaError(.invalidSignature, m)
            }
        }
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
                parameters: parameters, status: status, errorCode: error))
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
