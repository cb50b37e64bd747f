import Foundation
import Testing

@testable import PetrelStore

/// Keys are revoked in the store, then running daemons are told through the key
/// generation file; a failure to tell them is never silent.
@Suite("Account store")
struct AccountStoreTests {
    @Test("a revocation or account deletion that cannot replace the generation file throws, after the change is stored")
    func announcingFails() throws {
        let dir = try makeScratchDirectory("accounts")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try PetrelDatabase(path: dir + "/petrel.sqlite")
        let accounts = AccountStore(db, keys: try KeyRing(directory: dir, db: db))
        try accounts.ensureGeneration()
        let first = try #require(accounts.generation())
        _ = try accounts.createAccount(id: "111111111111", name: "a")
        let key = try accounts.createKey(account: "111111111111")
        let other = try accounts.createKey(account: "111111111111")

        // Told: a new generation.
        try accounts.revokeKey(other.id)
        #expect(try #require(accounts.generation()) != first)

        // A directory where the file must go: the rename over it fails.
        try FileManager.default.removeItem(atPath: dir + "/keys.generation")
        try FileManager.default.createDirectory(atPath: dir + "/keys.generation", withIntermediateDirectories: false)
        #expect(accounts.generation() == nil, "a generation that is not a file is not one")
        let error = try #require(throws: StoreError.self) { try accounts.revokeKey(key.id) }
        #expect(error.message.hasPrefix("the key \(key.id) is revoked in the store, but cannot tell a running petreld"), "\(error)")
        #expect(try accounts.activeKey(key.id) == nil, "the revocation itself is stored")
        #expect(try accounts.accessKeys().filter { $0.status == "Active" }.isEmpty)
        #expect(throws: StoreError.self) { try accounts.deleteAccount("111111111111") }
        #expect(try accounts.account("111111111111") == nil)
        // No temporary file is left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("keys.generation.") } == [])
    }
}
