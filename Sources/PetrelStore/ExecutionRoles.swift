import Foundation
import PetrelCore

/// Functions' execution roles: whether a function may name a role ARN, what its role allows,
/// and the temporary credentials each of its instances gets.
///
/// A role Lambda can use exists in the function's account and trusts `lambda.amazonaws.com`.
/// A role ARN that names no such role is refused (as Lambda does) unless the account accepts
/// unknown roles (`AccountStore.UnknownRoles`, or the daemon's default for accounts that have
/// not chosen): its function then runs with no credentials and no permissions.
public struct ExecutionRoles: Sendable {
    let accounts: AccountStore
    let sessions: SessionTokens
    /// For accounts with no choice of their own.
    public let unknownRoles: AccountStore.UnknownRoles
    /// How long an instance's credentials last.
    public let credentialSeconds: Int

    public init(accounts: AccountStore, unknownRoles: AccountStore.UnknownRoles, credentialSeconds: Int) {
        self.accounts = accounts
        sessions = accounts.sessions
        self.unknownRoles = unknownRoles
        self.credentialSeconds = credentialSeconds
    }

    static let lambdaService = "lambda.amazonaws.com"

    /// The role a function of `account` may run as: nil when the ARN names none Lambda can assume.
    public func usableRole(_ arn: String, account: String) throws -> AccountStore.Role? {
        guard let role = try accounts.role(arn: arn), role.account == account,
            let trust = try? IAMPolicy(json: role.trustPolicy, kind: .trust),
            trust.trusts(callerARN: nil, account: nil, service: Self.lambdaService) == .allow
        else { return nil }
        return role
    }

    /// CreateFunction and UpdateFunctionConfiguration: refuses a role the function cannot use,
    /// unless its account accepts them.
    public func check(_ arn: String, account: String) throws {
        guard try usableRole(arn, account: account) == nil else { return }
        guard (try accounts.unknownRoles(account: account) ?? unknownRoles) == .refuse else { return }
        throw DomainError(
            .invalidParameter,
            "The role defined for the function cannot be assumed by Lambda. (\(arn) is not a role of account \(account) whose trust policy allows lambda.amazonaws.com to assume it.)"
        )
    }

    /// May Petrel do `action` on `resource` on the function's behalf (a mapping's reads, a
    /// destination's sends)? Its role must allow it. A function whose role is unknown to an
    /// account that accepts unknown roles is not checked: its data and tools predate roles.
    public func permits(_ f: FunctionRecord, action: String, resource: String) throws -> Bool {
        guard let role = try usableRole(f.role, account: f.account) else {
            return (try accounts.unknownRoles(account: f.account) ?? unknownRoles) == .accept
        }
        return IAMPolicy.decide(try accounts.identityPolicies(account: f.account, role: role.name), action: action, resource: resource)
            == .allow
    }

    /// An instance's credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`)
    /// as a session of its role named after the function, and when they expire (seconds since
    /// the epoch); nil when the function has no usable role.
    public func credentials(_ f: FunctionRecord) throws -> (environment: [String: String], expires: Int64)? {
        guard let role = try usableRole(f.role, account: f.account) else { return nil }
        let expires = Int64(Date().timeIntervalSince1970) + Int64(credentialSeconds)
        let (token, s) = try sessions.issue(account: f.account, expires: expires, role: (role.name, role.id, f.name))
        return (["AWS_ACCESS_KEY_ID": s.accessKey, "AWS_SECRET_ACCESS_KEY": s.secret, "AWS_SESSION_TOKEN": token], expires)
    }
}
