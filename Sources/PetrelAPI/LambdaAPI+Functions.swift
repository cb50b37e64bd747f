import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PetrelCore
import PetrelRuntime
import PetrelSigV4
import PetrelStore

/// Functions themselves: create, read, list, update, delete, and the account's settings.
extension LambdaAPI {
    func createFunction(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(CreateFunctionInput.self, call.body)
        let f = try catalog.create(input, caller: call.caller)
        return APIResponse.json(configuration(f), status: .created)
    }

    func listFunctions(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let q = req.uri.queryParameters
        let (limit, marker) = try Self.paging(req)
        if let marker, !marker.isEmpty, !FunctionReference.isValidName(marker) {
            throw LambdaError(.invalidParameterValue, "The Marker \(marker) is not valid; pass the NextMarker of the previous page.")
        }
        let all: Bool
        switch q["FunctionVersion"] {
        case nil: all = false
        case "ALL": all = true
        case let v?: throw LambdaError.constraint(String(v), at: "functionVersion", "Member must satisfy enum value set: [ALL]")
        }
        let page = try catalog.functions.list(account: call.caller.account, after: marker, limit: limit + 1)
        let shown = page.prefix(limit)
        // FunctionVersion=ALL: each function's published versions follow its $LATEST.
        let listed = try shown.flatMap { f in
            [f] + (all ? try catalog.functions.versions(account: f.account, f.name) : [])
        }
        return APIResponse.json(
            ListFunctionsShape(
                Functions: listed.map(configuration),
                NextMarker: page.count > limit ? shown.last?.name : nil))
    }

    func getFunction(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let f = try catalog.resolve(try name(ctx), qualifier: qualifier(req), caller: call.caller, action: "lambda:GetFunction")
        let base = "\(codeLinks.scheme)://\(req.head.authority ?? "127.0.0.1:9000")"
        return APIResponse.json(
            GetFunctionShape(
                Configuration: configuration(f),
                Code: .init(Location: base + codeLinks.path(for: f)),
                Concurrency: f.reservedConcurrency.map { .init(ReservedConcurrentExecutions: $0) },
                Tags: f.account == call.caller.account ? (f.tags ?? [:]) : nil))
    }

    func getConfiguration(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let f = try catalog.resolve(
            try name(ctx), qualifier: qualifier(req), caller: call.caller, action: "lambda:GetFunctionConfiguration")
        return APIResponse.json(configuration(f))
    }

    func updateConfiguration(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(UpdateFunctionConfigurationInput.self, call.body)
        return APIResponse.json(configuration(try await catalog.updateConfiguration(try name(ctx), input, caller: call.caller)))
    }

    func updateCode(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(UpdateFunctionCodeInput.self, call.body)
        return APIResponse.json(configuration(try await catalog.updateCode(try name(ctx), input, caller: call.caller)))
    }

    func deleteFunction(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        try await catalog.delete(try name(ctx), qualifier: qualifier(req), caller: call.caller)
        return Response(status: .noContent)
    }

    func accountSettings(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let s = await dispatcher.snapshot
        return APIResponse.json(
            AccountSettingsShape(
                AccountLimit: .init(
                    TotalCodeSize: 80_530_636_800, CodeSizeUnzipped: CodeArchive.maxUnzippedBytes,
                    CodeSizeZipped: CodeArchive.maxZippedBytes, ConcurrentExecutions: s.accountLimit,
                    UnreservedConcurrentExecutions: s.unreservedLimit),
                AccountUsage: .init(
                    TotalCodeSize: try catalog.functions.totalCodeSize(account: call.caller.account),
                    FunctionCount: try catalog.functions.count(account: call.caller.account))))
    }
}
