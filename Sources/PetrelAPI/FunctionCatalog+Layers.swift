import Foundation
import PetrelCore
import PetrelStore

struct PublishLayerInput: Decodable {
    struct Content: Decodable {
        var ZipFile: String?
        var S3Bucket: String?
        var S3Key: String?
    }
    var Description: String?
    var Content: Content?
    var CompatibleRuntimes: [String]?
    var CompatibleArchitectures: [String]?
    var LicenseInfo: String?
}

struct LayerPermissionInput: Decodable {
    var StatementId: String?
    var Action: String?
    var Principal: String?
    var OrganizationId: String?
}

/// Layers: their versions, who may use them, and the layers a function lists.
extension FunctionCatalog {
    static let maxLayers = 5

    func layerNotFound(_ arn: String) -> LambdaError {
        LambdaError(.resourceNotFound, "Layer version \(arn) does not exist.")
    }

    /// The caller's own layer named in a path (a name or its layer ARN).
    func ownLayerName(_ raw: String, caller: Caller) throws -> String {
        let n = try LayerName(parsing: raw, versioned: false)
        if let a = n.account, a != caller.account || n.region != region {
            throw LambdaError(
                .accessDenied,
                "User: \(caller.arn) is not authorized to manage layer \(raw): layers are managed by the account that owns them")
        }
        return n.name
    }

    func publishLayer(_ rawName: String, _ input: PublishLayerInput, caller: Caller) throws -> LayerVersionRecord {
        let name = try ownLayerName(rawName, caller: caller)
        if let d = input.Description, d.count > 256 {
            throw LambdaError.constraint(d, at: "description", "Member must have length less than or equal to 256")
        }
        if let l = input.LicenseInfo, l.count > 512 {
            throw LambdaError.constraint(l, at: "licenseInfo", "Member must have length less than or equal to 512")
        }
        if let r = input.CompatibleRuntimes {
            guard r.count <= 15 else {
                throw LambdaError.constraint("\(r)", at: "compatibleRuntimes", "Member must have length less than or equal to 15")
            }
            for x in r where FunctionRuntime(rawValue: x) == nil {
                throw LambdaError(
                    .invalidParameterValue,
                    "The runtime \(x) is not supported by Petrel. Supported runtimes: \(FunctionRuntime.supportedList).")
            }
        }
        if let a = input.CompatibleArchitectures { try Self.checkArchitectures(a) }
        let zip = try Self.zipFile(input.Content?.ZipFile, s3: input.Content?.S3Bucket)
        return try codeLock.withLock { _ in
            let stored = try code.put(zip: zip)
            do {
                try Self.checkUnzipped(stored.unzippedSize, [])
                let l = try layers.publish(
                    LayerVersionRecord(
                        account: caller.account, name: name, version: 0, description: input.Description ?? "",
                        licenseInfo: input.LicenseInfo, compatibleRuntimes: input.CompatibleRuntimes,
                        compatibleArchitectures: input.CompatibleArchitectures, codeSha256: stored.sha256Base64, codeSize: stored.size,
                        unzippedSize: stored.unzippedSize))
                logger.info(
                    "layer version published", metadata: ["layer": "\(name)", "version": "\(l.version)", "account": "\(caller.account)"])
                return l
            } catch {
                try dropCodeIfUnused(stored.hex)
                throw error
            }
        }
    }

    /// A layer version by its name (or layer ARN) and number, for GetLayerVersion and its
    /// policy: the owner sees its own; another account, one it was granted.
    func layerVersion(_ rawName: String, _ version: Int, caller: Caller, owner only: Bool = false) throws -> LayerVersionRecord {
        let n = try LayerName(parsing: rawName, versioned: false)
        return try layerVersion(account: n.account ?? caller.account, n.name, version, region: n.region, caller: caller, ownerOnly: only)
    }

    func layerVersion(account: String, _ name: String, _ version: Int, region r: String?, caller: Caller, ownerOnly: Bool = false) throws
        -> LayerVersionRecord
    {
        let arn = "arn:aws:lambda:\(r ?? region):\(account):layer:\(name):\(version)"
        guard r == nil || r == region, let l = try layers.get(account: account, name, version), !l.deleted else { throw layerNotFound(arn) }
        if ownerOnly ? account != caller.account : !l.usable(by: caller.account) {
            throw LambdaError(
                .accessDenied,
                "User: \(caller.arn) is not authorized to perform: lambda:GetLayerVersion on resource: \(arn) because no resource-based policy allows it"
            )
        }
        return l
    }

    func layerVersion(arn: String, caller: Caller) throws -> LayerVersionRecord {
        let n = try LayerName(parsing: arn, versioned: true, field: "arn")
        return try layerVersion(account: n.account ?? caller.account, n.name, n.version ?? 0, region: n.region, caller: caller)
    }

    /// ListLayers: each layer's newest version (matching the runtime and architecture, when given).
    func listLayers(runtime: String?, architecture: String?, caller: Caller) throws -> [LayerVersionRecord] {
        try layers.names(account: caller.account).compactMap { name in
            try layers.versions(account: caller.account, name).first { Self.matches($0, runtime: runtime, architecture: architecture) }
        }
    }

    func listLayerVersions(_ rawName: String, runtime: String?, architecture: String?, caller: Caller) throws -> [LayerVersionRecord] {
        let name = try ownLayerName(rawName, caller: caller)
        return try layers.versions(account: caller.account, name).filter { Self.matches($0, runtime: runtime, architecture: architecture) }
    }

    static func matches(_ l: LayerVersionRecord, runtime: String?, architecture: String?) -> Bool {
        (runtime == nil || l.compatibleRuntimes?.contains(runtime!) == true)
            && (architecture == nil || l.compatibleArchitectures?.contains(architecture!) == true)
    }

    /// DeleteLayerVersion: the version stays for the functions that use it; its blob goes
    /// when nothing does. Deleting what is not there succeeds, as on Lambda.
    func deleteLayerVersion(_ rawName: String, _ version: Int, caller: Caller) throws {
        let name = try ownLayerName(rawName, caller: caller)
        guard let gone = try layers.delete(account: caller.account, name, version) else { return }
        releaseCode([gone.codeDigestHex])
        logger.info("layer version deleted", metadata: ["layer": "\(name)", "version": "\(version)"])
    }

    func addLayerPermission(_ rawName: String, _ version: Int, _ input: LayerPermissionInput, revision: String?, caller: Caller) throws
        -> (LayerVersionRecord, PolicyStatement)
    {
        let name = try ownLayerName(rawName, caller: caller)
        guard let sid = input.StatementId, (1...100).contains(sid.count),
            sid.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
        else {
            throw LambdaError.constraint(
                input.StatementId ?? "", at: "statementId", "Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+)")
        }
        guard input.Action == "lambda:GetLayerVersion" else {
            throw LambdaError.constraint(
                input.Action ?? "", at: "action", "Member must satisfy regular expression pattern: lambda:GetLayerVersion")
        }
        let principal = input.Principal ?? ""
        let p = principal.split(separator: ":", omittingEmptySubsequences: false)
        let principalOK =
            principal == "*" || FunctionReference.isAccount(principal)
            || (p.count == 6 && p[0] == "arn" && p[2] == "iam" && FunctionReference.isAccount(String(p[4])) && p[5] == "root")
        guard principalOK else {
            throw LambdaError.constraint(
                principal, at: "principal",
                "Member must satisfy regular expression pattern: \\d{12}|\\*|arn:(aws[a-zA-Z-]*):iam::\\d{12}:root")
        }
        if input.OrganizationId != nil {
            throw LambdaError(.invalidParameterValue, "Petrel has no organizations; grant accounts (or *) instead of OrganizationId.")
        }
        let statement = PolicyStatement(sid: sid, action: "lambda:GetLayerVersion", principal: principal)
        guard
            let l = try layers.update(
                account: caller.account, name, version,
                { l in
                    try Self.checkRevision(revision, l.revisionId, readBy: "GetLayerVersionPolicy")
                    var list = l.policy ?? []
                    guard !list.contains(where: { $0.sid == sid }) else {
                        throw LambdaError(
                            .resourceConflict,
                            "The statement id (\(sid)) provided already exists. Please provide a new statement id, or remove the existing statement."
                        )
                    }
                    list.append(statement)
                    l.policy = list
                })
        else { throw layerNotFound("arn:aws:lambda:\(region):\(caller.account):layer:\(name):\(version)") }
        return (l, statement)
    }

    func removeLayerPermission(_ rawName: String, _ version: Int, sid: String, revision: String?, caller: Caller) throws {
        let name = try ownLayerName(rawName, caller: caller)
        guard
            try layers.update(
                account: caller.account, name, version,
                { l in
                    try Self.checkRevision(revision, l.revisionId, readBy: "GetLayerVersionPolicy")
                    guard let i = l.policy?.firstIndex(where: { $0.sid == sid }) else {
                        throw LambdaError(.resourceNotFound, "Statement \(sid) is not found in resource policy.")
                    }
                    l.policy?.remove(at: i)
                    if l.policy?.isEmpty == true { l.policy = nil }
                }) != nil
        else { throw layerNotFound("arn:aws:lambda:\(region):\(caller.account):layer:\(name):\(version)") }
    }

    // MARK: - a function's layers

    /// The `Layers` of CreateFunction / UpdateFunctionConfiguration, checked: at most five
    /// version ARNs, one version per layer, each existing and usable by the caller. A
    /// deleted version may stay only where the function already has it (`keeping`).
    func layerReferences(_ arns: [String], caller: Caller, keeping: [LayerReference]) throws -> [LayerReference] {
        guard arns.count <= Self.maxLayers else {
            throw LambdaError(.invalidParameterValue, "Cannot reference more than \(Self.maxLayers) layers.")
        }
        var seen: Set<String> = []
        return try arns.map { arn in
            let n = try LayerName(parsing: arn, versioned: true, field: "layers")
            guard seen.insert((n.account ?? "") + ":" + n.name).inserted else {
                throw LambdaError(.invalidParameterValue, "Two different versions of the same layer are not allowed.")
            }
            if let kept = keeping.first(where: { $0.arn == arn }) { return kept }
            let l = try layerVersion(arn: arn, caller: caller)
            return LayerReference(arn: l.arn(region: region), codeSha256: l.codeSha256, codeSize: l.codeSize, unzippedSize: l.unzippedSize)
        }
    }

    /// The function's code and its layers, unzipped, within Lambda's 250 MB.
    static func checkUnzipped(_ codeBytes: Int, _ layers: [LayerReference]) throws {
        let total = codeBytes + layers.reduce(0) { $0 + $1.unzippedSize }
        guard total <= CodeArchive.maxUnzippedBytes else {
            throw LambdaError(
                .invalidParameterValue,
                "Function code combined with layers exceeds the maximum allowed size of \(CodeArchive.maxUnzippedBytes) bytes. The actual size is \(total) bytes."
            )
        }
    }

}
