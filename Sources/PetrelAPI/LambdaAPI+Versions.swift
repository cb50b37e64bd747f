import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PetrelCore
import PetrelSigV4
import PetrelStore

/// Published versions and aliases.
extension LambdaAPI {
    func registerVersions(on router: Router<PetrelRequestContext>) {
        let fn = Self.functionsPath
        router.post(RouterPath(fn + "/{name}/versions")) { req, ctx in await handle(req, ctx, "PublishVersion", self.publishVersion) }
        router.get(RouterPath(fn + "/{name}/versions")) { req, ctx in
            await handle(req, ctx, "ListVersionsByFunction", self.listVersions)
        }
        router.post(RouterPath(fn + "/{name}/aliases")) { req, ctx in await handle(req, ctx, "CreateAlias", self.createAlias) }
        router.get(RouterPath(fn + "/{name}/aliases")) { req, ctx in await handle(req, ctx, "ListAliases", self.listAliases) }
        router.get(RouterPath(fn + "/{name}/aliases/{alias}")) { req, ctx in await handle(req, ctx, "GetAlias", self.getAlias) }
        router.put(RouterPath(fn + "/{name}/aliases/{alias}")) { req, ctx in await handle(req, ctx, "UpdateAlias", self.updateAlias) }
        router.delete(RouterPath(fn + "/{name}/aliases/{alias}")) { req, ctx in await handle(req, ctx, "DeleteAlias", self.deleteAlias) }
    }

    /// `MaxItems` of a list call (1–`max`, `default` when absent) and its `Marker`.
    static func paging(_ req: Request, max: Int = 10_000, default def: Int = 50) throws -> (limit: Int, marker: String?) {
        let q = req.uri.queryParameters
        var limit = def
        if let m = q["MaxItems"] {
            guard let n = Int(m), (1...max).contains(n) else {
                throw LambdaError.constraint(String(m), at: "maxItems", "Member must have value between 1 and \(max)")
            }
            limit = n
        }
        return (limit, q["Marker"].map { SigV4.percentDecoded(String($0)) })
    }

    func publishVersion(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = call.body.readableBytes == 0 ? PublishVersionInput() : try Self.decode(PublishVersionInput.self, call.body)
        let v = try catalog.publish(try name(ctx), input, caller: call.caller)
        return APIResponse.json(configuration(v), status: .created)
    }

    struct VersionsShape: Encodable {
        var Versions: [FunctionConfigurationShape]
        var NextMarker: String?
    }

    func listVersions(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let (limit, marker) = try Self.paging(req)
        let (page, next) = try catalog.versions(try name(ctx), marker: marker, limit: limit, caller: call.caller)
        return APIResponse.json(
            VersionsShape(Versions: page.map { FunctionConfigurationShape($0, region: region, qualified: true) }, NextMarker: next))
    }

    func aliasName(_ ctx: PetrelRequestContext) -> String { SigV4.percentDecoded(ctx.parameters.get("alias") ?? "") }

    func aliasShape(_ f: FunctionRecord, _ a: FunctionAlias) -> AliasShape {
        AliasShape(a, arn: catalog.aliasARN(f.account, f.name, a.name))
    }

    func createAlias(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(AliasInput.self, call.body)
        let (f, a) = try await catalog.writeAlias(try name(ctx), name: nil, input, creating: true, caller: call.caller)
        return APIResponse.json(aliasShape(f, a), status: .created)
    }

    func updateAlias(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(AliasInput.self, call.body)
        let (f, a) = try await catalog.writeAlias(try name(ctx), name: aliasName(ctx), input, creating: false, caller: call.caller)
        return APIResponse.json(aliasShape(f, a))
    }

    func getAlias(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let (f, a) = try catalog.alias(try name(ctx), aliasName(ctx), caller: call.caller)
        return APIResponse.json(aliasShape(f, a))
    }

    func deleteAlias(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        try await catalog.deleteAlias(try name(ctx), aliasName(ctx), caller: call.caller)
        return Response(status: .noContent)
    }

    struct AliasesShape: Encodable {
        var Aliases: [AliasShape]
        var NextMarker: String?
    }

    func listAliases(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let (limit, marker) = try Self.paging(req)
        let version = req.uri.queryParameters["FunctionVersion"].map(String.init)
        let (f, all) = try catalog.aliases(try name(ctx), version: version, caller: call.caller)
        let rest = all.filter { marker == nil || marker!.isEmpty || $0.name > marker! }
        let page = rest.prefix(limit)
        return APIResponse.json(
            AliasesShape(Aliases: page.map { aliasShape(f, $0) }, NextMarker: rest.count > limit ? page.last?.name : nil))
    }
}
