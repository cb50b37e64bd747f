import Crypto
import Foundation
import Glibc
import PetrelCore

/// The platform's key for data at rest: 32 random bytes in `<data>/master.key`,
/// created at first start with mode 0600 and never written again.
public struct MasterKey: Sendable {
    private let bytes: [UInt8]
    var key: SymmetricKey { SymmetricKey(data: bytes) }

    public static func loadOrCreate(at path: String) throws -> MasterKey {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd >= 0 {
            let key = SymmetricKey(size: .bits256)
            let ok = key.withUnsafeBytes { buf in write(fd, buf.baseAddress, buf.count) == buf.count } && fsync(fd) == 0
            close(fd)
            guard ok else {
                unlink(path)
                throw StoreError("cannot write the master key \(path): \(String(cString: strerror(errno)))")
            }
            return MasterKey(key: key)
        }
        guard errno == EEXIST else { throw StoreError("cannot create the master key \(path): \(String(cString: strerror(errno)))") }
        var st = stat()
        guard stat(path, &st) == 0 else { throw StoreError("cannot read the master key \(path)") }
        guard st.st_mode & 0o077 == 0 else {
            throw StoreError("the master key \(path) is readable by others (mode \(String(st.st_mode & 0o777, radix: 8))); it must be 0600")
        }
        guard let data = FileManager.default.contents(atPath: path), data.count == 32 else {
            throw StoreError("the master key \(path) is not 32 bytes")
        }
        return MasterKey(key: SymmetricKey(data: data))
    }

    public init(key: SymmetricKey) { bytes = key.withUnsafeBytes { Array($0) } }

    public func seal(_ plain: Data, context: String) throws -> Data {
        try AES.GCM.seal(plain, using: key, authenticating: Data(context.utf8)).combined!
    }

    public func unseal(_ sealed: Data, context: String) throws -> Data {
        try AES.GCM.open(AES.GCM.SealedBox(combined: sealed), using: key, authenticating: Data(context.utf8))
    }
}

/// A failure of the store: a sentence naming what failed.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
