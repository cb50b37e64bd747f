import Foundation
import Hummingbird
import PetrelCore

/// Requests no route takes (an operation Petrel does not implement, a wrong
/// method) are answered in Lambda's error shape, not Hummingbird's.
public struct UnknownRouteMiddleware<Context: RequestContext>: RouterMiddleware {
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound || e.status == .methodNotAllowed {
            return APIResponse.error(LambdaError(.unknownOperation,
                "Petrel does not implement \(request.method) \(request.uri.path): the operation is unknown or not supported yet."),
                requestID: UUID().uuidString.lowercased())
        }
    }
}
