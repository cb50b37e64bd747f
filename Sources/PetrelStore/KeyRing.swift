import Crypto
import Foundation
import GRDB
import Glibc
import PetrelSystem
import Synchronization

/// Envelope encryption for everything the platform keeps secret. Data is sealed
/// (AES-256-GCM) under data keys; data keys are stored in the database wrapped
/// under the master key. Rotating the master key therefore rewraps a few rows in
/// one transaction and never touches the sealed data itself.
///
/// The `platform` data key seals code, access-key secrets and environment
/// variables of functions without a `KMSKeyArn`; an account may hold keys of
/// its own (`petreld kms create`) and name one as a function's `KMSKeyArn`.
public final class KeyRing: Sendable {
    public static let platformKeyID = "platform"
    let directory: String
    let db: PetrelDatabase
    private let masters: Mutex<[String: MasterKey]>
    private let unwrapped = Mutex<[String: [UInt8]]>([:])

    var masterPath: String { directory + "/master.key" }
    var nextPath: String { directory + "/master.key.next" }

    /// Opens the ring of a data directory: creates the master key at first start,
    /// finishes or undoes a rotation that was interrupted, and makes the platform key.
    public init(directory: String, db: PetrelDatabase) throws {
        self.directory = directory
        self.db = db
        let hadMaster = FileManager.default.fileExists(atPath: directory + "/master.key")
        let master = try MasterKey.loadOrCreate(at: directory + "/master.key")
        masters = Mutex([master.id: master])
        try recoverRotation(current: master)
        let exists = try db.pool.read { db in
            try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM data_keys WHERE id = ?)", arguments: [Self.platformKeyID]) ?? false
        }
        if !exists {
            // A data directory from before data keys sealed its code under the master key itself:
            // that key becomes the platform data key, so the stored code stays readable.
            let legacy =
                hadMaster
                && ((try? FileManager.default.contentsOfDirectory(atPath: directory + "/code")) ?? []).contains { $0.hasSuffix(".zip.enc") }
            let material = legacy ? master.key : SymmetricKey(size: .bits256)
            try insertKey(
                id: Self.platformKeyID, account: nil, material: material, description: "Petrel's platform key", under: currentMaster())
        }
    }

    func currentMaster() throws -> MasterKey {
        guard let m = try MasterKey.load(at: masterPath) else { throw StoreError("the master key \(masterPath) is missing") }
        return m
    }

    /// A rotation writes `master.key.next`, rewraps every data key under it in one
    /// transaction, then renames it over `master.key`. After a crash the database
    /// tells which of the two steps happened.
    private func recoverRotation(current: MasterKey) throws {
        guard let next = try MasterKey.load(at: nextPath) else { return }
        masters.withLock { $0[next.id] = next }
        let underNext = try db.pool.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM data_keys WHERE master_id = ?", arguments: [next.id]) ?? 0
        }
        if underNext > 0 {
            do { try Sys.rename(nextPath, masterPath) } catch { throw StoreError("cannot finish the master key rotation", cause: error) }
            try syncDirectory()
        } else {
            try Sys.unlink(nextPath)
        }
    }

    /// The master key's renames reach the disk with the directory.
    func syncDirectory() throws {
        do { try Sys.fsyncDirectory(directory) } catch { throw StoreError("cannot sync \(directory)", cause: error) }
    }

    private func insertKey(id: String, account: String?, material: SymmetricKey, description: String, under master: MasterKey) throws {
        let wrapped = try master.seal(material.withUnsafeBytes { Data($0) }, context: Self.wrapContext(id))
        try db.pool.write { db in
            try db.execute(
                sql: "INSERT INTO data_keys (id, account, wrapped, master_id, created, description) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [id, account, wrapped, master.id, Int64(Date().timeIntervalSince1970 * 1000), description])
        }
        let bytes = material.withUnsafeBytes { Array($0) }
        unwrapped.withLock { $0[id] = bytes }
    }

    /// What a wrapped data key is bound to: its id (a wrapped key moved to another row does not open).
    static func wrapContext(_ id: String) -> String { "data-key:\(id)" }

    /// The master key with `id`; re-read from disk when an operator command rotated it after this process started.
    func master(_ id: String, wrapping keyID: String) throws -> MasterKey {
        if let m = masters.withLock({ $0[id] }) { return m }
        if let m = try? currentMaster(), m.id == id {
            masters.withLock { $0[m.id] = m }
            return m
        }
        throw StoreError("the data key \(keyID) is wrapped under master key \(id), which this data directory does not hold")
    }

    /// The data key `id`, unwrapped (once; then from memory).
    public func dataKey(_ id: String) throws -> SymmetricKey {
        if let k = unwrapped.withLock({ $0[id] }) { return SymmetricKey(data: k) }
        guard
            let row = try db.pool.read({ db in
                try Row.fetchOne(db, sql: "SELECT wrapped, master_id FROM data_keys WHERE id = ?", arguments: [id])
            })
        else { throw StoreError("there is no data key \(id)") }
        let material = try master(row["master_id"], wrapping: id).unseal(row["wrapped"], context: Self.wrapContext(id))
        let bytes = Array(material)
        unwrapped.withLock { $0[id] = bytes }
        return SymmetricKey(data: bytes)
    }

    public func seal(_ plain: Data, key id: String = KeyRing.platformKeyID, context: String) throws -> Data {
        try AES.GCM.seal(plain, using: try dataKey(id), authenticating: Data(context.utf8)).combined!
    }

    public func unseal(_ sealed: Data, key id: String = KeyRing.platformKeyID, context: String) throws -> Data {
        try AES.GCM.open(AES.GCM.SealedBox(combined: sealed), using: try dataKey(id), authenticating: Data(context.utf8))
    }

    // MARK: - account keys (KMSKeyArn)

    public struct AccountKey: Sendable, Equatable {
        public var id: String
        public var account: String
        public var description: String
        public var created: Date
    }

    public func createAccountKey(account: String, description: String) throws -> AccountKey {
        let id = UUID().uuidString.lowercased()
        try insertKey(id: id, account: account, material: SymmetricKey(size: .bits256), description: description, under: currentMaster())
        return AccountKey(id: id, account: account, description: description, created: Date())
    }

    public func accountKeys(account: String?) throws -> [AccountKey] {
        try db.pool.read { db in
            try Row.fetchAll(
                db,
                sql:
                    "SELECT id, account, description, created FROM data_keys WHERE account IS NOT NULL AND (? IS NULL OR account = ?) ORDER BY created",
                arguments: [account, account])
        }.map {
            AccountKey(
                id: $0["id"], account: $0["account"], description: $0["description"],
                created: Date(timeIntervalSince1970: Double($0["created"] as Int64) / 1000))
        }
    }

    /// The account that owns key `id`; nil when there is no such account key.
    public func owner(ofKey id: String) throws -> String? {
        try db.pool.read { db in
            try String.fetchOne(db, sql: "SELECT account FROM data_keys WHERE id = ? AND account IS NOT NULL", arguments: [id])
        }
    }

    // MARK: - rotation

    /// Replaces the master key: every data key is rewrapped under a new one in one
    /// transaction; nothing sealed under the data keys changes. Safe to interrupt
    /// at any point (the next open finishes or undoes it).
    public func rotateMaster() throws -> (old: String, new: String) {
        let old = try currentMaster()
        if FileManager.default.fileExists(atPath: nextPath) { try recoverRotation(current: old) }
        let next = try MasterKey.create(at: nextPath)
        masters.withLock { $0[next.id] = next }
        do {
            try db.pool.write { db in
                let rows = try Row.fetchAll(db, sql: "SELECT id, wrapped, master_id FROM data_keys")
                for row in rows {
                    let id: String = row["id"]
                    let material = try master(row["master_id"], wrapping: id).unseal(row["wrapped"], context: Self.wrapContext(id))
                    let rewrapped = try next.seal(material, context: Self.wrapContext(id))
                    try db.execute(
                        sql: "UPDATE data_keys SET wrapped = ?, master_id = ? WHERE id = ?", arguments: [rewrapped, next.id, id])
                }
            }
        } catch {
            try? Sys.unlink(nextPath)
            throw error
        }
        do { try Sys.rename(nextPath, masterPath) } catch { throw StoreError("cannot replace \(masterPath)", cause: error) }
        try syncDirectory()
        return (old.id, next.id)
    }
}
