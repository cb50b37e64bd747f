import Foundation
import Hummingbird
import Logging
import PetrelCore
import PetrelStore

/// The role-and-policy part of IAM (query protocol, as botocore's `iam` model describes it):
/// an account's roles, their trust policies and inline policies. Policies are checked when
/// they are put (`IAMPolicy`), so what is stored is what Petrel evaluates.
public struct IAMAPI: Sendable {
    let accounts: AccountStore
    let pipeline: RequestPipeline
    static let namespace = "https://iam.amazonaws.com/doc/2010-05-08/"

    public init(accounts: AccountStore, gate: Gatekeeper, logger: Logger) {
        self.accounts = accounts
        pipeline = RequestPipeline(gate: gate, logger: logger)
    }

    typealias Node = QueryXML.Node

    static func error(_ code: String, _ message: String, status: Int = 400) -> LambdaError { .named(code, message, status: status) }
    static func noRole(_ name: String) -> LambdaError { error("NoSuchEntity", "The role with name \(name) cannot be found.", status: 404) }

    func serve(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        await pipeline.runQuery(
            req, ctx, service: "iam", limit: 262_144, namespace: Self.namespace, denied: LambdaError.Code("AccessDenied", status: 403),
            // Policy documents are kept out of the trail: which role and which policy only.
            audit: { form in (form["RoleName"], form.filter { !$0.key.hasSuffix("PolicyDocument") }) },
            access: { form, action, call in
                let resource = form["RoleName"].map { "arn:aws:iam::\(call.caller.account):role\(form["Path"] ?? "/")\($0)" } ?? "*"
                return [.init(action: "iam:" + action, resource: resource)]
            }
        ) { form, action, call in
            try dispatch(action, form, account: call.caller.account)
        }
    }

    func dispatch(_ action: String, _ f: [String: String], account: String) throws -> [Node] {
        switch action {
        case "CreateRole":
            let name = try Self.name(f, "RoleName", max: 64)
            let path = f["Path"] ?? "/"
            guard
                path == "/"
                    || (path.hasPrefix("/") && path.hasSuffix("/") && path.utf8.count <= 512
                        && path.unicodeScalars.allSatisfy { (0x21...0x7e).contains($0.value) })
            else {
                throw Self.error(
                    "ValidationError",
                    "The specified value for path is invalid. It must begin and end with / and contain only printable ASCII characters.")
            }
            let trust = try Self.document(f, "AssumeRolePolicyDocument", kind: .trust)
            let description = f["Description"] ?? ""
            guard description.count <= 1000 else { throw Self.error("ValidationError", "Description is longer than 1,000 characters.") }
            let maxSession = try QueryXML.int(f, "MaxSessionDuration", 3600...43200) ?? 3600
            guard
                let role = try accounts.createRole(
                    account: account, name: name, path: path, trustPolicy: trust, description: description, maxSessionSeconds: maxSession)
            else { throw Self.error("EntityAlreadyExists", "Role with name \(name) already exists.", status: 409) }
            return [Self.roleNode(role)]
        case "GetRole":
            let name = try Self.name(f, "RoleName", max: 64)
            guard let role = try accounts.role(account: account, name: name) else { throw Self.noRole(name) }
            return [Self.roleNode(role)]
        case "ListRoles":
            let all = try accounts.roles(account: account, pathPrefix: f["PathPrefix"] ?? "/")
            let (page, next) = try Self.page(all, f, key: \.name)
            return [.element("Roles", page.map { Self.roleNode($0, tag: "member") }), .text("IsTruncated", next == nil ? "false" : "true")]
                + (next.map { [.text("Marker", $0)] } ?? [])
        case "DeleteRole":
            let name = try Self.name(f, "RoleName", max: 64)
            switch try accounts.deleteRole(account: account, name: name) {
            case .noRole: throw Self.noRole(name)
            case .hasPolicies: throw Self.error("DeleteConflict", "Cannot delete entity, must delete policies first.", status: 409)
            default: return []
            }
        case "UpdateAssumeRolePolicy":
            let name = try Self.name(f, "RoleName", max: 64)
            let trust = try Self.document(f, "PolicyDocument", kind: .trust)
            guard try accounts.updateTrustPolicy(account: account, role: name, document: trust) == .done else { throw Self.noRole(name) }
            return []
        case "PutRolePolicy":
            let role = try Self.name(f, "RoleName", max: 64)
            let name = try Self.name(f, "PolicyName", max: 128)
            let doc = try Self.document(f, "PolicyDocument", kind: .identity)
            guard try accounts.putRolePolicy(account: account, role: role, name: name, document: doc) == .done else {
                throw Self.noRole(role)
            }
            return []
        case "GetRolePolicy":
            let role = try Self.name(f, "RoleName", max: 64)
            let name = try Self.name(f, "PolicyName", max: 128)
            guard try accounts.role(account: account, name: role) != nil else { throw Self.noRole(role) }
            guard let p = try accounts.rolePolicies(account: account, role: role).first(where: { $0.name == name }) else {
                throw Self.error("NoSuchEntity", "The role policy with name \(name) cannot be found.", status: 404)
            }
            return [.text("RoleName", role), .text("PolicyName", p.name), .text("PolicyDocument", Self.urlEncoded(p.document))]
        case "DeleteRolePolicy":
            let role = try Self.name(f, "RoleName", max: 64)
            let name = try Self.name(f, "PolicyName", max: 128)
            switch try accounts.deleteRolePolicy(account: account, role: role, name: name) {
            case .noRole: throw Self.noRole(role)
            case .noPolicy: throw Self.error("NoSuchEntity", "The role policy with name \(name) cannot be found.", status: 404)
            default: return []
            }
        case "ListRolePolicies":
            let role = try Self.name(f, "RoleName", max: 64)
            guard try accounts.role(account: account, name: role) != nil else { throw Self.noRole(role) }
            let (page, next) = try Self.page(try accounts.rolePolicies(account: account, role: role).map(\.name), f, key: \.self)
            return [.element("PolicyNames", page.map { .text("member", $0) }), .text("IsTruncated", next == nil ? "false" : "true")]
                + (next.map { [.text("Marker", $0)] } ?? [])
        default:
            throw Self.error(
                "InvalidAction",
                "Petrel's IAM serves roles and their inline policies (CreateRole, GetRole, ListRoles, DeleteRole, UpdateAssumeRolePolicy, PutRolePolicy, GetRolePolicy, ListRolePolicies, DeleteRolePolicy); \(action.isEmpty ? "no Action was given" : action) is not one of them."
            )
        }
    }

    // MARK: - parameters

    /// Role and policy names: `[\w+=,.@-]+`, 1 to `max` characters.
    static func name(_ f: [String: String], _ field: String, max: Int) throws -> String {
        guard let v = f[field] else {
            throw error(
                "ValidationError",
                "1 validation error detected: Value null at '\(field)' failed to satisfy constraint: Member must not be null")
        }
        guard QueryXML.isIAMName(v, length: 1...max) else {
            throw error(
                "ValidationError",
                "1 validation error detected: Value '\(v)' at '\(field)' failed to satisfy constraint: Member must have length less than or equal to \(max) and match the pattern [\\w+=,.@-]+"
            )
        }
        return v
    }

    /// A policy document, checked; stored as given.
    static func document(_ f: [String: String], _ field: String, kind: IAMPolicy.Kind) throws -> String {
        guard let doc = f[field], !doc.isEmpty else { throw error("ValidationError", "\(field) is required.") }
        _ = try IAMPolicy(json: doc, kind: kind)
        return doc
    }

    /// `MaxItems` (1–1000, default 100) after `Marker` (the last name of the page before).
    static func page<T>(_ all: [T], _ f: [String: String], key: (T) -> String) throws -> ([T], String?) {
        let max = try QueryXML.int(f, "MaxItems", 1...1000) ?? 100
        let rest = f["Marker"].map { m in all.filter { key($0) > m } } ?? all
        let page = Array(rest.prefix(max))
        return (page, rest.count > max ? page.last.map(key) : nil)
    }

    /// IAM returns policy documents URL-encoded (botocore decodes them).
    static func urlEncoded(_ s: String) -> String {
        s.addingPercentEncoding(
            withAllowedCharacters: CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"))
            ?? s
    }

    static func roleNode(_ r: AccountStore.Role, tag: String = "Role") -> Node {
        .element(
            tag,
            [
                .text("Path", r.path), .text("RoleName", r.name), .text("RoleId", r.id), .text("Arn", r.arn),
                .text("CreateDate", PlatformClock.iso8601(r.created)), .text("AssumeRolePolicyDocument", urlEncoded(r.trustPolicy)),
                .text("Description", r.description), .text("MaxSessionDuration", String(r.maxSessionSeconds)),
            ])
    }
}
