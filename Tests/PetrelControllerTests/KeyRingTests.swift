import Foundation
import PetrelStore
import Testing

/// Envelope encryption and master-key rotation, including a rotation cut short
/// at each of its steps: nothing sealed may become unreadable.
@Suite("Key ring")
struct KeyRingTests {
    func scratch() throws -> String { try makeScratchDirectory("keyring") }

    func open(_ dir: String) throws -> (PetrelDatabase, KeyRing) {
        let db = try PetrelDatabase(path: dir + "/petrel.sqlite")
        return (db, try KeyRing(directory: dir, db: db))
    }

    @Test("sealed data survives a rotation and a reopen")
    func rotation() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (_, ring) = try open(dir)
        let sealed = try ring.seal(Data("hello".utf8), context: "c")
        let account = try ring.createAccountKey(account: "111111111111", description: "t")
        let sealedByAccount = try ring.seal(Data("mine".utf8), key: account.id, context: "c")
        let before = try Data(contentsOf: URL(fileURLWithPath: dir + "/master.key"))
        let r = try ring.rotateMaster()
        #expect(r.old != r.new)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/master.key")) != before)
        let (_, reopened) = try open(dir)
        #expect(try reopened.unseal(sealed, context: "c") == Data("hello".utf8))
        #expect(try reopened.unseal(sealedByAccount, key: account.id, context: "c") == Data("mine".utf8))
        // The context is bound: the same bytes under another context do not open.
        #expect(throws: (any Error).self) { try reopened.unseal(sealed, context: "other") }
    }

    @Test("a rotation cut short before its transaction is undone")
    func crashBeforeRewrap() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (_, ring) = try open(dir)
        let sealed = try ring.seal(Data("x".utf8), context: "c")
        let master = try Data(contentsOf: URL(fileURLWithPath: dir + "/master.key"))
        // The new key was written, nothing was rewrapped yet.
        FileManager.default.createFile(
            atPath: dir + "/master.key.next", contents: Data((0..<32).map { _ in UInt8.random(in: 0...255) }),
            attributes: [.posixPermissions: 0o600])
        let (_, reopened) = try open(dir)
        #expect(!FileManager.default.fileExists(atPath: dir + "/master.key.next"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/master.key")) == master)
        #expect(try reopened.unseal(sealed, context: "c") == Data("x".utf8))
    }

    @Test("a rotation cut short after its transaction is finished")
    func crashAfterRewrap() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (_, ring) = try open(dir)
        let sealed = try ring.seal(Data("y".utf8), context: "c")
        let old = try Data(contentsOf: URL(fileURLWithPath: dir + "/master.key"))
        _ = try ring.rotateMaster()
        let new = try Data(contentsOf: URL(fileURLWithPath: dir + "/master.key"))
        // As if the process died between the transaction and the rename.
        try new.write(to: URL(fileURLWithPath: dir + "/master.key.next"))
        chmod(dir + "/master.key.next", 0o600)
        try old.write(to: URL(fileURLWithPath: dir + "/master.key"))
        chmod(dir + "/master.key", 0o600)
        let (_, reopened) = try open(dir)
        #expect(!FileManager.default.fileExists(atPath: dir + "/master.key.next"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/master.key")) == new)
        #expect(try reopened.unseal(sealed, context: "c") == Data("y".utf8))
    }
}
