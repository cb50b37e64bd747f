import Foundation
import GRDB
import PetrelCore

/// Roles: an account's IAM roles with their trust policies and inline policies. A change
/// that takes permissions away (deleting a role or a policy, replacing a policy or a trust
/// policy) is announced like a key's revocation, so that running daemons drop what they
/// cached at once: sessions of a deleted role stop working at their next request.
extension AccountStore {
    public struct Role: Sendable, Equatable {
        public var account: String
        public var name: String
        /// `AROA…`: a role made again under the same name is another role (its old sessions do not carry over).
        public var id: String
        public var path: String
        public var description: String
        public var trustPolicy: String
        public var maxSessionSeconds: Int
        public var created: Date
        public var arn: String { "arn:aws:iam::\(account):role\(path)\(name)" }
    }

    /// How an account treats a function role ARN that names no role of it.
    public enum UnknownRoles: String, Sendable {
        /// Refused, as Lambda does.
        case refuse
        /// Accepted; the function's instances get no credentials.
        case accept
    }

    static let roleColumns = "account, name, id, path, description, trust_policy, max_session, created"

    static func role(_ r: Row) -> Role {
        Role(
            account: r["account"], name: r["name"], id: r["id"], path: r["path"], description: r["description"],
            trustPolicy: r["trust_policy"], maxSessionSeconds: r["max_session"], created: date(r["created"]))
    }

    /// Makes a role; nil when one of that name (whatever its case) exists in the account.
    public func createRole(
        account: String, name: String, path: String, trustPolicy: String, description: String, maxSessionSeconds: Int
    ) throws -> Role? {
        let id = Self.randomID("AROA", 17)
        let created = Self.now()
        return try db.pool.write { db in
            try db.execute(
                sql: "INSERT OR IGNORE INTO roles (\(Self.roleColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                arguments: [account, name, id, path, description, trustPolicy, maxSessionSeconds, created])
            guard db.changesCount == 1 else { return nil }
            return Role(
                account: account, name: name, id: id, path: path, description: description, trustPolicy: trustPolicy,
                maxSessionSeconds: maxSessionSeconds, created: Self.date(created))
        }
    }

    public func role(account: String, name: String) throws -> Role? {
        try db.pool.read { db in
            try Row.fetchOne(db, sql: "SELECT \(Self.roleColumns) FROM roles WHERE account = ? AND name = ?", arguments: [account, name])
        }.map(Self.role)
    }

    /// The role a role ARN names (`arn:aws:iam::ACCOUNT:role[/PATH]/NAME`), if it exists with that path.
    public func role(arn: String) throws -> Role? {
        guard let (account, path, name) = Self.parseRoleARN(arn), let r = try role(account: account, name: name), r.path == path else {
            return nil
        }
        return r
    }

    /// `(account, path, name)` of a role ARN.
    public static func parseRoleARN(_ arn: String) -> (String, String, String)? {
        let p = arn.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
        guard p.count == 6, p[0] == "arn", p[2] == "iam", p[3].isEmpty, p[5].hasPrefix("role/") else { return nil }
        let rest = p[5].dropFirst("role".count)
        guard let slash = rest.lastIndex(of: "/") else { return nil }
        let name = String(rest[rest.index(after: slash)...])
        guard !name.isEmpty else { return nil }
        return (String(p[4]), String(rest[...slash]), name)
    }

    public func roles(account: String, pathPrefix: String = "/") throws -> [Role] {
        try db.pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT \(Self.roleColumns) FROM roles WHERE account = ? AND substr(path, 1, length(?)) = ? ORDER BY name",
                arguments: [account, pathPrefix, pathPrefix])
        }.map(Self.role)
    }

    public enum RoleChange: Sendable, Equatable { case done, noRole, noPolicy, hasPolicies }

    /// Deletes a role that has no inline policies left (IAM's rule).
    public func deleteRole(account: String, name: String) throws -> RoleChange {
        let outcome = try db.pool.write { db -> RoleChange in
            guard try Self.roleExists(db, account, name) else { return .noRole }
            let policies =
                try Int.fetchOne(
                    db, sql: "SELECT COUNT(*) FROM role_policies WHERE account = ? AND role = ?", arguments: [account, name]) ?? 0
            guard policies == 0 else { return .hasPolicies }
            try db.execute(sql: "DELETE FROM roles WHERE account = ? AND name = ?", arguments: [account, name])
            return .done
        }
        if outcome == .done { try announce("the role \(name) is deleted") }
        return outcome
    }

    public func updateTrustPolicy(account: String, role: String, document: String) throws -> RoleChange {
        let changed = try db.pool.write { db in
            try db.execute(
                sql: "UPDATE roles SET trust_policy = ? WHERE account = ? AND name = ?", arguments: [document, account, role])
            return db.changesCount == 1
        }
        guard changed else { return .noRole }
        try announce("the trust policy of the role \(role) is replaced")
        return .done
    }

    /// Adds or replaces an inline policy of a role.
    public func putRolePolicy(account: String, role: String, name: String, document: String) throws -> RoleChange {
        let done = try db.pool.write { db -> Bool in
            guard try Self.roleExists(db, account, role) else { return false }
            try db.execute(
                sql: "INSERT OR REPLACE INTO role_policies (account, role, name, document) VALUES (?, ?, ?, ?)",
                arguments: [account, role, name, document])
            return true
        }
        guard done else { return .noRole }
        try announce("the policy \(name) of the role \(role) is replaced")
        return .done
    }

    public func deleteRolePolicy(account: String, role: String, name: String) throws -> RoleChange {
        let outcome = try db.pool.write { db -> RoleChange in
            guard try Self.roleExists(db, account, role) else { return .noRole }
            try db.execute(
                sql: "DELETE FROM role_policies WHERE account = ? AND role = ? AND name = ?", arguments: [account, role, name])
            return db.changesCount == 1 ? .done : .noPolicy
        }
        if outcome == .done { try announce("the policy \(name) of the role \(role) is deleted") }
        return outcome
    }

    static func roleExists(_ db: Database, _ account: String, _ name: String) throws -> Bool {
        try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM roles WHERE account = ? AND name = ?)", arguments: [account, name]) == true
    }

    /// A role's inline policies as Petrel evaluates them (stored documents were checked when they were put).
    public func identityPolicies(account: String, role: String) throws -> [IAMPolicy] {
        try rolePolicies(account: account, role: role).compactMap { try? IAMPolicy(json: $0.document, kind: .identity) }
    }

    /// A role's inline policies, by name.
    public func rolePolicies(account: String, role: String) throws -> [(name: String, document: String)] {
        try db.pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT name, document FROM role_policies WHERE account = ? AND role = ? ORDER BY name",
                arguments: [account, role])
        }.map { (name: $0["name"] as String, document: $0["document"] as String) }
    }

    /// An account's choice for unknown role ARNs; nil: the daemon's configured default.
    public func unknownRoles(account: String) throws -> UnknownRoles? {
        try db.pool.read { db in
            try String.fetchOne(db, sql: "SELECT unknown_roles FROM accounts WHERE id = ?", arguments: [account])
        }.flatMap(UnknownRoles.init(rawValue:))
    }

    public func setUnknownRoles(account: String, _ value: UnknownRoles?) throws {
        try db.pool.write { db in
            try db.execute(sql: "UPDATE accounts SET unknown_roles = ? WHERE id = ?", arguments: [value?.rawValue, account])
            guard db.changesCount == 1 else { throw StoreError("there is no account \(account)") }
        }
    }
}
