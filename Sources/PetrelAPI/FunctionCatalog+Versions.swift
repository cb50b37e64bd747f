import Foundation
import PetrelCore
import PetrelRuntime
import PetrelStore

struct PublishVersionInput: Decodable {
    var CodeSha256: String?
    var Description: String?
    var RevisionId: String?
}

struct AliasInput: Decodable {
    struct Routing: Decodable { var AdditionalVersionWeights: [String: Double]? }
    var Name: String?
    var FunctionVersion: String?
    var Description: String?
    var RoutingConfig: Routing?
    var RevisionId: String?
}

/// Published versions, aliases, and provisioned concurrency (which is set on them).
extension FunctionCatalog {
    // MARK: - versions

    /// PublishVersion: `$LATEST` frozen as the next number, or the newest version when
    /// nothing changed since it. Stale preconditions answer 412 and change nothing.
    func publish(_ raw: String, _ input: PublishVersionInput, caller: Caller) throws -> FunctionRecord {
        let current = try latest(raw, caller: caller, operation: "PublishVersion")
        if let d = input.Description, d.count > 256 {
            throw LambdaError.constraint(d, at: "description", "Member must have length less than or equal to 256")
        }
        guard
            let result = try functions.publish(
                account: current.account, current.name, description: input.Description,
                check: { latest in
                    if let sha = input.CodeSha256, sha != latest.codeSha256 {
                        throw LambdaError(
                            .preconditionFailed,
                            "CodeSHA256 (\(sha)) is different from current CodeSHA256 in $LATEST (\(latest.codeSha256)). Please try again from a fresh state."
                        )
                    }
                    try checkRevision(input.RevisionId, latest)
                })
        else { throw notFound(current.account, current.name) }
        if result.new {
            logger.info(
                "function version published",
                metadata: ["function.name": "\(current.name)", "account": "\(current.account)", "version": "\(result.version.version)"])
        }
        return result.version
    }

    /// ListVersionsByFunction: `$LATEST` first, then the published versions in order.
    func versions(_ raw: String, marker: String?, limit: Int, caller: Caller) throws -> (page: [FunctionRecord], next: String?) {
        let ref = try FunctionReference(parsing: raw)
        let latest = try resolve(ref.unqualified, caller: caller)
        var items: [FunctionRecord] = []
        var after = 0
        switch marker {
        case nil, "": items = [latest]
        case FunctionRecord.latest?: break
        case let m?:
            guard FunctionAlias.isVersionNumber(m), let n = Int(m) else {
                throw LambdaError(.invalidParameterValue, "The Marker \(m) is not valid; pass the NextMarker of the previous page.")
            }
            after = n
        }
        items += try functions.versions(account: latest.account, latest.name, after: after, limit: limit + 1)
        let page = Array(items.prefix(limit))
        return (page, items.count > limit ? page.last?.version : nil)
    }

    /// DeleteFunction with a version number: that version only, unless an alias routes to it.
    func deleteVersion(_ ref: FunctionReference, _ qualifier: String, caller: Caller) async throws {
        let owner = ref.account ?? caller.account
        guard FunctionAlias.isVersionNumber(qualifier), let number = Int(qualifier) else {
            throw LambdaError(
                .invalidParameterValue,
                "Deletion of an alias or of $LATEST through a qualifier is not allowed; use DeleteAlias or leave out the qualifier.")
        }
        let latest = try resolve(ref.unqualified, caller: caller)
        let outcome = try functions.deleteVersion(account: owner, latest.name, number)
        if case .deleted(let v) = outcome { releaseCode(v.blobs) }
        switch outcome {
        case .notFound: throw notFound(owner, latest.name, qualifier: qualifier)
        case .inUse(let alias):
            throw LambdaError(
                .resourceConflict, "Unable to delete version because the following aliases reference it: [\(alias)]")
        case .deleted(let v):
            await dispatcher.retire(v.instanceKey, record: nil)
            if latest.provisioned?[qualifier] != nil {
                _ = try functions.update(account: owner, latest.name) { $0.provisioned?[qualifier] = nil }
            }
            try await syncProvisioned(account: owner, latest.name)
            logger.info("function version deleted", metadata: ["function.name": "\(latest.name)", "version": "\(qualifier)"])
        }
    }

    // MARK: - aliases

    func aliasARN(_ account: String, _ function: String, _ alias: String) -> String {
        FunctionARN(region: region, account: account, name: function, qualifier: alias).description
    }

    /// CreateAlias (nil `name`: the input's) and UpdateAlias.
    func writeAlias(_ raw: String, name: String?, _ input: AliasInput, creating: Bool, caller: Caller) async throws -> (
        FunctionRecord, FunctionAlias
    ) {
        let ref = try FunctionReference(parsing: raw)
        guard ref.qualifier == nil else {
            throw LambdaError(.invalidParameterValue, "FunctionName must not have a qualifier when naming an alias's function.")
        }
        let latest = try resolve(ref, caller: caller)
        guard let aliasName = name ?? input.Name else { throw LambdaError(.invalidParameterValue, "Name is required.") }
        try FunctionAlias.validate(name: aliasName)
        if creating, input.FunctionVersion == nil { throw LambdaError(.invalidParameterValue, "FunctionVersion is required.") }
        if let v = input.FunctionVersion, v != FunctionRecord.latest, !FunctionAlias.isVersionNumber(v) {
            throw LambdaError.constraint(v, at: "functionVersion", "Member must satisfy regular expression pattern: (\\$LATEST|[0-9]+)")
        }
        if let d = input.Description, d.count > 256 {
            throw LambdaError.constraint(d, at: "description", "Member must have length less than or equal to 256")
        }
        let outcome = try functions.writeAlias(account: latest.account, latest.name, aliasName, creating: creating) { current in
            if let current { try Self.checkRevision(input.RevisionId, current.revisionId, readBy: "GetFunction/GetAlias") }
            var a = current ?? FunctionAlias(name: aliasName, functionVersion: input.FunctionVersion ?? FunctionRecord.latest)
            if let v = input.FunctionVersion { a.functionVersion = v }
            if let d = input.Description { a.description = d }
            if let r = input.RoutingConfig { a.weights = r.AdditionalVersionWeights ?? [:] }
            try FunctionAlias.validate(weights: a.weights, primary: a.functionVersion)
            a.revisionId = FastIDs.uuid()
            return a
        }
        switch outcome {
        case .written(let alias):
            logger.info(
                creating ? "alias created" : "alias updated",
                metadata: [
                    "function.name": "\(latest.name)", "alias": "\(aliasName)", "version": "\(alias.functionVersion)",
                    "weights": "\(alias.weights)",
                ])
            if latest.provisioned?[aliasName] != nil { try await syncProvisioned(account: latest.account, latest.name) }
            return (latest, alias)
        case .exists:
            throw LambdaError(.resourceConflict, "Alias already exists: \(aliasARN(latest.account, latest.name, aliasName))")
        case .notFound:
            throw LambdaError(.resourceNotFound, "Alias not found: \(aliasARN(latest.account, latest.name, aliasName))")
        case .noVersion(let v):
            throw notFound(latest.account, latest.name, qualifier: v)
        }
    }

    func alias(_ raw: String, _ name: String, caller: Caller) throws -> (FunctionRecord, FunctionAlias) {
        let latest = try resolve(FunctionReference(parsing: raw).unqualified, caller: caller)
        guard let a = try functions.alias(account: latest.account, latest.name, name) else {
            throw LambdaError(.resourceNotFound, "Alias not found: \(aliasARN(latest.account, latest.name, name))")
        }
        return (latest, a)
    }

    func aliases(_ raw: String, version: String?, caller: Caller) throws -> (FunctionRecord, [FunctionAlias]) {
        let latest = try resolve(FunctionReference(parsing: raw).unqualified, caller: caller)
        let all = try functions.aliases(account: latest.account, latest.name)
        return (latest, version.map { v in all.filter { $0.versions.contains(v) } } ?? all)
    }

    func deleteAlias(_ raw: String, _ name: String, caller: Caller) async throws {
        let latest = try resolve(FunctionReference(parsing: raw).unqualified, caller: caller)
        // Lambda answers 204 for an alias that is not there.
        guard try functions.deleteAlias(account: latest.account, latest.name, name) != nil else { return }
        try urls.delete(account: latest.account, function: latest.name, qualifier: name)
        // Its own permissions and provisioned concurrency go with it.
        _ = try functions.update(account: latest.account, latest.name) { f in
            f.provisioned?[name] = nil
            if f.provisioned?.isEmpty == true { f.provisioned = nil }
            f.policy = f.policy?.filter { $0.qualifier != name }
            if f.policy?.isEmpty == true { f.policy = nil }
        }
        try await syncProvisioned(account: latest.account, latest.name)
        logger.info("alias deleted", metadata: ["function.name": "\(latest.name)", "alias": "\(name)"])
    }

    // MARK: - provisioned concurrency

    /// PutProvisionedConcurrencyConfig / DeleteProvisionedConcurrencyConfig (nil), on a version or an alias.
    func setProvisionedConcurrency(_ raw: String, qualifier parameter: String?, _ value: Int?, caller: Caller) async throws {
        let ref = try FunctionReference(parsing: raw)
        guard let q = try qualifier(ref, parameter) else { throw LambdaError(.invalidParameterValue, "Qualifier is required.") }
        guard q != FunctionRecord.latest else {
            throw LambdaError(.invalidParameterValue, "Provisioned Concurrency Configs cannot be applied to unpublished function versions.")
        }
        let latest = try resolve(ref.unqualified, caller: caller)
        _ = try target(ref.unqualified, qualifier: q, caller: caller) // the version or alias exists
        if let value, value < 1 {
            throw LambdaError.constraint(
                "\(value)", at: "provisionedConcurrentExecutions", "Member must have value greater than or equal to 1")
        }
        guard
            try functions.update(
                account: latest.account, latest.name,
                { f in
                    var all = f.provisioned ?? [:]
                    all[q] = value
                    if let reserved = f.reservedConcurrency, all.values.reduce(0, +) > reserved {
                        throw LambdaError(
                            .invalidParameterValue,
                            "Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for function")
                    }
                    f.provisioned = all.isEmpty ? nil : all
                }) != nil
        else { throw notFound(latest.account, latest.name) }
        try await syncProvisioned(account: latest.account, latest.name)
        logger.info(
            "provisioned concurrency set",
            metadata: ["function.name": "\(latest.name)", "qualifier": "\(q)", "provisioned": "\(value.map(String.init) ?? "none")"])
    }

    /// What each version of a function must keep initialized: a version's own setting plus
    /// its share of every alias's (split by the alias's weights).
    func provisionedPlan(_ latest: FunctionRecord) throws -> [(qualifier: String, version: FunctionRecord, count: Int)] {
        var plan: [(String, FunctionRecord, Int)] = []
        for (q, n) in (latest.provisioned ?? [:]).sorted(by: { $0.key < $1.key }) {
            var shares: [String: Int] = [:]
            if let alias = try functions.alias(account: latest.account, latest.name, q) {
                var left = n
                for (v, w) in alias.weights.sorted(by: { $0.key < $1.key }) {
                    let c = Int((Double(n) * w).rounded())
                    shares[v] = c
                    left -= c
                }
                shares[alias.functionVersion, default: 0] += left
            } else {
                shares[q] = n
            }
            for (v, c) in shares where c > 0 {
                guard let number = Int(v), let record = try functions.version(account: latest.account, latest.name, number) else {
                    continue
                }
                plan.append((q, record, c))
            }
        }
        return plan
    }

    /// Hands the function's provisioned plan to the dispatcher (after any change of it, of an alias, or at start).
    func syncProvisioned(account: String, _ name: String) async throws {
        guard let latest = try functions.get(account: account, name) else { return }
        var perVersion: [String: (FunctionRecord, Int)] = [:]
        for p in try provisionedPlan(latest) { perVersion[p.version.instanceKey, default: (p.version, 0)].1 += p.count }
        await dispatcher.setProvisioned(function: latest.key, Array(perVersion.values))
    }

    /// Loads every function's provisioned plan into the dispatcher (at start).
    public func loadProvisioned() async throws {
        for f in try functions.all() where !(f.provisioned ?? [:]).isEmpty { try await syncProvisioned(account: f.account, f.name) }
    }

    /// A qualifier's provisioned status: its share of each version's instances.
    func provisionedStatus(_ raw: String, qualifier parameter: String?, caller: Caller) async throws -> Dispatcher.ProvisionedStatus {
        let ref = try FunctionReference(parsing: raw)
        let q = try qualifier(ref, parameter)
        let latest = try resolve(ref.unqualified, caller: caller)
        guard let q, latest.provisioned?[q] != nil else {
            throw LambdaError(
                LambdaError.Code("ProvisionedConcurrencyConfigNotFoundException", status: 404),
                "No Provisioned Concurrency Config found for this function")
        }
        var total = Dispatcher.ProvisionedStatus(
            requested: 0, allocated: 0, available: 0, status: "READY", reason: nil, lastModified: .distantPast)
        for p in try provisionedPlan(latest) where p.qualifier == q {
            guard let s = await dispatcher.provisionedStatus(p.version.instanceKey) else { continue }
            // A version shared with other qualifiers lends each its share.
            total.requested += p.count
            total.allocated += min(p.count, s.allocated)
            total.available += min(p.count, s.available)
            if s.status == "FAILED" {
                total.status = "FAILED"
                total.reason = s.reason
            }
            total.lastModified = max(total.lastModified, s.lastModified)
        }
        total.requested = latest.provisioned?[q] ?? total.requested
        if total.status != "FAILED" { total.status = total.allocated >= total.requested ? "READY" : "IN_PROGRESS" }
        if total.lastModified == .distantPast { total.lastModified = latest.lastModified }
        return total
    }
}
