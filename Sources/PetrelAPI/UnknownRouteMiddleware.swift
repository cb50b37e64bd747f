import Foundation
import Hummingbird
import PetrelCore

/// Requests no route takes (an operation Petrel does not implement, a wrong
/// method) are answered in Lambda's error shape, not Hummingbird's, and go into
/// the audit trail like every other call.
public struct UnknownRouteMiddleware: RouterMiddleware {
    let gate: Gatekeeper

    public init(gate: Gatekeeper) { self.gate = gate }

    public func handle(_ request: Request, context: PetrelRequestContext,
                       next: (Request, PetrelRequestContext) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound || e.status == .methodNotAllowed {
            let error = LambdaError(.unknownOperation,
                "Petrel does not implement \(request.method) \(request.uri.path): the operation is unknown or not supported yet.")
            gate.record(request, context, action: "Unknown", caller: nil, resource: nil,
                        parameters: AuditParameters.describe(query: [("Method", request.method.rawValue), ("Path", request.uri.path)],
                                                             path: [:], body: nil, payloadIsData: false),
                        status: error.code.status, error: error.code.rawValue)
            return APIResponse.error(error, requestID: FastIDs.uuid())
        }
    }
}
