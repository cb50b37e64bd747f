import ArgumentParser
import Foundation
import PetrelClient

struct Invoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Invoke a function; print its result (stdout) and its REPORT line (stderr).")

    @Argument(help: "Function name or ARN.") var name: String
    @Option(help: "The event: JSON text, or @FILE to read it from a file.") var payload = "{}"
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let client = try connection.client()
        var body = Array(payload.utf8)
        if payload.hasPrefix("@") {
            guard let d = FileManager.default.contents(atPath: String(payload.dropFirst())) else {
                throw ValidationError("cannot read \(payload.dropFirst())")
            }
            body = Array(d)
        }
        let r = try await reporting {
            try await client.send(
                "POST", "/2015-03-31/functions/\(name)/invocations",
                headers: ["X-Amz-Log-Type": "Tail", "Content-Type": "application/json"], body: body)
        }
        let tail = r.headers["x-amz-log-result"].flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) } ?? ""
        for line in tail.split(separator: "\n") where line.hasPrefix("REPORT ") {
            stderr(line.replacingOccurrences(of: "\t", with: "  ") + "\n")
        }
        if r.headers["x-amz-function-error"] != nil {
            let doc = r.json ?? [:]
            stderr(
                "function error: \(doc["errorType"] ?? "Unhandled"): \(doc["errorMessage"] ?? String(decoding: r.body, as: UTF8.self))\n")
            throw ExitCode(1)
        }
        print(String(decoding: r.body, as: UTF8.self))
    }
}
