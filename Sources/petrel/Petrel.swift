import ArgumentParser
import Foundation
import PetrelClient
import PetrelCore
import Synchronization

@main
struct Petrel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "petrel",
        abstract: "Deploy, invoke and watch functions on a Petrel daemon (it speaks the AWS Lambda API).",
        version: "petrel \(PetrelVersion.version)",
        subcommands: [
            Deploy.self, Invoke.self, Logs.self, List.self, Load.self, Schedule.self, Queue.self, SourcesCommand.self, Bucket.self,
            Init.self,
        ]
    )
}

/// Options every command shares: where the daemon is and how to sign.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "The daemon's API (default: $PETREL_ENDPOINT, else http://127.0.0.1:9000).")
    var endpoint: String?

    @Option(help: "Region to sign for (default: $AWS_REGION, else us-east-1).")
    var region: String?

    @Option(help: "Credentials profile of the shared credentials file (default: the environment, then `default`).")
    var profile: String?

    func client() throws -> LambdaClient {
        let env = ProcessInfo.processInfo.environment
        let raw = endpoint ?? env["PETREL_ENDPOINT"] ?? "http://127.0.0.1:9000"
        guard let url = URL(string: raw), url.scheme == "http" || url.scheme == "https", url.host != nil else {
            throw ValidationError("--endpoint must be a URL like http://127.0.0.1:9000, not \(raw)")
        }
        // The AWS tools' places first; on the daemon's own host, its admin credentials as a last resort.
        guard
            let creds = Credentials.find(profile: profile)
                ?? Credentials.find(profile: "default", file: "/var/lib/petrel/admin-credentials")
        else {
            throw ValidationError(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_SHARED_CREDENTIALS_FILE=<data-dir>/admin-credentials (petreld writes it at first start; petreld keys create makes more)"
            )
        }
        let client = LambdaClient(
            endpoint: url, credentials: creds,
            region: region ?? env["AWS_REGION"] ?? env["AWS_DEFAULT_REGION"] ?? "us-east-1")
        checkedOnce.client.withLock { $0 = client }
        return client
    }
}

/// Prints an API failure as a sentence and exits 1 (no stack traces).
func reporting<T>(_ body: () async throws -> T) async throws -> T {
    do {
        try checkedOnce.check()
        return try await body()
    } catch let e as LambdaClient.APIError {
        FileHandle.standardError.write(Data("petrel: \(e.description)\n".utf8))
        throw ExitCode(1)
    }
}

func stderr(_ s: String) { FileHandle.standardError.write(Data(s.utf8)) }

/// Prints rows (the first is the header) as columns.
func printRows(_ rows: [[String]]) {
    let widths = rows[0].indices.map { i in rows.map { $0[i].count }.max()! }
    for r in rows {
        print(r.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  "))
    }
}

/// The reachability check runs once per command, before its first request.
final class ReachabilityCheck: Sendable {
    let client = Mutex<LambdaClient?>(nil)
    let done = Mutex(false)
    func check() throws {
        guard !done.withLock({ $0 }), let c = client.withLock({ $0 }) else { return }
        try c.checkReachable()
        done.withLock { $0 = true }
    }
}
let checkedOnce = ReachabilityCheck()
