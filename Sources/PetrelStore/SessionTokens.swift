import Foundation

/// Temporary credentials (STS's `AssumeRole` and `GetSessionToken`, and the credentials of
/// each function instance): an `ASIA…` access key, its secret, and a session token that
/// carries both, with who the session is and when it ends, sealed under the platform key.
/// Nothing is stored per session: the daemon opens the token it is shown, and a session ends
/// when it expires, when its role is deleted (or made again: the role's id is in the token),
/// or when the key it was made from is revoked. What the session may do is its role's
/// policies at the time of each request.
public struct SessionTokens: Sendable {
    let keys: KeyRing
    public init(keys: KeyRing) { self.keys = keys }

    public struct Session: Sendable, Codable, Equatable {
        public var accessKey: String
        public var secret: String
        public var account: String
        /// Seconds since the epoch.
        public var expires: Int64
        /// An assumed role: its name and id, and the session's name.
        public var role: String?
        public var roleID: String?
        public var sessionName: String?
        /// `GetSessionToken`: the long-term key the session stands for.
        public var baseKey: String?

        /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`, or the account's root.
        public var arn: String {
            if let role, let sessionName { return "arn:aws:sts::\(account):assumed-role/\(role)/\(sessionName)" }
            return "arn:aws:iam::\(account):root"
        }
        /// `AROA…:SESSION` for a role's session (STS's `AssumedRoleId`), the account otherwise.
        public var userID: String {
            if let roleID, let sessionName { return "\(roleID):\(sessionName)" }
            return account
        }
    }

    static let context = "session-token"
    static let prefix = "PTS1"

    /// A new session of a role (its name and id, and the session's name) or of an account's key (`baseKey`).
    public func issue(
        account: String, expires: Int64, role: (name: String, id: String, session: String)? = nil, baseKey: String? = nil
    ) throws -> (token: String, session: Session) {
        let key = AccountStore.randomID("ASIA")
        let secret = AccountStore.randomSecret()
        let s = Session(
            accessKey: key, secret: secret, account: account, expires: expires, role: role?.name, roleID: role?.id,
            sessionName: role?.session, baseKey: baseKey)
        let sealed = try keys.seal(try JSONEncoder().encode(s), context: Self.context)
        return (Self.prefix + sealed.base64EncodedString(), s)
    }

    /// The session a token carries; nil when it is not one of ours (or was altered).
    public func open(_ token: String) -> Session? {
        guard token.hasPrefix(Self.prefix), token.utf8.count < 4096,
            let sealed = Data(base64Encoded: String(token.dropFirst(Self.prefix.count))),
            let plain = try? keys.unseal(sealed, context: Self.context)
        else { return nil }
        return try? JSONDecoder().decode(Session.self, from: plain)
    }
}
