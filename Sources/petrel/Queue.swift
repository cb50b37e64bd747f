import ArgumentParser
import Foundation
import PetrelClient

/// `petrel queue create|send|receive|ls`: petreld's SQS queues, for a quick look or
/// a test message (the AWS CLI and SDKs speak the whole API).
struct Queue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make, fill, read and list SQS queues.",
        subcommands: [Create.self, Send.self, Receive.self, List.self])

    static func url(_ client: LambdaClient, _ name: String) async throws -> String {
        if name.hasPrefix("http://") || name.hasPrefix("https://") { return name }
        return try await client.sqs("GetQueueUrl", ["QueueName": name])["QueueUrl"] as? String ?? name
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a queue (a name ending in .fifo makes a FIFO queue).")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "The queue's name.") var name: String
        @Option(name: .customLong("attribute"), help: "An attribute as NAME=VALUE (VisibilityTimeout=60, RedrivePolicy=…); repeatable.")
        var attributes: [String] = []

        func run() async throws {
            let client = try connection.client()
            var attrs: [String: String] = name.hasSuffix(".fifo") ? ["FifoQueue": "true"] : [:]
            for a in attributes {
                let kv = a.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2 else { throw ValidationError("--attribute takes NAME=VALUE, not \(a)") }
                attrs[kv[0]] = kv[1]
            }
            let out = try await reporting { try await client.sqs("CreateQueue", ["QueueName": name, "Attributes": attrs]) }
            print("Queue \(name): \(out["QueueUrl"] ?? "").")
        }
    }

    struct Send: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send a message (the body, or - for standard input).")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "The queue's name or URL.") var queue: String
        @Argument(help: "The message body; - reads it from standard input.") var body: String
        @Option(help: "The message group (FIFO queues).") var group: String?
        @Option(help: "Seconds before it may be received (standard queues).") var delay: Int?

        func run() async throws {
            let client = try connection.client()
            let text = body == "-" ? String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) : body
            let out = try await reporting {
                let url = try await Queue.url(client, queue)
                var req: [String: Any] = ["QueueUrl": url, "MessageBody": text]
                if let group {
                    req["MessageGroupId"] = group
                    req["MessageDeduplicationId"] = UUID().uuidString
                }
                if let delay { req["DelaySeconds"] = delay }
                return try await client.sqs("SendMessage", req)
            }
            print("Sent \(out["MessageId"] ?? "").")
        }
    }

    struct Receive: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Receive messages and print them; they are deleted unless --keep.")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "The queue's name or URL.") var queue: String
        @Option(help: "At most this many (1–10).") var max = 10
        @Option(help: "Seconds to wait for the first message (0–20).") var wait = 0
        @Flag(help: "Leave the messages in the queue (they are visible again after the visibility timeout).") var keep = false
        @Flag(help: "The API's JSON.") var json = false

        func run() async throws {
            let client = try connection.client()
            let messages = try await reporting { () -> [[String: Any]] in
                let url = try await Queue.url(client, queue)
                let out = try await client.sqs(
                    "ReceiveMessage",
                    ["QueueUrl": url, "MaxNumberOfMessages": max, "WaitTimeSeconds": wait, "MessageSystemAttributeNames": ["All"]])
                let list = out["Messages"] as? [[String: Any]] ?? []
                if !keep, !list.isEmpty {
                    let entries = list.enumerated().map { ["Id": "\($0.offset)", "ReceiptHandle": $0.element["ReceiptHandle"] ?? ""] }
                    _ = try await client.sqs("DeleteMessageBatch", ["QueueUrl": url, "Entries": entries])
                }
                return list
            }
            if json {
                let data = try JSONSerialization.data(withJSONObject: ["Messages": messages], options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
                return
            }
            if messages.isEmpty {
                print("no messages")
                return
            }
            for m in messages {
                let attrs = m["Attributes"] as? [String: String] ?? [:]
                print("\(m["MessageId"] ?? "") (received \(attrs["ApproximateReceiveCount"] ?? "?") times): \(m["Body"] ?? "")")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List queues with their message counts.")
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let client = try connection.client()
            var rows = [["NAME", "MESSAGES", "IN FLIGHT", "DELAYED", "URL"]]
            try await reporting {
                let urls = try await client.sqs("ListQueues", [:])["QueueUrls"] as? [String] ?? []
                for url in urls {
                    let a =
                        try await client.sqs("GetQueueAttributes", ["QueueUrl": url, "AttributeNames": ["All"]])["Attributes"]
                        as? [String: String] ?? [:]
                    rows.append([
                        String(url.split(separator: "/").last ?? ""), a["ApproximateNumberOfMessages"] ?? "?",
                        a["ApproximateNumberOfMessagesNotVisible"] ?? "?", a["ApproximateNumberOfMessagesDelayed"] ?? "?", url,
                    ])
                }
            }
            if rows.count == 1 {
                print("no queues yet; make one with `petrel queue create NAME`")
                return
            }
            printRows(rows)
        }
    }
}
