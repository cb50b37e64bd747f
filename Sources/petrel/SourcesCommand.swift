import ArgumentParser
import Foundation
import PetrelClient

/// `petrel sources ls|show`: the account's event source mappings at a glance.
struct SourcesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sources", abstract: "List event source mappings and what their last batches came to.",
        subcommands: [List.self, Show.self])

    static let path = "/2015-03-31/event-source-mappings"

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List event source mappings as a table.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "Only this function's.") var function: String?

        func run() async throws {
            let client = try connection.client()
            var rows = [["UUID", "SOURCE", "FUNCTION", "STATE", "BATCH", "LAG", "LAST RESULT"]]
            try await reporting {
                var marker: String?
                repeat {
                    var q = ["MaxItems": "100"]
                    if let marker { q["Marker"] = marker }
                    if let function { q["FunctionName"] = function }
                    let out = try await client.send("GET", SourcesCommand.path, query: q).json ?? [:]
                    for m in out["EventSourceMappings"] as? [[String: Any]] ?? [] {
                        var source = (m["EventSourceArn"] as? String).map { String($0.split(separator: ":").last ?? "") } ?? ""
                        if let queues = m["Queues"] as? [String] { source += "/" + queues.joined(separator: ",") }
                        if let topics = m["Topics"] as? [String] { source = "kafka/" + topics.joined(separator: ",") }
                        if let db = m["DocumentDBEventSourceConfig"] as? [String: Any] {
                            source += "/" + ((db["CollectionName"] ?? db["DatabaseName"]) as? String ?? "")
                        }
                        // Streams: the partition furthest behind (Petrel's own field).
                        let lags = (m["PetrelPartitions"] as? [[String: Any]] ?? []).compactMap { $0["LagSeconds"] as? Double }
                        let lag = lags.max().map { String(format: "%.1fs", $0) } ?? "-"
                        rows.append([
                            "\(m["UUID"] ?? "")", source,
                            (m["FunctionArn"] as? String).map { String($0.split(separator: ":").dropFirst(6).joined(separator: ":")) }
                                ?? "",
                            "\(m["State"] ?? "")", "\(m["BatchSize"] ?? "")", lag, "\(m["LastProcessingResult"] ?? "")",
                        ])
                    }
                    marker = out["NextMarker"] as? String
                } while marker != nil
            }
            if rows.count == 1 {
                print("no event source mappings yet; make one with `aws lambda create-event-source-mapping`")
                return
            }
            printRows(rows)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print one mapping (the API's JSON).")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "The mapping's UUID.") var uuid: String

        func run() async throws {
            let client = try connection.client()
            let out = try await reporting { try await client.send("GET", SourcesCommand.path + "/" + uuid) }
            let o = (try? JSONSerialization.jsonObject(with: Data(out.body))) ?? [:]
            let data = try JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
        }
    }
}
