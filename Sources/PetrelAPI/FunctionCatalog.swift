import Foundation
import Logging
import PetrelCore
import PetrelRuntime
import PetrelStore
import Synchronization

/// The functions, their versions, aliases and layers, and their code: every change
/// validates first, stores the code, then the record, and tells the runtime to
/// retire instances of the old revision. Nothing is stored when a change is refused.
public final class FunctionCatalog: Sendable {
    public let functions: FunctionStore
    public let layers: LayerStore
    public let urls: FunctionURLStore
    public let code: CodeStore
    /// The asynchronous queue and event-invoke configurations (a deleted function's go with it).
    let events: EventStore
    let dispatcher: Dispatcher
    let keys: KeyRing
    let region: String
    let logger: Logger
    /// Serializes changes of the code blobs' reference counts.
    let codeLock = Mutex(())
    /// Execution roles: which a function may name, and what they allow (nil: unchecked).
    let roles: ExecutionRoles?
    /// The operator's networks a function's VpcConfig may name.
    let networks: FunctionNetworks

    public init(
        functions: FunctionStore, layers: LayerStore, urls: FunctionURLStore, code: CodeStore, events: EventStore, dispatcher: Dispatcher,
        keys: KeyRing, roles: ExecutionRoles? = nil, networks: FunctionNetworks = FunctionNetworks(), region: String, logger: Logger
    ) {
        self.roles = roles
        self.networks = networks
        self.functions = functions
        self.layers = layers
        self.urls = urls
        self.code = code
        self.events = events
        self.dispatcher = dispatcher
        self.keys = keys
        self.region = region
        self.logger = logger
    }

    func notFound(_ account: String, _ name: String, qualifier: String? = nil) -> LambdaError {
        LambdaError(
            .resourceNotFound, "Function not found: \(FunctionARN(region: region, account: account, name: name, qualifier: qualifier))")
    }

    /// Refuses what the function's role does not allow: `action` (`service:Action`) on each of
    /// `resources`, which Petrel will do on the function's behalf (a mapping's reads, a destination's sends).
    func requireRole(_ f: FunctionRecord, _ action: String, on resources: [String]) throws {
        guard let roles else { return }
        for r in resources where try !roles.permits(f, action: action, resource: r) {
            let verb = action.split(separator: ":").last.map(String.init) ?? action
            throw LambdaError(
                .invalidParameterValue,
                "The function's execution role \(f.role) does not have permissions to call \(verb) on \(r) (it must allow \(action)).")
        }
    }

    /// A destination (or dead-letter target) of the function, checked (`Destination`), that its
    /// role must let Petrel send to; the account's built-in dead-letter queue needs nothing.
    func requireDestination(_ f: FunctionRecord, _ arn: String) throws {
        switch try Destination(parsing: arn, account: f.account, region: region) {
        case .queue: try requireRole(f, "sqs:SendMessage", on: [arn])
        case .topic: try requireRole(f, "sns:Publish", on: [arn])
        case .function: try requireRole(f, "lambda:InvokeFunction", on: [arn])
        case .deadLetterQueue: break
        }
    }

    func accessDenied(_ caller: Caller, _ action: String, _ arn: FunctionARN) -> LambdaError {
        LambdaError(
            .accessDenied,
            "User: \(caller.arn) is not authorized to perform: \(action) on resource: \(arn) because no resource-based policy allows the \(action) action"
        )
    }

    /// Resolves a FunctionName parameter (with a qualifier in it or beside it) to the record
    /// it names: `$LATEST`, a published version, or the version an alias routes this call to.
    /// A function of another account is reached only through an `action` its policy grants
    /// the caller for that qualifier; whether it exists is not told otherwise.
    func resolve(_ raw: String, qualifier: String? = nil, caller: Caller, action: String? = nil) throws -> FunctionRecord {
        try target(FunctionReference(parsing: raw), qualifier: qualifier, caller: caller, action: action).record
    }

    func resolve(_ ref: FunctionReference, qualifier: String? = nil, caller: Caller, action: String? = nil) throws -> FunctionRecord {
        try target(ref, qualifier: qualifier, caller: caller, action: action).record
    }

    /// The one qualifier a request names: in the name, as a parameter, or both when they agree.
    func qualifier(_ ref: FunctionReference, _ parameter: String?) throws -> String? {
        let p = parameter.flatMap { $0.isEmpty ? nil : $0 }
        if let p, let q = ref.qualifier, p != q {
            throw LambdaError(
                .invalidParameterValue, "The derived qualifier from the function name does not match the specified qualifier.")
        }
        if let q = p ?? ref.qualifier {
            guard q == FunctionRecord.latest || (1...128).contains(q.utf8.count) && q.utf8.allSatisfy(FunctionReference.isNameByte)
            else {
                throw LambdaError.constraint(q, at: "qualifier", "Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)")
            }
            return q
        }
        return nil
    }

    func target(_ ref: FunctionReference, qualifier parameter: String? = nil, caller: Caller, action: String? = nil) throws
        -> FunctionStore.Target
    {
        let owner = ref.account ?? caller.account
        let q = try qualifier(ref, parameter)
        if let r = ref.region, r != region { throw notFound(owner, ref.name, qualifier: q) }
        if owner != caller.account {
            let arn = FunctionARN(region: region, account: owner, name: ref.name, qualifier: q)
            guard let action, let f = try functions.get(account: owner, ref.name),
                (f.policy ?? []).contains(where: { $0.guards(q) && $0.allows(account: caller.account, action: action) })
            else {
                throw accessDenied(caller, action ?? "lambda:*", arn)
            }
        }
        guard let t = try functions.resolve(account: owner, ref.name, qualifier: q) else { throw notFound(owner, ref.name, qualifier: q) }
        return t
    }

    /// `$LATEST` of a function, for the calls that change it: a published version is immutable.
    func latest(_ raw: String, caller: Caller, operation: String) throws -> FunctionRecord {
        let ref = try FunctionReference(parsing: raw)
        if let q = ref.qualifier, q != FunctionRecord.latest {
            throw LambdaError(
                .invalidParameterValue,
                "\(operation) changes $LATEST only; \(q) is a published version or an alias, which cannot be changed. Publish a new version instead."
            )
        }
        return try resolve(ref, caller: caller)
    }

    /// `DeadLetterConfig.TargetArn`: an SQS queue or SNS topic of the account (nil: not given;
    /// .some(nil): removed with an empty ARN).
    func deadLetterTarget(_ given: CreateFunctionInput.DeadLetterShape?, account: String) throws -> String?? {
        guard let given else { return nil }
        guard let arn = given.TargetArn, !arn.isEmpty else { return .some(nil) }
        switch try Destination(parsing: arn, account: account, region: region) {
        case .queue, .topic: return .some(arn)
        default:
            throw LambdaError(.invalidParameterValue, "The dead-letter target \(arn) is not an SQS queue or SNS topic ARN.")
        }
    }

    /// A `KMSKeyArn` the caller's account may use: one of its own account keys.
    func checkKMSKey(_ arn: String?, caller: Caller) throws {
        guard let arn, !arn.isEmpty else { return }
        let p = arn.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
        let id = FunctionStore.keyID(kmsKeyArn: arn)
        guard p.count == 6, p[0] == "arn", p[2] == "kms", p[3] == region, p[4] == caller.account, p[5] == "key/\(id)",
            try keys.owner(ofKey: id) == caller.account
        else {
            throw LambdaError(
                LambdaError.Code("KMSNotFoundException", status: 502),
                "Lambda was unable to configure access to your environment variables because the KMS key \(arn) was not found or is not a key of account \(caller.account). Create one with `petreld kms create --account \(caller.account)`."
            )
        }
    }

    func create(_ input: CreateFunctionInput, caller: Caller) throws -> FunctionRecord {
        guard let rawName = input.FunctionName else { throw LambdaError(.invalidParameterValue, "FunctionName is required.") }
        let ref = try FunctionReference(parsing: rawName)
        if let a = ref.account, a != caller.account {
            throw accessDenied(caller, "lambda:CreateFunction", FunctionARN(region: region, account: a, name: ref.name))
        }
        guard ref.qualifier == nil else {
            throw LambdaError(.invalidParameterValue, "FunctionName must not have a qualifier when creating a function.")
        }
        if let pt = input.PackageType, pt != "Zip" {
            throw LambdaError(.invalidParameterValue, "Petrel runs .zip file archive functions only; PackageType \(pt) is not supported.")
        }
        try Self.checkArchitectures(input.Architectures)
        guard let role = input.Role else { throw LambdaError(.invalidParameterValue, "Role is required.") }
        guard let runtimeName = input.Runtime, input.Handler != nil || FunctionRuntime(rawValue: runtimeName)?.isCustom == true else {
            throw LambdaError(
                .invalidParameterValue, "Runtime and Handler are mandatory parameters for functions created with deployment packages.")
        }
        let settings = FunctionSettings(
            runtime: runtimeName, handler: input.Handler, role: role, description: input.Description,
            memoryMB: input.MemorySize, timeoutSeconds: input.Timeout,
            ephemeralStorageMB: input.EphemeralStorage?.Size, environment: input.Environment?.Variables)
        // Checked and built once, from the settings; its code is filled in once stored.
        var record = try settings.newRecord(account: caller.account, name: ref.name, codeSha256: "", codeSize: 0)
        let layers = try layerReferences(input.Layers ?? [], caller: caller, keeping: [])
        record.layers = layers.isEmpty ? nil : layers
        let tags = try Self.checkTags(input.Tags ?? [:], adding: [:])
        try checkKMSKey(input.KMSKeyArn, caller: caller)
        let deadLetter = try deadLetterTarget(input.DeadLetterConfig, account: caller.account)
        try roles?.check(role, account: caller.account)
        if let d = deadLetter ?? nil { try requireDestination(record, d) }
        if let v = try input.VpcConfig?.settings() {
            try networks.check(v, account: caller.account)
            record.vpc = v
        }
        let zip = try Self.zipFile(input.Code?.ZipFile, s3: input.Code?.S3Bucket ?? input.Code?.ImageUri)
        if try functions.get(account: caller.account, ref.name) != nil {
            throw LambdaError(.resourceConflict, "Function already exist: \(ref.name)")
        }
        let created = try codeLock.withLock { _ in
            let stored = try code.put(zip: zip)
            do { try Self.checkUnzipped(stored.unzippedSize, layers) } catch {
                try dropCodeIfUnused(stored.hex)
                throw error
            }
            record.codeSha256 = stored.sha256Base64
            record.codeSize = stored.size
            record.codeUnzippedSize = stored.unzippedSize
            record.tags = tags.isEmpty ? nil : tags
            record.kmsKeyArn = input.KMSKeyArn.flatMap { $0.isEmpty ? nil : $0 }
            record.deadLetterTarget = deadLetter ?? nil
            guard try functions.insert(record) else {
                try dropCodeIfUnused(stored.hex)
                throw LambdaError(.resourceConflict, "Function already exist: \(ref.name)")
            }
            logger.info(
                "function created",
                metadata: ["function.name": "\(record.name)", "account": "\(record.account)", "code.sha256": "\(stored.hex)"])
            return record
        }
        if input.Publish == true { return try publish(created.name, PublishVersionInput(), caller: caller) }
        return created
    }

    func updateCode(_ raw: String, _ input: UpdateFunctionCodeInput, caller: Caller) async throws -> FunctionRecord {
        let current = try latest(raw, caller: caller, operation: "UpdateFunctionCode")
        try Self.checkArchitectures(input.Architectures)
        let zip = try Self.zipFile(input.ZipFile, s3: input.S3Bucket ?? input.ImageUri)
        try checkRevision(input.RevisionId, current)
        if input.DryRun == true {
            // Validates only: the blob is dropped again unless a function already uses it.
            let stored = try code.put(zip: zip)
            try codeLock.withLock { _ in try dropCodeIfUnused(stored.hex) }
            return current
        }
        let updated = try codeLock.withLock { _ -> FunctionRecord in
            let stored = try code.put(zip: zip)
            let oldHex = current.codeDigestHex
            guard
                let f = try functions.update(
                    account: current.account, current.name,
                    { f in
                        try checkRevision(input.RevisionId, f)
                        try Self.checkUnzipped(stored.unzippedSize, f.layers ?? [])
                        f.codeSha256 = stored.sha256Base64
                        f.codeSize = stored.size
                        f.codeUnzippedSize = stored.unzippedSize
                        f.lastModified = Date()
                        f.revisionId = UUID().uuidString.lowercased()
                    })
            else {
                try dropCodeIfUnused(stored.hex)
                throw notFound(current.account, current.name)
            }
            if oldHex != stored.hex { releaseCode([oldHex]) }
            return f
        }
        await dispatcher.retire(updated.instanceKey, record: updated)
        logger.info("function code updated", metadata: ["function.name": "\(updated.name)"])
        if input.Publish == true { return try publish(updated.name, PublishVersionInput(), caller: caller) }
        return updated
    }

    func updateConfiguration(_ raw: String, _ input: UpdateFunctionConfigurationInput, caller: Caller) async throws -> FunctionRecord {
        let current = try latest(raw, caller: caller, operation: "UpdateFunctionConfiguration")
        let layers = try input.Layers.map { try layerReferences($0, caller: caller, keeping: current.layers ?? []) }
        // An Environment without Variables clears them.
        let settings = FunctionSettings(
            runtime: input.Runtime, handler: input.Handler, role: input.Role, description: input.Description,
            memoryMB: input.MemorySize, timeoutSeconds: input.Timeout,
            ephemeralStorageMB: input.EphemeralStorage?.Size, environment: input.Environment.map { $0.Variables ?? [:] })
        try settings.validate()
        if let role = input.Role { try roles?.check(role, account: current.account) }
        let vpc = try input.VpcConfig?.settings()
        if let vpc { try networks.check(vpc, account: current.account) }
        try checkKMSKey(input.KMSKeyArn, caller: caller)
        let deadLetter = try deadLetterTarget(input.DeadLetterConfig, account: caller.account)
        if let d = deadLetter ?? nil {
            var acting = current
            if let role = input.Role { acting.role = role }
            try requireDestination(acting, d)
        }
        try checkRevision(input.RevisionId, current)
        guard
            let updated = try functions.update(
                account: current.account, current.name,
                { f in
                    try checkRevision(input.RevisionId, f)
                    if let layers {
                        try Self.checkUnzipped(f.codeUnzippedSize ?? code.unzippedSize(hex: f.codeDigestHex), layers)
                        f.layers = layers.isEmpty ? nil : layers
                    }
                    settings.apply(to: &f)
                    if let k = input.KMSKeyArn { f.kmsKeyArn = k.isEmpty ? nil : k }
                    if let d = deadLetter { f.deadLetterTarget = d }
                    if let vpc { f.vpc = vpc }
                    if !f.runtime.isCustom, f.handler == nil {
                        throw LambdaError(
                            .invalidParameterValue,
                            "Runtime and Handler are mandatory parameters for functions created with deployment packages.")
                    }
                    f.lastModified = Date()
                    f.revisionId = UUID().uuidString.lowercased()
                })
        else { throw notFound(current.account, current.name) }
        await dispatcher.retire(updated.instanceKey, record: updated)
        if let layers { releaseCode((current.layers ?? []).filter { !layers.contains($0) }.map(\.codeDigestHex)) }
        logger.info("function configuration updated", metadata: ["function.name": "\(updated.name)"])
        return updated
    }

    func delete(_ raw: String, qualifier parameter: String?, caller: Caller) async throws {
        let ref = try FunctionReference(parsing: raw)
        if let q = try qualifier(ref, parameter), q != FunctionRecord.latest {
            return try await deleteVersion(ref, q, caller: caller)
        }
        let current = try resolve(ref, caller: caller)
        guard let gone = try functions.delete(account: current.account, current.name) else {
            throw notFound(current.account, current.name)
        }
        releaseCode(([gone.latest] + gone.versions).flatMap(\.blobs))
        try urls.delete(account: current.account, function: current.name, qualifier: nil, all: true)
        await dispatcher.functionDeleted(current.key, versions: ([gone.latest] + gone.versions).map(\.instanceKey))
        // Its waiting events and their configuration go too: a new function of that name starts clean.
        let dropped = try events.dropEvents(account: current.account, function: current.name)
        try events.dropConfigs(account: current.account, function: current.name)
        logger.info("function deleted", metadata: ["function.name": "\(current.name)", "events.dropped": "\(dropped)"])
    }

    /// PutFunctionConcurrency / DeleteFunctionConcurrency (nil).
    func setReservedConcurrency(_ raw: String, _ value: Int?, caller: Caller) async throws -> FunctionRecord {
        let current = try latest(raw, caller: caller, operation: "PutFunctionConcurrency")
        try await dispatcher.checkReserved(current.key, value)
        guard let updated = try functions.update(account: current.account, current.name, { $0.reservedConcurrency = value }) else {
            throw notFound(current.account, current.name)
        }
        do {
            try await dispatcher.setReserved(current.key, value)
        } catch {
            _ = try? functions.update(account: current.account, current.name, { $0.reservedConcurrency = current.reservedConcurrency })
            throw error
        }
        logger.info(
            "reserved concurrency set", metadata: ["function.name": "\(current.name)", "reserved": "\(value.map(String.init) ?? "none")"])
        return updated
    }

    /// The reservations stored with the functions (loaded into the dispatcher at start).
    public func reservations() throws -> [String: Int] {
        var out: [String: Int] = [:]
        for f in try functions.all() { if let r = f.reservedConcurrency { out[f.key] = r } }
        return out
    }

    func dropCodeIfUnused(_ hex: String) throws {
        if try !functions.codeInUse(hex: hex) { code.remove(hex: hex) }
    }

    /// How long code that a change left unused is kept: an invocation that read the
    /// record before the change may still start an instance of it.
    static let codeGrace: Duration = .seconds(60)

    /// Drops these blobs once `codeGrace` has passed, if nothing uses them then. (A daemon
    /// stopped meanwhile drops them at its next start: `sweepCode`.)
    func releaseCode(_ hexes: [String]) {
        guard !hexes.isEmpty else { return }
        Task.detached { [self] in
            try? await Task.sleep(for: Self.codeGrace)
            for hex in Set(hexes) {
                do { try codeLock.withLock { _ in try dropCodeIfUnused(hex) } } catch {
                    logger.warning("cannot drop unused code", metadata: ["code.sha256": "\(hex)", "error": "\(error)"])
                }
            }
        }
    }

    /// Drops every stored blob that nothing uses (at start, before anything is served).
    public func sweepCode() throws {
        try codeLock.withLock { _ in
            for hex in code.storedDigests() where try !functions.codeInUse(hex: hex) {
                code.remove(hex: hex)
                logger.info("dropped unused code", metadata: ["code.sha256": "\(hex)"])
            }
        }
    }

    func checkRevision(_ wanted: String?, _ f: FunctionRecord) throws {
        try Self.checkRevision(wanted, f.revisionId, readBy: "GetFunction/GetAlias")
    }

    /// A `RevisionId` precondition: 412 when it is not the current one (`readBy`: the calls that tell it).
    static func checkRevision(_ wanted: String?, _ current: String, readBy: String) throws {
        if let wanted, wanted != current {
            throw LambdaError(
                .preconditionFailed,
                "The Revision Id provided does not match the latest Revision Id. Call the \(readBy) API to retrieve the latest Revision Id"
            )
        }
    }

    static func checkArchitectures(_ a: [String]?) throws {
        guard let a else { return }
        guard a == ["x86_64"] else {
            throw LambdaError(.invalidParameterValue, "Petrel runs on x86_64 only; Architectures \(a) is not supported.")
        }
    }

    static func zipFile(_ base64: String?, s3: String?) throws -> Data {
        if s3 != nil {
            throw LambdaError(.invalidParameterValue, "Petrel takes code as Code.ZipFile only (S3 and container images are not supported).")
        }
        guard let base64 else { throw LambdaError(.invalidParameterValue, "Code.ZipFile is required.") }
        guard let data = Data(base64Encoded: base64) else {
            throw LambdaError(.invalidParameterValue, "Could not unzip uploaded file. Please check your file, then try to upload again.")
        }
        guard data.count <= CodeArchive.maxZippedBytes else {
            throw LambdaError(.requestEntityTooLarge, "Zipped size must be smaller than \(CodeArchive.maxZippedBytes) bytes")
        }
        return data
    }
}
