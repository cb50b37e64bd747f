import ArgumentParser
import Foundation
import PetrelClient

/// `petrel bucket notify|show`: which functions a bucket of the operator's object store
/// invokes on object events (S3's notification configuration, kept by Petrel).
struct Bucket: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Configure the functions a bucket's object events invoke.", subcommands: [Notify.self, Show.self])

    static func path(_ store: String, _ bucket: String) -> String { "/petrel/buckets/\(store)/\(bucket)/notification" }

    struct Notify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set a bucket's notification configuration (S3's JSON, or one function from the options).")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "The object store (as the operator named it in object_stores).") var store: String
        @Argument(help: "The bucket.") var bucket: String
        @Option(help: "S3's NotificationConfiguration as JSON, or @FILE (an empty configuration removes it).") var configuration: String?
        @Option(help: "The function to invoke.") var function: String?
        @Option(help: "Event types (repeatable; default s3:ObjectCreated:*).") var event: [String] = []
        @Option(help: "Only keys with this prefix.") var prefix: String?
        @Option(help: "Only keys with this suffix.") var suffix: String?

        func run() async throws {
            let client = try connection.client()
            var body: Data
            if let configuration {
                body =
                    configuration.hasPrefix("@")
                    ? try Data(contentsOf: URL(fileURLWithPath: String(configuration.dropFirst()))) : Data(configuration.utf8)
            } else {
                guard let function else { throw ValidationError("give --function, or --configuration") }
                var c: [String: Any] = ["LambdaFunctionArn": function, "Events": event.isEmpty ? ["s3:ObjectCreated:*"] : event]
                let rules = [("Prefix", prefix), ("Suffix", suffix)].compactMap { n, v in v.map { ["Name": n, "Value": $0] } }
                if !rules.isEmpty { c["Filter"] = ["Key": ["FilterRules": rules]] }
                body = try JSONSerialization.data(withJSONObject: ["LambdaFunctionConfigurations": [c]])
            }
            let out = try await reporting { try await client.send("PUT", Bucket.path(store, bucket), body: Array(body)) }
            print(String(decoding: out.body, as: UTF8.self))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a bucket's notification configuration.")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "The object store.") var store: String
        @Argument(help: "The bucket.") var bucket: String

        func run() async throws {
            let client = try connection.client()
            let out = try await reporting { try await client.send("GET", Bucket.path(store, bucket)) }
            print(String(decoding: out.body, as: UTF8.self))
        }
    }
}
