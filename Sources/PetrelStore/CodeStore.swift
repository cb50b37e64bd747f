import Crypto
import Foundation
import PetrelCore
import PetrelSystem
import Synchronization

/// Function code: each ZIP is kept encrypted (AES-256-GCM under the platform data key)
/// in `<data>/code/<sha256-hex>.zip.enc`, and unpacked on demand into
/// `<cache>/<sha256-hex>/` after its SHA-256 has been checked again.
public final class CodeStore: Sendable {
    public let directory: String
    public let cacheDirectory: String
    let keys: KeyRing
    private let unpacking = Mutex<Set<String>>([])

    public init(directory: String, cacheDirectory: String, keys: KeyRing) throws {
        self.directory = directory
        self.cacheDirectory = cacheDirectory
        self.keys = keys
        for d in [directory, cacheDirectory] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        // Unpacked trees from an earlier run are not trusted: every tree is unpacked
        // (and its digest checked) again by this process before an instance uses it.
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: cacheDirectory)) ?? [] {
            try? FileManager.default.removeItem(atPath: cacheDirectory + "/" + entry)
        }
        // The cache's top must be traversable by sandbox uids (they see the code through a bind mount only,
        // but the kernel resolves the bind source as root; 0711 keeps the listing private).
        chmod(cacheDirectory, 0o711)
    }

    public struct Stored: Sendable {
        public var sha256Base64: String
        public var hex: String
        public var size: Int
        /// What the ZIP holds, unzipped (functions and their layers together have a limit).
        public var unzippedSize: Int
        public var unpackedDirectory: String
    }

    /// Checks and stores a ZIP: it is unpacked first (every safety rule applies),
    /// then sealed and written. Nothing is left behind when it is refused.
    public func put(zip: Data) throws -> Stored {
        guard zip.count <= CodeArchive.maxZippedBytes else {
            throw StoreError(code: .tooLarge, "Zipped code must be smaller than \(CodeArchive.maxZippedBytes) bytes")
        }
        let digest = SHA256.hash(data: zip)
        let hex = FastIDs.hex(bytes: digest)
        let b64 = Data(digest).base64EncodedString()
        let (dir, unzipped) = try unpacked(hex: hex, zip: zip)
        let path = blobPath(hex)
        if !FileManager.default.fileExists(atPath: path) {
            let sealed = try keys.seal(zip, context: hex)
            try Self.writeAtomically(sealed, to: path)
        }
        return Stored(sha256Base64: b64, hex: hex, size: zip.count, unzippedSize: unzipped, unpackedDirectory: dir)
    }

    /// The unpacked tree of a stored ZIP, checked against its digest when it is unpacked.
    public func unpacked(hex: String) throws -> String {
        try unpacked(hex: hex, zip: nil).directory
    }

    /// The unzipped size of a stored ZIP (for records from before it was kept).
    public func unzippedSize(hex: String) throws -> Int {
        Self.treeSize(try unpacked(hex: hex))
    }

    /// The ZIP itself, decrypted and checked.
    public func zip(hex: String) throws -> Data {
        guard let sealed = FileManager.default.contents(atPath: blobPath(hex)) else {
            throw StoreError("The code \(hex) is missing from the store.")
        }
        let zip: Data
        do { zip = try keys.unseal(sealed, context: hex) } catch {
            throw StoreError("The stored code \(hex) does not decrypt under the platform key; it was altered or the key changed.")
        }
        let actual = FastIDs.hex(bytes: SHA256.hash(data: zip))
        guard actual == hex else {
            throw StoreError("The stored code \(hex) does not match its SHA-256 (\(actual)).")
        }
        return zip
    }

    /// Removes a blob and its unpacked tree (the caller checked nobody uses it).
    public func remove(hex: String) {
        try? Sys.unlink(blobPath(hex))
        try? FileManager.default.removeItem(atPath: cacheDirectory + "/" + hex)
    }

    /// The digests of every stored blob.
    public func storedDigests() -> [String] {
        Sys.listDirectory(directory).compactMap { $0.hasSuffix(".zip.enc") ? String($0.dropLast(8)) : nil }
    }

    public func contains(hex: String) -> Bool { FileManager.default.fileExists(atPath: blobPath(hex)) }

    func blobPath(_ hex: String) -> String { directory + "/" + hex + ".zip.enc" }

    /// The unpacked tree and its size (measured again when it was unpacked before).
    private func unpacked(hex: String, zip given: Data?) throws -> (directory: String, size: Int) {
        let final = cacheDirectory + "/" + hex
        // One unpacker per digest at a time; the others wait for its result.
        while true {
            if FileManager.default.fileExists(atPath: final) { return (final, given == nil ? 0 : Self.treeSize(final)) }
            let mine = unpacking.withLock { set in set.insert(hex).inserted }
            if mine { break }
            Sys.sleep(milliseconds: 2)
        }
        defer { _ = unpacking.withLock { $0.remove(hex) } }
        if FileManager.default.fileExists(atPath: final) { return (final, given == nil ? 0 : Self.treeSize(final)) }
        let zip = try given ?? self.zip(hex: hex)
        let staging = cacheDirectory + "/.staging-\(hex)-\(UInt32.random(in: 0...UInt32.max))"
        let size = try CodeArchive.extract(zip, into: staging)
        do { try Sys.rename(staging, final) } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw StoreError("Petrel could not place the unpacked code", cause: error)
        }
        return (final, size)
    }

    /// The bytes of the regular files under `dir`.
    static func treeSize(_ dir: String) -> Int {
        var total = 0
        guard let walk = FileManager.default.enumerator(atPath: dir) else { return 0 }
        for case let path as String in walk {
            var st = stat()
            if lstat(dir + "/" + path, &st) == 0, st.st_mode & S_IFMT == S_IFREG { total += Int(st.st_size) }
        }
        return total
    }

    static func writeAtomically(_ data: Data, to path: String) throws {
        do { try Sys.atomicWrite(path, [UInt8](data), mode: 0o600) } catch {
            throw StoreError("cannot write \(path)", cause: error)
        }
    }
}
