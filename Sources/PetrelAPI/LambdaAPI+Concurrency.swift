import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PetrelCore
import PetrelRuntime
import PetrelSigV4
import PetrelStore

/// Reserved and provisioned concurrency.
extension LambdaAPI {
    struct ConcurrencyShape: Codable { var ReservedConcurrentExecutions: Int? }

    func putConcurrency(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(ConcurrencyShape.self, call.body)
        guard let value = input.ReservedConcurrentExecutions else {
            throw LambdaError(.invalidParameterValue, "ReservedConcurrentExecutions is required.")
        }
        let f = try await catalog.setReservedConcurrency(try name(ctx), value, caller: call.caller)
        return APIResponse.json(ConcurrencyShape(ReservedConcurrentExecutions: f.reservedConcurrency))
    }

    func getConcurrency(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let f = try catalog.resolve(try name(ctx), caller: call.caller)
        return APIResponse.json(ConcurrencyShape(ReservedConcurrentExecutions: f.reservedConcurrency))
    }

    func deleteConcurrency(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        _ = try await catalog.setReservedConcurrency(try name(ctx), nil, caller: call.caller)
        return Response(status: .noContent)
    }

    struct ProvisionedInput: Codable { var ProvisionedConcurrentExecutions: Int? }

    struct ProvisionedShape: Encodable {
        var RequestedProvisionedConcurrentExecutions: Int
        var AvailableProvisionedConcurrentExecutions: Int
        var AllocatedProvisionedConcurrentExecutions: Int
        var Status: String
        var StatusReason: String?
        var LastModified: String
    }

    func provisionedShape(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> ProvisionedShape {
        let s = try await catalog.provisionedStatus(try name(ctx), qualifier: qualifier(req), caller: call.caller)
        return ProvisionedShape(
            RequestedProvisionedConcurrentExecutions: s.requested, AvailableProvisionedConcurrentExecutions: s.available,
            AllocatedProvisionedConcurrentExecutions: s.allocated, Status: s.status, StatusReason: s.reason,
            LastModified: FunctionRecord.lambdaTimestamp(s.lastModified))
    }

    func putProvisioned(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(ProvisionedInput.self, call.body)
        guard let n = input.ProvisionedConcurrentExecutions else {
            throw LambdaError(.invalidParameterValue, "ProvisionedConcurrentExecutions is required.")
        }
        try await catalog.setProvisionedConcurrency(try name(ctx), qualifier: qualifier(req), n, caller: call.caller)
        return APIResponse.json(try await provisionedShape(req, ctx, call), status: .accepted)
    }

    func getProvisioned(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        APIResponse.json(try await provisionedShape(req, ctx, call))
    }

    func deleteProvisioned(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        _ = try await provisionedShape(req, ctx, call) // 404 when there is none
        try await catalog.setProvisionedConcurrency(try name(ctx), qualifier: qualifier(req), nil, caller: call.caller)
        return Response(status: .noContent)
    }
}
