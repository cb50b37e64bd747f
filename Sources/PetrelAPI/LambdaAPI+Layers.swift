import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PetrelCore
import PetrelSigV4
import PetrelStore

/// Layers (`/2018-10-31/layers…`).
extension LambdaAPI {
    static let layersPath = "/2018-10-31/layers"

    func registerLayers(on router: Router<PetrelRequestContext>) {
        let l = Self.layersPath
        let v = l + "/{layer}/versions/{version}"
        // GetLayerVersionByArn is ListLayers' path with `find=LayerVersion`.
        router.get(RouterPath(l)) { req, ctx in
            req.uri.queryParameters["find"] == "LayerVersion"
                ? await handle(req, ctx, "GetLayerVersionByArn", self.getLayerVersionByArn)
                : await handle(req, ctx, "ListLayers", self.listLayers)
        }
        router.post(RouterPath(l + "/{layer}/versions")) { req, ctx in
            await handle(req, ctx, "PublishLayerVersion", limit: Self.maxCodeRequest, self.publishLayer)
        }
        router.get(RouterPath(l + "/{layer}/versions")) { req, ctx in await handle(req, ctx, "ListLayerVersions", self.listLayerVersions) }
        router.get(RouterPath(v)) { req, ctx in await handle(req, ctx, "GetLayerVersion", self.getLayerVersion) }
        router.delete(RouterPath(v)) { req, ctx in await handle(req, ctx, "DeleteLayerVersion", self.deleteLayerVersion) }
        router.post(RouterPath(v + "/policy")) { req, ctx in
            await handle(req, ctx, "AddLayerVersionPermission", self.addLayerPermission)
        }
        router.get(RouterPath(v + "/policy")) { req, ctx in await handle(req, ctx, "GetLayerVersionPolicy", self.getLayerPolicy) }
        router.delete(RouterPath(v + "/policy/{sid}")) { req, ctx in
            await handle(req, ctx, "RemoveLayerVersionPermission", self.removeLayerPermission)
        }
    }

    func layerName(_ ctx: PetrelRequestContext) -> String { SigV4.percentDecoded(ctx.parameters.get("layer") ?? "") }

    func layerVersionNumber(_ ctx: PetrelRequestContext) throws -> Int {
        let raw = ctx.parameters.get("version") ?? ""
        guard let n = Int(raw), n >= 1 else {
            throw LambdaError(.invalidParameterValue, "The layer version \(raw) is not valid: a layer's versions are numbered from 1.")
        }
        return n
    }

    func layerShape(_ l: LayerVersionRecord, _ req: Request) -> LayerVersionShape {
        let base = "\(codeLinks.scheme)://\(req.head.authority ?? "127.0.0.1:9000")"
        return LayerVersionShape(l, region: region, location: base + codeLinks.path(for: l))
    }

    func publishLayer(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(PublishLayerInput.self, call.body)
        let l = try catalog.publishLayer(layerName(ctx), input, caller: call.caller)
        return APIResponse.json(layerShape(l, req), status: .created)
    }

    func getLayerVersion(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let l = try catalog.layerVersion(layerName(ctx), try layerVersionNumber(ctx), caller: call.caller)
        return APIResponse.json(layerShape(l, req))
    }

    func getLayerVersionByArn(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        guard let arn = req.uri.queryParameters["Arn"].map({ SigV4.percentDecoded(String($0)) }) else {
            throw LambdaError(.invalidParameterValue, "Arn is required.")
        }
        return APIResponse.json(layerShape(try catalog.layerVersion(arn: arn, caller: call.caller), req))
    }

    func deleteLayerVersion(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        try catalog.deleteLayerVersion(layerName(ctx), try layerVersionNumber(ctx), caller: call.caller)
        return Response(status: .noContent)
    }

    struct LayersShape: Encodable {
        struct Item: Encodable {
            var LayerName: String
            var LayerArn: String
            var LatestMatchingVersion: LayerVersionShape
        }
        var Layers: [Item]
        var NextMarker: String?
    }

    struct LayerVersionsShape: Encodable {
        var LayerVersions: [LayerVersionShape]
        var NextMarker: String?
    }

    func listLayers(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let (limit, marker) = try Self.paging(req, max: 50)
        let q = req.uri.queryParameters
        let all = try catalog.listLayers(
            runtime: q["CompatibleRuntime"].map(String.init), architecture: q["CompatibleArchitecture"].map(String.init),
            caller: call.caller)
        let rest = all.filter { marker == nil || marker!.isEmpty || $0.name > marker! }
        let page = rest.prefix(limit)
        return APIResponse.json(
            LayersShape(
                Layers: page.map {
                    .init(
                        LayerName: $0.name, LayerArn: $0.layerARN(region: region),
                        LatestMatchingVersion: LayerVersionShape($0, region: region, location: nil))
                }, NextMarker: rest.count > limit ? page.last?.name : nil))
    }

    func listLayerVersions(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let (limit, marker) = try Self.paging(req, max: 50)
        let q = req.uri.queryParameters
        let all = try catalog.listLayerVersions(
            layerName(ctx), runtime: q["CompatibleRuntime"].map(String.init), architecture: q["CompatibleArchitecture"].map(String.init),
            caller: call.caller)
        // Newest first: the marker is the last version shown.
        let rest = all.filter { v in marker.flatMap { Int($0) }.map { v.version < $0 } ?? true }
        let page = rest.prefix(limit)
        return APIResponse.json(
            LayerVersionsShape(
                LayerVersions: page.map { LayerVersionShape($0, region: region, location: nil) },
                NextMarker: rest.count > limit ? page.last.map { String($0.version) } : nil))
    }

    func addLayerPermission(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(LayerPermissionInput.self, call.body)
        let (l, statement) = try catalog.addLayerPermission(
            layerName(ctx), try layerVersionNumber(ctx), input, revision: req.uri.queryParameters["RevisionId"].map(String.init),
            caller: call.caller)
        return APIResponse.json(
            [
                "Statement": PolicyDocument.json(PolicyDocument.statement(statement, resource: l.arn(region: region))),
                "RevisionId": l.revisionId,
            ], status: .created)
    }

    func getLayerPolicy(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let l = try catalog.layerVersion(layerName(ctx), try layerVersionNumber(ctx), caller: call.caller, owner: true)
        guard let list = l.policy, !list.isEmpty else {
            throw LambdaError(.resourceNotFound, "No policy is associated with the given resource.")
        }
        return APIResponse.json(["Policy": PolicyDocument.document(list, resource: l.arn(region: region)), "RevisionId": l.revisionId])
    }

    func removeLayerPermission(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        try catalog.removeLayerPermission(
            layerName(ctx), try layerVersionNumber(ctx), sid: SigV4.percentDecoded(ctx.parameters.get("sid") ?? ""),
            revision: req.uri.queryParameters["RevisionId"].map(String.init), caller: call.caller)
        return Response(status: .noContent)
    }
}
