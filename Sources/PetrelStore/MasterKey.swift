import Crypto
import Foundation
import Glibc
import PetrelCore
import PetrelSystem

/// The platform's root key: 32 random bytes in `<data>/master.key`, created at
/// first start with mode 0600. It wraps the data keys (see `KeyRing`) and is
/// replaced only by a rotation.
public struct MasterKey: Sendable {
    let bytes: [UInt8]
    var key: SymmetricKey { SymmetricKey(data: bytes) }

    /// Names the key without revealing it: what wrapped data keys record.
    public var id: String {
        String(FastIDs.hex(bytes: SHA256.hash(data: Array("petrel-master-key-id".utf8) + bytes)).prefix(16))
    }

    /// Reads an existing key file; nil when there is none.
    public static func load(at path: String) throws -> MasterKey? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return try loadOrCreate(at: path)
    }

    /// Writes a new random key to a file that must not exist yet.
    public static func create(at path: String) throws -> MasterKey {
        guard !FileManager.default.fileExists(atPath: path) else { throw StoreError("\(path) exists already") }
        return try loadOrCreate(at: path)
    }

    public static func loadOrCreate(at path: String) throws -> MasterKey {
        if let made = try create(path) { return made }
        guard let st = try Sys.status(path) else { throw StoreError("cannot read the master key \(path)") }
        guard st.st_mode & 0o077 == 0 else {
            throw StoreError("the master key \(path) is readable by others (mode \(String(st.st_mode & 0o777, radix: 8))); it must be 0600")
        }
        guard let data = FileManager.default.contents(atPath: path), data.count == 32 else {
            throw StoreError("the master key \(path) is not 32 bytes")
        }
        return MasterKey(key: SymmetricKey(data: data))
    }

    /// A new random key in a file that did not exist; nil when it exists already.
    private static func create(_ path: String) throws -> MasterKey? {
        let fd: Int32
        do { fd = try Sys.open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600) } catch {
            if error.errno == EEXIST { return nil }
            throw StoreError("cannot create the master key \(path)", cause: error)
        }
        defer { Sys.close(fd) }
        let key = SymmetricKey(size: .bits256)
        do {
            let written = key.withUnsafeBytes { b in Result { () throws(SystemError) in try Sys.writeAll(fd, b, path: path) } }
            try written.get()
            try Sys.fsync(fd, path: path)
        } catch {
            try? Sys.unlink(path)
            throw StoreError("cannot write the master key \(path)", cause: error)
        }
        return MasterKey(key: key)
    }

    public init(key: SymmetricKey) { bytes = key.withUnsafeBytes { Array($0) } }

    public func seal(_ plain: Data, context: String) throws -> Data {
        try AES.GCM.seal(plain, using: key, authenticating: Data(context.utf8)).combined!
    }

    public func unseal(_ sealed: Data, context: String) throws -> Data {
        try AES.GCM.open(AES.GCM.SealedBox(combined: sealed), using: key, authenticating: Data(context.utf8))
    }
}
