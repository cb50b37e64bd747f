import Foundation
import Hummingbird
import PetrelCore

/// Requests no route takes (an operation Petrel does not implement, a wrong
/// method) are answered in Lambda's error shape, not Hummingbird's, and go into
/// the audit trail like every other call (through the request pipeline).
public struct UnknownRouteMiddleware: RouterMiddleware {
    let pipeline: RequestPipeline

    public init(gate: Gatekeeper) { pipeline = RequestPipeline(gate: gate, logger: gate.logger) }

    public func handle(
        _ request: Request, context: PetrelRequestContext,
        next: (Request, PetrelRequestContext) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound || e.status == .methodNotAllowed {
            let audit = RequestPipeline.Audit(
                resource: nil,
                parameters: AuditParameters.describe(
                    query: [("Method", request.method.rawValue), ("Path", request.uri.path)], path: [:], body: nil, payloadIsData: false))
            return await pipeline.runUnsigned(request, context, action: "Unknown", style: .restJSON, audit: audit) { _ in
                throw LambdaError(
                    .unknownOperation,
                    "Petrel does not implement \(request.method) \(request.uri.path): the operation is unknown or not supported yet.")
            }
        }
    }
}
