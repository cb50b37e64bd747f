import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PetrelCore
import PetrelStore

/// Where function URLs are served, and how their addresses are written.
public struct URLAddressing: Sendable {
    public var scheme: String
    /// `HOST:PORT` of the URL listener as clients reach it.
    public var authority: String
    /// With wildcard DNS: URLs are `<id>.<domain>` (the domain may carry a port).
    public var domain: String?

    public init(scheme: String, authority: String, domain: String?) {
        self.scheme = scheme
        self.authority = authority
        self.domain = domain
    }

    /// A URL's address: host-based when a domain is configured, else path-based (no DNS needed).
    public func address(of id: String) -> String {
        if let domain { return "\(scheme)://\(id).\(domain)/" }
        return "\(scheme)://\(authority)/\(id)/"
    }
}

/// The function URL configurations (`/2021-10-31/functions/{name}/url[s]`).
extension LambdaAPI {
    func registerURLs(on router: Router<PetrelRequestContext>) {
        let u = "/2021-10-31/functions/{name}/url"
        router.post(RouterPath(u)) { req, ctx in await handle(req, ctx, "CreateFunctionUrlConfig", self.createURL) }
        router.get(RouterPath(u)) { req, ctx in await handle(req, ctx, "GetFunctionUrlConfig", self.getURL) }
        router.put(RouterPath(u)) { req, ctx in await handle(req, ctx, "UpdateFunctionUrlConfig", self.updateURL) }
        router.delete(RouterPath(u)) { req, ctx in await handle(req, ctx, "DeleteFunctionUrlConfig", self.deleteURL) }
        router.get(RouterPath(u + "s")) { req, ctx in await handle(req, ctx, "ListFunctionUrlConfigs", self.listURLs) }
    }

    struct URLConfigShape: Encodable {
        var FunctionUrl: String
        var FunctionArn: String
        var AuthType: String
        var Cors: URLConfigInput.CorsShape?
        var CreationTime: String
        var LastModifiedTime: String
        var InvokeMode: String
    }

    func urlShape(_ u: FunctionURLConfig) -> URLConfigShape {
        URLConfigShape(
            FunctionUrl: urlAddressing.address(of: u.id),
            FunctionArn: FunctionARN(region: region, account: u.account, name: u.function, qualifier: u.qualifier).description,
            AuthType: u.authType.rawValue, Cors: u.cors.map(URLConfigInput.CorsShape.init),
            CreationTime: PlatformClock.iso8601(u.created), LastModifiedTime: PlatformClock.iso8601(u.lastModified),
            InvokeMode: u.invokeMode.rawValue)
    }

    func createURL(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(URLConfigInput.self, call.body)
        return APIResponse.json(
            urlShape(try catalog.createURL(try name(ctx), qualifier: qualifier(req), input, caller: call.caller)), status: .created)
    }

    func getURL(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        APIResponse.json(urlShape(try catalog.url(try name(ctx), qualifier: qualifier(req), caller: call.caller)))
    }

    func updateURL(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(URLConfigInput.self, call.body)
        return APIResponse.json(urlShape(try catalog.updateURL(try name(ctx), qualifier: qualifier(req), input, caller: call.caller)))
    }

    func deleteURL(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        try catalog.deleteURL(try name(ctx), qualifier: qualifier(req), caller: call.caller)
        return Response(status: .noContent)
    }

    struct URLListShape: Encodable {
        var FunctionUrlConfigs: [URLConfigShape]
        var NextMarker: String?
    }

    func listURLs(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        _ = try Self.paging(req, max: 50)
        return APIResponse.json(URLListShape(FunctionUrlConfigs: try catalog.listURLs(try name(ctx), caller: call.caller).map(urlShape)))
    }
}
