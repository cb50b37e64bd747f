import ArgumentParser
import Foundation
import PetrelClient

struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a function's logs (every instance's, in order).")

    @Argument(help: "Function name.") var name: String
    @Option(help: "Only events newer than this: 30s, 10m, 2h, 1d (default: 10m).") var since = "10m"
    @Flag(help: "Keep printing new events until interrupted.") var follow = false
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        guard let n = Int(since.dropLast()), n >= 0, let unit = since.last,
            let seconds = ["s": 1, "m": 60, "h": 3600, "d": 86_400][String(unit)]
        else {
            throw ValidationError("--since takes a number and a unit (s, m, h, d), like 10m; not \(since)")
        }
        let client = try connection.client()
        let start = Int64((Date().timeIntervalSince1970 - Double(n * seconds)) * 1000)
        var token: String?
        try await reporting {
            repeat {
                var input: [String: Any] = ["logGroupName": "/aws/lambda/\(name)", "startTime": start]
                if let token { input["nextToken"] = token }
                let out: [String: Any]
                do {
                    out =
                        try await client.send(
                            "POST", "/",
                            headers: [
                                "X-Amz-Target": "Logs_20140328.FilterLogEvents",
                                "Content-Type": "application/x-amz-json-1.1",
                            ],
                            body: json(input), service: "logs"
                        ).json ?? [:]
                } catch let e as LambdaClient.APIError where e.code == "ResourceNotFoundException" {
                    if !follow {
                        stderr("\(name) has no logs yet (it has not run)\n")
                        return
                    }
                    try await Task.sleep(for: .seconds(1))
                    continue
                }
                let events = out["events"] as? [[String: Any]] ?? []
                for e in events {
                    let ts = Date(timeIntervalSince1970: Double(e["timestamp"] as? Int ?? 0) / 1000)
                    print("\(ISO8601DateFormatter().string(from: ts))  \(e["message"] as? String ?? "")")
                }
                if let last = events.last?["eventId"] as? String { token = "n/\(last)" }
                if out["nextToken"] == nil, follow { try await Task.sleep(for: .seconds(1)) }
                if !follow && out["nextToken"] == nil { break }
            } while true
        }
    }
}
