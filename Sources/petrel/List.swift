import ArgumentParser
import Foundation
import PetrelClient

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List functions as a table.")

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let client = try connection.client()
        var rows: [[String]] = [["NAME", "RUNTIME", "MEMORY", "TIMEOUT", "CODE", "LAST MODIFIED"]]
        try await reporting {
            var marker: String?
            repeat {
                var q = ["MaxItems": "50"]
                if let marker { q["Marker"] = marker }
                let out = try await client.send("GET", "/2015-03-31/functions/", query: q).json ?? [:]
                for f in out["Functions"] as? [[String: Any]] ?? [] {
                    rows.append([
                        "\(f["FunctionName"] ?? "")", "\(f["Runtime"] ?? "")", "\(f["MemorySize"] ?? "") MB",
                        "\(f["Timeout"] ?? "") s", "\((f["CodeSize"] as? Int ?? 0) / 1024) KiB", "\(f["LastModified"] ?? "")",
                    ])
                }
                marker = out["NextMarker"] as? String
            } while marker != nil
        }
        if rows.count == 1 {
            print("no functions yet; deploy one with `petrel deploy DIR --name N --runtime R --handler H`")
            return
        }
        printRows(rows)
    }
}
