import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PetrelCore
import PetrelRuntime
import PetrelSigV4
import PetrelStore

/// Resource policies (AddPermission, GetPolicy, RemovePermission) and tags.
extension LambdaAPI {
    func addPermission(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(FunctionCatalog.PermissionInput.self, call.body)
        let (f, statement) = try catalog.addPermission(
            try name(ctx), qualifier: req.uri.queryParameters["Qualifier"].map(String.init), input,
            caller: call.caller)
        let resource = FunctionARN(region: region, account: f.account, name: f.name, qualifier: statement.qualifier).description
        return APIResponse.json(
            ["Statement": PolicyDocument.json(PolicyDocument.statement(statement, resource: resource))], status: .created)
    }

    func getPolicy(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let (f, list) = try catalog.policy(
            try name(ctx), qualifier: req.uri.queryParameters["Qualifier"].map(String.init), caller: call.caller)
        let resource = FunctionARN(region: region, account: f.account, name: f.name, qualifier: list.first?.qualifier).description
        return APIResponse.json(["Policy": PolicyDocument.document(list, resource: resource), "RevisionId": f.revisionId])
    }

    func removePermission(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let sid = ctx.parameters.get("sid").map(SigV4.percentDecoded) ?? ""
        let q = req.uri.queryParameters
        try catalog.removePermission(
            try name(ctx), sid: sid, qualifier: q["Qualifier"].map(String.init), revision: q["RevisionId"].map(String.init),
            caller: call.caller)
        return Response(status: .noContent)
    }

    func resourceARN(_ ctx: PetrelRequestContext) -> String {
        SigV4.percentDecoded(ctx.parameters.get("arn") ?? "")
    }

    struct TagsShape: Codable { var Tags: [String: String]? }

    func tagResource(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(TagsShape.self, call.body)
        guard let tags = input.Tags else { throw LambdaError(.invalidParameterValue, "Tags is required.") }
        try catalog.tag(resourceARN(ctx), tags, caller: call.caller)
        return Response(status: .noContent)
    }

    func untagResource(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let keys = SigV4.queryPairs(req.uri.query.map { Substring($0) }).filter { $0.0 == "tagKeys" }.map(\.1)
        guard !keys.isEmpty else { throw LambdaError(.invalidParameterValue, "TagKeys is required.") }
        try catalog.untag(resourceARN(ctx), keys: keys, caller: call.caller)
        return Response(status: .noContent)
    }

    func listTags(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        APIResponse.json(TagsShape(Tags: try catalog.tags(resourceARN(ctx), caller: call.caller)))
    }
}
