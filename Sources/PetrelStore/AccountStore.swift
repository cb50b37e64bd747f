import Foundation
import GRDB
import Glibc
import PetrelSystem

/// Accounts and their access keys. A key's secret is kept sealed under the
/// platform key (SigV4 needs the secret itself to check a signature) and shown
/// once, when the key is made.
public struct AccountStore: Sendable {
    let db: PetrelDatabase
    let keys: KeyRing
    public init(_ db: PetrelDatabase, keys: KeyRing) {
        self.db = db
        self.keys = keys
    }

    /// Temporary credentials, sealed under this store's platform key.
    public var sessions: SessionTokens { SessionTokens(keys: keys) }

    public struct Account: Sendable, Equatable {
        public var id: String
        public var name: String
        public var admin: Bool
        public var created: Date
    }

    public struct AccessKey: Sendable, Equatable {
        public var id: String
        public var account: String
        public var status: String
        public var created: Date
        public var revoked: Date?
    }

    /// A key that may sign requests: its account and secret.
    public struct ActiveKey: Sendable {
        public var id: String
        public var account: String
        public var secret: String
    }

    /// Changes whenever a key is revoked or an account deleted, by this process or
    /// another: the daemon's cache of keys checks it (one stat, from the data directory's
    /// descriptor) on every request.
    static let generationFile = "keys.generation"
    var generationPath: String { db.directory + "/" + Self.generationFile }

    public struct Generation: Equatable, Sendable {
        var inode: UInt64
        var nanoseconds: Int64
    }

    /// The current generation, or nil when the file cannot be looked at (then nothing
    /// cached may be trusted: every request goes to the store).
    public func generation() -> Generation? {
        var st = stat()
        let found = db.directoryFD >= 0 ? fstatat(db.directoryFD, Self.generationFile, &st, 0) : stat(generationPath, &st)
        guard found == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Generation(inode: UInt64(st.st_ino), nanoseconds: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec))
    }

    /// Makes the generation file when there is none (the daemon, at start).
    public func ensureGeneration() throws {
        guard generation() == nil else { return }
        do { try bumpGeneration() } catch { throw StoreError("cannot write \(generationPath)", cause: error) }
    }

    /// A new file each time (a new inode), so even two changes in one clock tick differ.
    func bumpGeneration() throws(SystemError) {
        try Sys.atomicWrite(generationPath, Array("\(Date().timeIntervalSince1970)\n".utf8), mode: 0o600)
    }

    /// After a change to keys or accounts is committed: tells running daemons, or says
    /// plainly that the change is stored but not yet seen by them (they stop trusting
    /// their cached keys within `revalidateSeconds` anyway, see `Gatekeeper`).
    func announce(_ change: String) throws {
        do { try bumpGeneration() } catch {
            throw StoreError(
                "\(change) in the store, but cannot tell a running petreld that its keys changed; it stops trusting its "
                    + "cached keys within \(AccountStore.revalidateSeconds) s", cause: error)
        }
    }

    /// How long a running daemon may trust a key it has checked against the store
    /// without checking again, whatever the generation file says.
    public static let revalidateSeconds = 1

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
    static func date(_ ms: Int64) -> Date { Date(timeIntervalSince1970: Double(ms) / 1000) }

    /// Creates an account; `id` is drawn at random when not given.
    public func createAccount(id: String? = nil, name: String, admin: Bool = false) throws -> Account {
        guard name.count <= 64, !name.isEmpty, !name.contains(where: { $0.isNewline }) else {
            throw StoreError("an account name has 1 to 64 characters on one line")
        }
        if let id, !(id.utf8.count == 12 && id.utf8.allSatisfy { (48...57).contains($0) }) {
            throw StoreError("an account id is 12 digits, not '\(id)'")
        }
        return try db.pool.write { db in
            var chosen = id ?? ""
            if id == nil {
                repeat {
                    chosen = String((0..<12).map { _ in Character(String(Int.random(in: 0...9))) })
                } while try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM accounts WHERE id = ?)", arguments: [chosen]) == true
            }
            let created = Self.now()
            try db.execute(
                sql: "INSERT OR IGNORE INTO accounts (id, name, admin, created) VALUES (?, ?, ?, ?)",
                arguments: [chosen, name, admin, created])
            guard db.changesCount == 1 else { throw StoreError("the account \(chosen) exists already") }
            return Account(id: chosen, name: name, admin: admin, created: Self.date(created))
        }
    }

    public func accounts() throws -> [Account] {
        try db.pool.read { db in
            try Row.fetchAll(db, sql: "SELECT id, name, admin, created FROM accounts ORDER BY created, id")
        }.map { Account(id: $0["id"], name: $0["name"], admin: $0["admin"], created: Self.date($0["created"])) }
    }

    public func account(_ id: String) throws -> Account? { try accounts().first { $0.id == id } }

    public func adminAccount() throws -> Account? { try accounts().first { $0.admin } }

    /// Deletes an account that owns no functions, queues or topics, with its keys (revoked first).
    public func deleteAccount(_ id: String) throws {
        try db.pool.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM accounts WHERE id = ?)", arguments: [id]) == true else {
                throw StoreError("there is no account \(id)")
            }
            let owned = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM functions WHERE account = ?", arguments: [id]) ?? 0
            guard owned == 0 else { throw StoreError("the account \(id) still owns \(owned) function(s); delete them first") }
            let queues = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM queues WHERE account = ?", arguments: [id]) ?? 0
            let topics = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM topics WHERE account = ?", arguments: [id]) ?? 0
            guard queues == 0, topics == 0 else {
                throw StoreError("the account \(id) still owns \(queues) queue(s) and \(topics) topic(s); delete them first")
            }
            try db.execute(sql: "DELETE FROM access_keys WHERE account = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM role_policies WHERE account = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM roles WHERE account = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM accounts WHERE id = ?", arguments: [id])
        }
        try announce("the account \(id) is deleted")
    }

    static let keyAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    static let secretAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")

    /// An IAM-style id: `prefix` and `count` characters of base32 (`AKIA…` keys, `ASIA…`
    /// temporary keys, `AROA…` role ids), drawn from the system's random source.
    static func randomID(_ prefix: String, _ count: Int = 16) -> String {
        var rng = SystemRandomNumberGenerator()
        return prefix + String((0..<count).map { _ in keyAlphabet[Int(rng.next() % 32)] })
    }

    /// A 40-character secret access key.
    static func randomSecret() -> String {
        var rng = SystemRandomNumberGenerator()
        return String((0..<40).map { _ in secretAlphabet[Int(rng.next() % 64)] })
    }

    /// Makes an access key for an account; the secret is returned here and never again.
    public func createKey(account: String) throws -> (id: String, secret: String) {
        let id = Self.randomID("AKIA")
        let secret = Self.randomSecret()
        let sealed = try keys.seal(Data(secret.utf8), context: "access-key:\(id)")
        try db.pool.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM accounts WHERE id = ?)", arguments: [account]) == true else {
                throw StoreError("there is no account \(account)")
            }
            try db.execute(
                sql: "INSERT INTO access_keys (id, account, secret_sealed, status, created) VALUES (?, ?, ?, 'Active', ?)",
                arguments: [id, account, sealed, Self.now()])
        }
        return (id, secret)
    }

    public func accessKeys(account: String? = nil) throws -> [AccessKey] {
        try db.pool.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT id, account, status, created, revoked FROM access_keys WHERE ? IS NULL OR account = ? ORDER BY created, id",
                arguments: [account, account])
        }.map {
            AccessKey(
                id: $0["id"], account: $0["account"], status: $0["status"], created: Self.date($0["created"]),
                revoked: ($0["revoked"] as Int64?).map(Self.date))
        }
    }

    /// Revokes a key at once: requests signed with it are refused from now on.
    public func revokeKey(_ id: String) throws {
        try db.pool.write { db in
            try db.execute(
                sql: "UPDATE access_keys SET status = 'Inactive', revoked = ? WHERE id = ? AND status = 'Active'",
                arguments: [Self.now(), id])
            guard db.changesCount == 1 else {
                let known = try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM access_keys WHERE id = ?)", arguments: [id]) ?? false
                throw StoreError(known ? "the key \(id) is revoked already" : "there is no key \(id)")
            }
        }
        try announce("the key \(id) is revoked")
    }

    /// The active key `id` with its secret; nil when unknown or revoked.
    public func activeKey(_ id: String) throws -> ActiveKey? {
        guard
            let row = try db.pool.read({ db in
                try Row.fetchOne(
                    db, sql: "SELECT account, secret_sealed FROM access_keys WHERE id = ? AND status = 'Active'", arguments: [id])
            })
        else { return nil }
        let secret = try keys.unseal(row["secret_sealed"], context: "access-key:\(id)")
        return ActiveKey(id: id, account: row["account"], secret: String(decoding: secret, as: UTF8.self))
    }
}
