import Crypto
import Foundation
import PetrelCore
import PetrelSigV4
import PetrelStore

/// GetFunction's `Code.Location`: a link to the ZIP that works without
/// signing (as Lambda's presigned S3 URLs do) for ten minutes, and only for the
/// code it was made for. The link carries an HMAC under a key derived from the
/// platform key, so links made before a restart still hold.
public struct CodeLinks: Sendable {
    static let route = "/petrel/code/{account}/{name}"
    static let validity: TimeInterval = 600
    private let key: [UInt8]
    public let scheme: String

    public init(keys: KeyRing, scheme: String) throws {
        let platform = try keys.dataKey(KeyRing.platformKeyID)
        let derived = HKDF<SHA256>.deriveKey(inputKeyMaterial: platform, info: Data("petrel code links".utf8), outputByteCount: 32)
        key = derived.withUnsafeBytes { Array($0) }
        self.scheme = scheme
    }

    func mac(_ account: String, _ name: String, _ hex: String, _ expires: String) -> String {
        let msg = "\(account)/\(name)/\(hex)/\(expires)"
        return SigV4.hex(HMAC<SHA256>.authenticationCode(for: Array(msg.utf8), using: SymmetricKey(data: key)))
    }

    func path(for f: FunctionRecord, now: Date = Date()) -> String {
        path(account: f.account, name: f.name, hex: f.codeDigestHex, now: now)
    }

    /// A layer version's content (GetLayerVersion's `Content.Location`).
    func path(for l: LayerVersionRecord, now: Date = Date()) -> String {
        path(account: l.account, name: "layer.\(l.name).\(l.version)", hex: l.codeDigestHex, now: now)
    }

    func path(account: String, name: String, hex: String, now: Date) -> String {
        let expires = String(Int(now.timeIntervalSince1970 + Self.validity))
        return "/petrel/code/\(account)/\(name)?sha=\(hex)&expires=\(expires)&signature=\(mac(account, name, hex, expires))"
    }

    /// The code digest a link names, when its signature holds and it has not expired.
    func check(account: String, name: String, hex: String?, expires: String?, signature: String?, now: Date = Date()) throws -> String {
        guard let hex, let expires, let signature, let until = Int(expires),
            SigV4.constantTimeEqual(mac(account, name, hex, expires), signature)
        else {
            throw LambdaError(.accessDenied, "This code link is not valid: ask GetFunction for a new Code.Location.")
        }
        guard Double(until) >= now.timeIntervalSince1970 else {
            throw LambdaError(
                .accessDenied,
                "This code link expired at \(SigV4.amzDate(Date(timeIntervalSince1970: Double(until)))); ask GetFunction for a new Code.Location."
            )
        }
        return hex
    }
}
