import Foundation

/// A policy document in IAM's JSON grammar, the subset Petrel evaluates: statements with
/// `Effect`, `Action` or `NotAction`, `Resource` or `NotResource` (identity policies) or
/// `Principal` (a role's trust policy), with `*` and `?` wildcards. A `Condition` is refused
/// rather than ignored: ignoring one would grant what its author meant to restrict.
public struct IAMPolicy: Sendable, Equatable {
    public enum Kind: Sendable { case identity, trust }

    public struct Statement: Sendable, Equatable {
        public var sid: String?
        public var allow: Bool
        /// Patterns of `service:Action`; `negated` when they came from `NotAction`.
        public var actions: [String]
        public var notAction: Bool
        public var resources: [String]
        public var notResource: Bool
        /// Trust policies: who may assume the role.
        public var principals: [Principal]
    }

    public enum Principal: Sendable, Equatable {
        /// `"*"` or `{"AWS": "*"}`.
        case anyone
        /// `{"AWS": "123456789012"}` or `arn:aws:iam::123456789012:root`: any principal of the account.
        case account(String)
        /// `{"AWS": "arn:aws:iam::…:role/NAME"}` or an assumed-role session's ARN.
        case arn(String)
        /// `{"Service": "lambda.amazonaws.com"}`.
        case service(String)
    }

    public var statements: [Statement]

    /// The outcome of an evaluation: explicit deny wins over allow, and no matching allow denies.
    public enum Decision: Sendable, Equatable { case allow, explicitDeny, implicitDeny }

    /// Reads a document; `MalformedPolicyDocument`'s message on failure.
    public init(json text: String, kind: Kind) throws(DomainError) {
        guard text.utf8.count <= 10_240 else {
            throw DomainError(.malformedPolicy, "The policy document is larger than 10,240 characters.")
        }
        guard let data = text.data(using: .utf8), let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw DomainError(.malformedPolicy, "The policy document is not a JSON object.")
        }
        for key in root.keys where !["Version", "Id", "Statement"].contains(key) {
            throw DomainError(.malformedPolicy, "Unknown field \(key) at the top of the policy document.")
        }
        if let v = root["Version"] {
            guard let s = v as? String, s == "2012-10-17" || s == "2008-10-17" else {
                throw DomainError(.malformedPolicy, "The policy's Version must be \"2012-10-17\" or \"2008-10-17\".")
            }
        }
        let raw: [Any]
        if let list = root["Statement"] as? [Any] {
            raw = list
        } else if let one = root["Statement"] as? [String: Any] {
            raw = [one]
        } else {
            throw DomainError(.malformedPolicy, "The policy document has no Statement.")
        }
        guard !raw.isEmpty else { throw DomainError(.malformedPolicy, "The policy document has no Statement.") }
        statements = try raw.enumerated().map { i, s throws(DomainError) in
            guard let s = s as? [String: Any] else { throw DomainError(.malformedPolicy, "Statement \(i + 1) is not a JSON object.") }
            return try Self.statement(s, number: i + 1, kind: kind)
        }
    }

    static func statement(_ s: [String: Any], number: Int, kind: Kind) throws(DomainError) -> Statement {
        let known: Set<String> = [
            "Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Principal", "NotPrincipal", "Condition",
        ]
        if let unknown = s.keys.first(where: { !known.contains($0) }) {
            throw DomainError(.malformedPolicy, "Statement \(number) has an unknown field \(unknown).")
        }
        if s["Condition"] != nil {
            throw DomainError(
                .malformedPolicy, "Statement \(number) has a Condition: Petrel does not evaluate conditions, and will not ignore one.")
        }
        if s["NotPrincipal"] != nil { throw DomainError(.malformedPolicy, "Statement \(number): NotPrincipal is not supported.") }
        guard let effect = s["Effect"] as? String, effect == "Allow" || effect == "Deny" else {
            throw DomainError(.malformedPolicy, "Statement \(number) needs an Effect of \"Allow\" or \"Deny\".")
        }
        let (actions, notAction) = try pair(s, "Action", "NotAction", number: number, required: true)
        for a in actions where a != "*" && !(a.contains(":") && a.split(separator: ":", omittingEmptySubsequences: false).count == 2) {
            throw DomainError(.malformedPolicy, "Statement \(number): the action \(a) is not of the form service:Action.")
        }
        var st = Statement(
            sid: s["Sid"] as? String, allow: effect == "Allow", actions: actions, notAction: notAction, resources: [],
            notResource: false, principals: [])
        switch kind {
        case .identity:
            if s["Principal"] != nil {
                throw DomainError(.malformedPolicy, "Statement \(number): an identity policy should not specify a principal.")
            }
            (st.resources, st.notResource) = try pair(s, "Resource", "NotResource", number: number, required: true)
        case .trust:
            if s["Resource"] != nil || s["NotResource"] != nil {
                throw DomainError(.malformedPolicy, "Statement \(number): a trust policy has the prohibited field Resource.")
            }
            guard let p = s["Principal"] else {
                throw DomainError(.malformedPolicy, "Statement \(number): a trust policy names a Principal.")
            }
            st.principals = try principals(p, number: number)
        }
        return st
    }

    /// `Action`/`NotAction` or `Resource`/`NotResource`: exactly one, a string or a list of strings.
    static func pair(_ s: [String: Any], _ a: String, _ b: String, number: Int, required: Bool) throws(DomainError) -> ([String], Bool) {
        if s[a] != nil, s[b] != nil { throw DomainError(.malformedPolicy, "Statement \(number) has both \(a) and \(b).") }
        guard let v = s[a] ?? s[b] else {
            throw DomainError(.malformedPolicy, "Statement \(number) needs \(a) or \(b).")
        }
        let list = try strings(v, "\(number)", a)
        guard !list.isEmpty else { throw DomainError(.malformedPolicy, "Statement \(number): \(a) is empty.") }
        return (list, s[a] == nil)
    }

    static func strings(_ v: Any, _ number: String, _ field: String) throws(DomainError) -> [String] {
        if let one = v as? String { return [one] }
        if let many = v as? [Any], many.allSatisfy({ $0 is String }) { return many.map { $0 as! String } }
        throw DomainError(.malformedPolicy, "Statement \(number): \(field) must be a string or a list of strings.")
    }

    static func principals(_ p: Any, number: Int) throws(DomainError) -> [Principal] {
        if let s = p as? String {
            guard s == "*" else {
                throw DomainError(.malformedPolicy, "Statement \(number): Principal \"\(s)\" must be \"*\" or an object.")
            }
            return [.anyone]
        }
        guard let map = p as? [String: Any] else {
            throw DomainError(.malformedPolicy, "Statement \(number): Principal must be an object.")
        }
        var out: [Principal] = []
        for (kind, value) in map {
            let list = try strings(value, "\(number)", "Principal.\(kind)")
            switch kind {
            case "AWS":
                for v in list {
                    if v == "*" {
                        out.append(.anyone)
                    } else if v.count == 12, v.allSatisfy(\.isNumber) {
                        out.append(.account(v))
                    } else if v.hasPrefix("arn:aws:iam::"), v.hasSuffix(":root") {
                        let account = String(v.dropFirst("arn:aws:iam::".count).dropLast(":root".count))
                        guard account.count == 12, account.allSatisfy(\.isNumber) else {
                            throw DomainError(.malformedPolicy, "Invalid principal in policy: \"AWS\":\"\(v)\"")
                        }
                        out.append(.account(account))
                    } else if v.hasPrefix("arn:aws:iam::") || v.hasPrefix("arn:aws:sts::") {
                        out.append(.arn(v))
                    } else {
                        throw DomainError(.malformedPolicy, "Invalid principal in policy: \"AWS\":\"\(v)\"")
                    }
                }
            case "Service":
                out += list.map { .service($0) }
            default:
                throw DomainError(.malformedPolicy, "Statement \(number): Principal \(kind) is not supported (AWS and Service are).")
            }
        }
        guard !out.isEmpty else { throw DomainError(.malformedPolicy, "Statement \(number): Principal is empty.") }
        return out
    }

    // MARK: - evaluation

    /// Identity policies together: may `action` be done on `resource`?
    public static func decide(_ policies: [IAMPolicy], action: String, resource: String) -> Decision {
        var allowed = false
        for p in policies {
            for s in p.statements where s.matches(action: action, resource: resource) {
                if !s.allow { return .explicitDeny }
                allowed = true
            }
        }
        return allowed ? .allow : .implicitDeny
    }

    /// A trust policy: may `caller` (its ARN and account, or a service) assume the role?
    public func trusts(callerARN: String?, account: String?, service: String? = nil, action: String = "sts:AssumeRole") -> Decision {
        var allowed = false
        for s in statements where s.matchesAction(action) {
            let hit = s.principals.contains { p in
                switch p {
                case .anyone: return callerARN != nil
                case .account(let a): return a == account
                case .arn(let arn): return callerARN.map { Self.sameRole(arn, $0) } ?? false
                case .service(let name): return name == service
                }
            }
            guard hit else { continue }
            if !s.allow { return .explicitDeny }
            allowed = true
        }
        return allowed ? .allow : .implicitDeny
    }

    /// A principal ARN in a trust policy names a caller: the same ARN, or a role whose session
    /// (`arn:aws:sts::A:assumed-role/ROLE/SESSION`) the caller is.
    static func sameRole(_ named: String, _ caller: String) -> Bool {
        if named == caller { return true }
        guard caller.hasPrefix("arn:aws:sts::"), named.hasPrefix("arn:aws:iam::") else { return false }
        let c = caller.dropFirst("arn:aws:sts::".count).split(separator: ":", maxSplits: 1)
        let n = named.dropFirst("arn:aws:iam::".count).split(separator: ":", maxSplits: 1)
        guard c.count == 2, n.count == 2, c[0] == n[0] else { return false }
        let session = c[1].split(separator: "/")
        guard session.count == 3, session[0] == "assumed-role" else { return false }
        return n[1] == "role/" + session[1] || n[1].hasSuffix("/" + session[1]) && n[1].hasPrefix("role/")
    }

    /// `*` and `?` glob; IAM matches actions without regard to case, resources with it.
    public static func glob(_ pattern: String, _ value: String, caseInsensitive: Bool) -> Bool {
        let p = Array((caseInsensitive ? pattern.lowercased() : pattern).utf8)
        let v = Array((caseInsensitive ? value.lowercased() : value).utf8)
        var pi = 0
        var vi = 0
        var star = -1
        var mark = 0
        while vi < v.count {
            if pi < p.count, p[pi] == UInt8(ascii: "?") || p[pi] == v[vi] {
                pi += 1
                vi += 1
            } else if pi < p.count, p[pi] == UInt8(ascii: "*") {
                star = pi
                mark = vi
                pi += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                vi = mark
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}

extension IAMPolicy.Statement {
    func matchesAction(_ action: String) -> Bool {
        let hit = actions.contains { IAMPolicy.glob($0, action, caseInsensitive: true) }
        return notAction ? !hit : hit
    }

    func matches(action: String, resource: String) -> Bool {
        guard matchesAction(action) else { return false }
        let hit = resources.contains { IAMPolicy.glob($0, resource, caseInsensitive: false) }
        return notResource ? !hit : hit
    }
}
