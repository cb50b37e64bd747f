import ArgumentParser
import Foundation
import PetrelClient

/// `petrel schedule create|list|delete`: functions invoked asynchronously on a
/// `rate(…)` or `cron(…)` schedule (UTC), with EventBridge's scheduled-event JSON.
struct Schedule: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Invoke a function on a schedule (rate(…) or cron(…), UTC).",
        subcommands: [Create.self, List.self, Delete.self])

    static let path = "/petrel/schedules"

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a schedule.")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "The schedule's name.") var name: String
        @Option(help: "The function to invoke.") var function: String
        @Option(help: "rate(5 minutes) or cron(0 12 * * ? *) (EventBridge's forms).") var expression: String
        @Option(help: "A constant JSON event instead of the scheduled-event document.") var input: String?
        @Option(help: "What it is for.") var description: String?

        func run() async throws {
            let client = try connection.client()
            var body: [String: Any] = ["Name": name, "FunctionName": function, "ScheduleExpression": expression]
            if let input { body["Input"] = input }
            if let description { body["Description"] = description }
            let out = try await reporting {
                try await client.send("POST", Schedule.path, body: Array(try JSONSerialization.data(withJSONObject: body))).json ?? [:]
            }
            print(
                "Schedule \(out["Name"] ?? name): \(out["ScheduleExpression"] ?? expression) -> \(out["FunctionArn"] ?? function); next at \(out["NextFire"] ?? "never")."
            )
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List schedules as a table.")
        @OptionGroup var connection: ConnectionOptions
        @Flag(help: "The API's JSON.") var json = false

        func run() async throws {
            let client = try connection.client()
            let out = try await reporting { try await client.send("GET", Schedule.path) }
            if json {
                print(String(decoding: out.body, as: UTF8.self))
                return
            }
            let list = out.json?["Schedules"] as? [[String: Any]] ?? []
            if list.isEmpty {
                print("no schedules yet; make one with `petrel schedule create NAME --function F --expression 'rate(5 minutes)'`")
                return
            }
            var rows = [["NAME", "EXPRESSION", "FUNCTION", "LAST FIRED", "NEXT"]]
            for s in list {
                let fn = ((s["FunctionArn"] as? String)?.split(separator: ":").dropFirst(6).joined(separator: ":")) ?? ""
                rows.append([
                    "\(s["Name"] ?? "")", "\(s["ScheduleExpression"] ?? "")", fn, "\(s["LastFired"] ?? "-")", "\(s["NextFire"] ?? "-")",
                ])
            }
            printRows(rows)
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a schedule (events it queued already still run).")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "The schedule's name.") var name: String

        func run() async throws {
            let client = try connection.client()
            _ = try await reporting { try await client.send("DELETE", Schedule.path + "/" + name) }
            print("Schedule \(name) deleted.")
        }
    }
}
