import Foundation
import PetrelCore
import PetrelStore

/// Tags and resource-based policies: changes of who may do what with a
/// function, and of its labels. Neither is part of the code or configuration,
/// so neither changes the RevisionId (warm instances stay warm).
extension FunctionCatalog {
    /// TagResource, UntagResource and ListTags name the function by its ARN.
    func resolveTagged(_ rawARN: String, caller: Caller) throws -> FunctionRecord {
        let ref: FunctionReference
        do { ref = try FunctionReference(parsing: rawARN) } catch {
            throw LambdaError(.invalidParameterValue, "The resource ARN \(rawARN) is not a function ARN.")
        }
        guard ref.account != nil, ref.qualifier == nil else {
            throw LambdaError(
                .invalidParameterValue,
                "Tags belong to a function: pass its unqualified ARN (arn:aws:lambda:\(region):\(caller.account):function:NAME), not \(rawARN)."
            )
        }
        return try resolve(ref, caller: caller)
    }

    static func checkTags(_ tags: [String: String], adding existing: [String: String]) throws -> [String: String] {
        for (k, v) in tags {
            guard (1...128).contains(k.count) else {
                throw LambdaError.constraint(k, at: "tags", "Member must satisfy constraint: keys have length between 1 and 128")
            }
            guard v.count <= 256 else {
                throw LambdaError.constraint(v, at: "tags.\(k)", "Member must have length less than or equal to 256")
            }
            guard !k.lowercased().hasPrefix("aws:") else {
                throw LambdaError(.invalidParameterValue, "Tag keys starting with 'aws:' are reserved for AWS use: \(k)")
            }
        }
        let merged = existing.merging(tags) { _, new in new }
        guard merged.count <= 50 else {
            throw LambdaError(.invalidParameterValue, "A function may have at most 50 tags; this would give it \(merged.count).")
        }
        return merged
    }

    func tag(_ rawARN: String, _ tags: [String: String], caller: Caller) throws {
        let f = try resolveTagged(rawARN, caller: caller)
        guard
            try functions.update(
                account: f.account, f.name,
                { r in
                    let merged = try Self.checkTags(tags, adding: r.tags ?? [:])
                    r.tags = merged.isEmpty ? nil : merged
                }) != nil
        else { throw notFound(f.account, f.name) }
    }

    func untag(_ rawARN: String, keys: [String], caller: Caller) throws {
        let f = try resolveTagged(rawARN, caller: caller)
        guard
            try functions.update(
                account: f.account, f.name,
                { r in
                    var t = r.tags ?? [:]
                    for k in keys { t[k] = nil }
                    r.tags = t.isEmpty ? nil : t
                }) != nil
        else { throw notFound(f.account, f.name) }
    }

    func tags(_ rawARN: String, caller: Caller) throws -> [String: String] {
        try resolveTagged(rawARN, caller: caller).tags ?? [:]
    }

    // MARK: - resource-based policy

    struct PermissionInput: Decodable {
        var StatementId: String?
        var Action: String?
        var Principal: String?
        var SourceArn: String?
        var SourceAccount: String?
        var RevisionId: String?
        var PrincipalOrgID: String?
        var EventSourceToken: String?
        var FunctionUrlAuthType: String?
        var InvokedViaFunctionUrl: Bool?
    }

    /// The function whose policy a permission call changes or reads, and the qualifier
    /// (nil: the unqualified function and `$LATEST`) whose statements it means; the
    /// version or alias must exist.
    func policyTarget(_ raw: String, _ parameter: String?, caller: Caller) throws -> (FunctionRecord, String?) {
        let ref = try FunctionReference(parsing: raw)
        let q = try qualifier(ref, parameter).flatMap { $0 == FunctionRecord.latest ? nil : $0 }
        let f = try resolve(ref.unqualified, caller: caller)
        if let q, try functions.resolve(account: f.account, f.name, qualifier: q) == nil {
            throw notFound(f.account, f.name, qualifier: q)
        }
        return (f, q)
    }

    /// Adds a statement; answers it with the function it now guards.
    func addPermission(_ raw: String, qualifier: String?, _ input: PermissionInput, caller: Caller) throws -> (
        FunctionRecord, PolicyStatement
    ) {
        let (f, q) = try policyTarget(raw, qualifier, caller: caller)
        guard let sid = input.StatementId else { throw LambdaError(.invalidParameterValue, "StatementId is required.") }
        guard (1...100).contains(sid.count), sid.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
            throw LambdaError.constraint(sid, at: "statementId", "Member must satisfy regular expression pattern: ([a-zA-Z0-9-_.]+)")
        }
        guard let action = input.Action else { throw LambdaError(.invalidParameterValue, "Action is required.") }
        let actionOK =
            action == "*" || action == "lambda:*"
            || (action.hasPrefix("lambda:") && action.count > 7 && action.dropFirst(7).allSatisfy { $0.isASCII && $0.isLetter })
        guard actionOK else {
            throw LambdaError.constraint(
                action, at: "action", "Member must satisfy regular expression pattern: (lambda:[*]|lambda:[a-zA-Z]+|[*])")
        }
        guard let principal = input.Principal, !principal.isEmpty, !principal.contains(where: \.isWhitespace) else {
            throw LambdaError(
                .invalidParameterValue,
                "Principal is required and has no spaces: an account id, an IAM ARN of an account, a service principal or *.")
        }
        if input.PrincipalOrgID != nil || input.EventSourceToken != nil {
            throw LambdaError(
                .invalidParameterValue,
                "Petrel's policies take StatementId, Action, Principal, SourceArn, SourceAccount, FunctionUrlAuthType and InvokedViaFunctionUrl; PrincipalOrgID and EventSourceToken are not supported."
            )
        }
        if let t = input.FunctionUrlAuthType, FunctionURLConfig.AuthType(rawValue: t) == nil {
            throw LambdaError.constraint(t, at: "functionUrlAuthType", "Member must satisfy enum value set: [NONE, AWS_IAM]")
        }
        if let a = input.SourceAccount, !FunctionReference.isAccount(a) {
            throw LambdaError.constraint(a, at: "sourceAccount", "Member must satisfy regular expression pattern: \\d{12}")
        }
        var statement = PolicyStatement(
            sid: sid, action: action, principal: principal, sourceArn: input.SourceArn, sourceAccount: input.SourceAccount,
            qualifier: q)
        statement.functionUrlAuthType = input.FunctionUrlAuthType
        statement.invokedViaFunctionUrl = input.InvokedViaFunctionUrl
        guard
            let updated = try functions.update(
                account: f.account, f.name,
                { r in
                    try checkRevision(input.RevisionId, r)
                    var list = r.policy ?? []
                    guard !list.contains(where: { $0.sid == sid && $0.guards(q) }) else {
                        throw LambdaError(
                            .resourceConflict,
                            "The statement id (\(sid)) provided already exists. Please provide a new statement id, or remove the existing statement."
                        )
                    }
                    list.append(statement)
                    r.policy = list
                })
        else { throw notFound(f.account, f.name) }
        logger.info("permission added", metadata: ["function.name": "\(f.name)", "account": "\(f.account)", "policy.sid": "\(sid)"])
        return (updated, statement)
    }

    func removePermission(_ raw: String, sid: String, qualifier: String?, revision: String?, caller: Caller) throws {
        let (f, q) = try policyTarget(raw, qualifier, caller: caller)
        guard
            try functions.update(
                account: f.account, f.name,
                { r in
                    try checkRevision(revision, r)
                    var list = r.policy ?? []
                    guard let i = list.firstIndex(where: { $0.sid == sid && $0.guards(q) }) else {
                        throw LambdaError(.resourceNotFound, "Statement \(sid) is not found in resource policy.")
                    }
                    list.remove(at: i)
                    r.policy = list.isEmpty ? nil : list
                }) != nil
        else { throw notFound(f.account, f.name) }
        logger.info("permission removed", metadata: ["function.name": "\(f.name)", "account": "\(f.account)", "policy.sid": "\(sid)"])
    }

    func policy(_ raw: String, qualifier: String?, caller: Caller) throws -> (FunctionRecord, [PolicyStatement]) {
        let (f, q) = try policyTarget(raw, qualifier, caller: caller)
        guard let list = f.policy?.filter({ $0.guards(q) }), !list.isEmpty else {
            throw LambdaError(.resourceNotFound, "The resource you requested does not exist.")
        }
        return (f, list)
    }
}
