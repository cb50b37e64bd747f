import Foundation

/// An alias: a name for one published version (or `$LATEST`), optionally sending a
/// share of its traffic to one more version (a canary).
public struct FunctionAlias: Sendable, Codable, Equatable {
    public var name: String
    public var functionVersion: String
    public var description: String
    /// `AdditionalVersionWeights`: at most one version, with the share (0.0–1.0) it gets.
    public var weights: [String: Double]
    public var revisionId: String

    public init(
        name: String, functionVersion: String, description: String = "", weights: [String: Double] = [:],
        revisionId: String = FastIDs.uuid()
    ) {
        self.name = name
        self.functionVersion = functionVersion
        self.description = description
        self.weights = weights
        self.revisionId = revisionId
    }

    /// Every version the alias may route to.
    public var versions: [String] { [functionVersion] + weights.keys.sorted() }

    /// The version one invocation runs, for a uniform `draw` in 0..<1.
    public func pick(draw: Double) -> String {
        var below = 0.0
        for (v, w) in weights.sorted(by: { $0.key < $1.key }) {
            below += w
            if draw < below { return v }
        }
        return functionVersion
    }

    /// The share of invocations each version gets.
    public var shares: [String: Double] {
        var out = [functionVersion: max(0, 1 - weights.values.reduce(0, +))]
        for (v, w) in weights { out[v, default: 0] += w }
        return out
    }

    /// Alias names: 1–128 of `[a-zA-Z0-9-_]`, not all digits (those are versions).
    public static func validate(name: String) throws(DomainError) {
        guard (1...128).contains(name.utf8.count), name.utf8.allSatisfy(FunctionReference.isNameByte),
            !name.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 })
        else {
            throw DomainError.constraint(name, at: "name", "Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)")
        }
    }

    /// The routing weights as Lambda checks them: at most one extra version, a published
    /// one other than the primary, with a weight in 0.0–1.0.
    public static func validate(weights: [String: Double], primary: String) throws(DomainError) {
        guard weights.count <= 1 else {
            throw DomainError(.invalidParameter, "Number of items in AdditionalVersionWeights cannot be greater than 1")
        }
        for (v, w) in weights {
            guard Self.isVersionNumber(v) else {
                throw DomainError.constraint(
                    v, at: "routingConfig.additionalVersionWeights.key", "Member must satisfy regular expression pattern: [0-9]+")
            }
            guard (0.0...1.0).contains(w) else {
                throw DomainError.constraint(
                    "\(w)", at: "routingConfig.additionalVersionWeights.value",
                    w < 0 ? "Member must have value greater than or equal to 0.0" : "Member must have value less than or equal to 1.0")
            }
            guard primary != FunctionRecord.latest else {
                throw DomainError(
                    .invalidParameter, "$LATEST is not supported for an alias pointing to more than 1 version")
            }
            guard v != primary else {
                throw DomainError(
                    .invalidParameter,
                    "Invalid function version \(v). Function version \(v) is already included in routing configuration.")
            }
        }
    }

    /// `[0-9]+` (a published version's number).
    public static func isVersionNumber(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 10 && s.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } && Int(s).map { $0 >= 1 } == true
    }
}

extension FunctionRecord {
    /// Whether publishing `self` ($LATEST) would make a version no different from `published`:
    /// the same code and the same configuration (descriptions, revisions and times aside).
    public func sameContent(as published: FunctionRecord) -> Bool {
        codeSha256 == published.codeSha256 && runtime == published.runtime && handler == published.handler
            && role == published.role && memoryMB == published.memoryMB && timeoutSeconds == published.timeoutSeconds
            && ephemeralStorageMB == published.ephemeralStorageMB && environment == published.environment
            && architectures == published.architectures && kmsKeyArn == published.kmsKeyArn
            && deadLetterTarget == published.deadLetterTarget
            && (layers ?? []) == (published.layers ?? [])
    }

    /// The code blobs this record uses: its own and its layers'.
    public var blobs: [String] { [codeDigestHex] + (layers ?? []).map(\.codeDigestHex) }

    /// The frozen copy PublishVersion stores as version `number`.
    public func published(as number: Int, description: String?) -> FunctionRecord {
        var v = self
        v.publishedVersion = number
        v.lastPublished = nil
        v.description = description ?? self.description
        v.revisionId = FastIDs.uuid()
        v.lastModified = Date()
        // What belongs to the function, not to a version, stays on $LATEST.
        v.reservedConcurrency = nil
        v.provisioned = nil
        v.tags = nil
        v.policy = nil
        return v
    }
}

/// A layer version a function uses, as its configuration lists it.
public struct LayerReference: Sendable, Codable, Equatable {
    public var arn: String
    /// base64 of the layer ZIP's SHA-256 (how its content is found in the code store).
    public var codeSha256: String
    public var codeSize: Int
    /// The layer's unzipped size (functions and their layers together are at most 250 MB).
    public var unzippedSize: Int

    public init(arn: String, codeSha256: String, codeSize: Int, unzippedSize: Int) {
        self.arn = arn
        self.codeSha256 = codeSha256
        self.codeSize = codeSize
        self.unzippedSize = unzippedSize
    }

    public var codeDigestHex: String { Data(base64Encoded: codeSha256).map { FastIDs.hex(bytes: $0) } ?? "" }
}

/// One published layer version.
public struct LayerVersionRecord: Sendable, Codable, Equatable {
    public var account: String
    public var name: String
    public var version: Int
    public var description: String
    public var licenseInfo: String?
    public var compatibleRuntimes: [String]?
    public var compatibleArchitectures: [String]?
    public var codeSha256: String
    public var codeSize: Int
    public var unzippedSize: Int
    public var created: Date
    /// Who else may use it (AddLayerVersionPermission).
    public var policy: [PolicyStatement]?
    public var revisionId: String
    /// Deleted: it stays for the functions that use it, and nothing new may name it.
    public var deleted: Bool

    public init(
        account: String, name: String, version: Int, description: String, licenseInfo: String?, compatibleRuntimes: [String]?,
        compatibleArchitectures: [String]?, codeSha256: String, codeSize: Int, unzippedSize: Int, created: Date = Date()
    ) {
        self.account = account
        self.name = name
        self.version = version
        self.description = description
        self.licenseInfo = licenseInfo
        self.compatibleRuntimes = compatibleRuntimes
        self.compatibleArchitectures = compatibleArchitectures
        self.codeSha256 = codeSha256
        self.codeSize = codeSize
        self.unzippedSize = unzippedSize
        self.created = created
        revisionId = FastIDs.uuid()
        deleted = false
    }

    public var codeDigestHex: String { Data(base64Encoded: codeSha256).map { FastIDs.hex(bytes: $0) } ?? "" }

    public func layerARN(region: String) -> String { "arn:aws:lambda:\(region):\(account):layer:\(name)" }
    public func arn(region: String) -> String { layerARN(region: region) + ":\(version)" }

    /// Whether `account` may use this version (its owner, or a grant of `lambda:GetLayerVersion`).
    public func usable(by account: String) -> Bool {
        account == self.account || (policy ?? []).contains { $0.allows(account: account, action: "lambda:GetLayerVersion") }
    }
}

/// `arn:aws:lambda:REGION:ACCOUNT:layer:NAME[:VERSION]`, or a bare layer name.
public struct LayerName: Sendable, Equatable {
    public var region: String?
    public var account: String?
    public var name: String
    public var version: Int?

    /// `versioned`: a version must be there (a layer version ARN) or must not (a layer name or ARN).
    public init(parsing raw: String, versioned: Bool, field: String = "layerName") throws(DomainError) {
        let p = raw.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        func bad() -> DomainError {
            versioned
                ? .constraint(
                    raw, at: field,
                    "Member must satisfy regular expression pattern: arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+"
                )
                : .constraint(
                    raw, at: field,
                    "Member must satisfy regular expression pattern: (arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{12}:layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+"
                )
        }
        guard raw.utf8.count <= 140 else { throw bad() }
        if p.count == 1, !versioned {
            name = p[0]
        } else if p.count == (versioned ? 8 : 7), p[0] == "arn", p[2] == "lambda", p[5] == "layer", FunctionReference.isAccount(p[4]),
            !p[3].isEmpty
        {
            region = p[3]
            account = p[4]
            name = p[6]
            if versioned {
                guard FunctionAlias.isVersionNumber(p[7]), let v = Int(p[7]) else { throw bad() }
                version = v
            }
        } else {
            throw bad()
        }
        guard (1...140).contains(name.utf8.count), name.utf8.allSatisfy(FunctionReference.isNameByte) else { throw bad() }
    }
}
