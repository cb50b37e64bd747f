import Foundation
import Hummingbird
import PetrelCore
import PetrelRuntime
import PetrelSigV4
import PetrelStore

/// Schedules, a small REST resource of Petrel's own (signed like the Lambda API):
/// `POST /petrel/schedules`, `GET /petrel/schedules`, `GET|DELETE /petrel/schedules/{schedule}`.
extension LambdaAPI {
    static let schedulesPath = "/petrel/schedules"

    func registerSchedules(on router: Router<PetrelRequestContext>) {
        router.post(RouterPath(Self.schedulesPath)) { req, ctx in await handle(req, ctx, "CreateSchedule", self.createSchedule) }
        router.get(RouterPath(Self.schedulesPath)) { req, ctx in await handle(req, ctx, "ListSchedules", self.listSchedules) }
        router.get(RouterPath(Self.schedulesPath + "/{schedule}")) { req, ctx in await handle(req, ctx, "GetSchedule", self.getSchedule) }
        router.delete(RouterPath(Self.schedulesPath + "/{schedule}")) { req, ctx in
            await handle(req, ctx, "DeleteSchedule", self.deleteSchedule)
        }
    }

    struct ScheduleInput: Codable {
        var Name: String?
        var ScheduleExpression: String?
        var FunctionName: String?
        var Input: String?
        var Description: String?
    }

    struct ScheduleShape: Encodable {
        var Name: String
        var Arn: String
        var ScheduleExpression: String
        var FunctionArn: String
        var Input: String?
        var Description: String
        var State: String
        var CreationTime: String
        var LastFired: String?
        var NextFire: String?
    }

    func scheduleShape(_ s: ScheduleRecord) -> ScheduleShape {
        func iso(_ seconds: Int64) -> String { FunctionRecord.lambdaTimestamp(Date(timeIntervalSince1970: Double(seconds))) }
        let now = events.settings.clock.nowMillis() / 1000
        let next = s.parsed?.next(after: max(now, s.lastSlot ?? 0), anchor: s.created / 1000)
        return ScheduleShape(
            Name: s.name, Arn: "arn:aws:events:\(region):\(s.account):rule/\(s.name)", ScheduleExpression: s.expression,
            FunctionArn: FunctionARN(region: region, account: s.account, name: s.function, qualifier: s.qualifier).description,
            Input: s.input,
            Description: s.description, State: "ENABLED",
            CreationTime: FunctionRecord.lambdaTimestamp(Date(timeIntervalSince1970: Double(s.created) / 1000)),
            LastFired: s.lastSlot.map(iso), NextFire: next.map(iso))
    }

    func scheduleName(_ ctx: PetrelRequestContext) -> String {
        SigV4.percentDecoded(ctx.parameters.get("schedule") ?? "")
    }

    func createSchedule(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(ScheduleInput.self, call.body)
        guard let name = input.Name, ScheduleRecord.isValidName(name) else {
            throw LambdaError(.invalidParameterValue, "Name is required: 1 to 64 letters, digits, '-', '_' or '.'.")
        }
        guard let text = input.ScheduleExpression else { throw LambdaError(.invalidParameterValue, "ScheduleExpression is required.") }
        let expression = try ScheduleExpression(parsing: text)
        guard let fn = input.FunctionName else { throw LambdaError(.invalidParameterValue, "FunctionName is required.") }
        let ref = try FunctionReference(parsing: fn)
        let f = try catalog.resolve(ref, caller: call.caller)
        if let i = input.Input {
            guard i.utf8.count <= 8192, (try? JSONSerialization.jsonObject(with: Data(i.utf8), options: [.fragmentsAllowed])) != nil else {
                throw LambdaError(.invalidParameterValue, "Input must be valid JSON of at most 8192 bytes.")
            }
        }
        let description = input.Description ?? ""
        guard description.count <= 512 else { throw LambdaError(.invalidParameterValue, "Description has at most 512 characters.") }
        var record = ScheduleRecord(
            account: call.caller.account, name: name, function: f.name, expression: expression.description,
            input: input.Input, description: description, created: events.settings.clock.nowMillis())
        record.qualifier = ref.qualifier == FunctionRecord.latest ? nil : ref.qualifier
        guard try events.schedules.create(record) else {
            throw LambdaError(.resourceConflict, "A schedule named \(name) exists already in account \(call.caller.account).")
        }
        events.schedulesChanged()
        return APIResponse.json(scheduleShape(record), status: .created)
    }

    func listSchedules(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        APIResponse.json(["Schedules": try events.schedules.list(account: call.caller.account).map(scheduleShape)])
    }

    func ownSchedule(_ ctx: PetrelRequestContext, _ call: Call) throws -> ScheduleRecord {
        let name = scheduleName(ctx)
        guard let s = try events.schedules.get(account: call.caller.account, name: name) else {
            throw LambdaError(.resourceNotFound, "Schedule not found: arn:aws:events:\(region):\(call.caller.account):rule/\(name)")
        }
        return s
    }

    func getSchedule(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        APIResponse.json(scheduleShape(try ownSchedule(ctx, call)))
    }

    func deleteSchedule(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let s = try ownSchedule(ctx, call)
        _ = try events.schedules.delete(account: s.account, name: s.name)
        return Response(status: .noContent)
    }
}
