import ArgumentParser
import Foundation
import PetrelCore
import PetrelStore

/// The built-in dead-letter queue (an event-invoke config's destination
/// `arn:aws:sqs:::petrel-dlq`, each account's SQS queue `petrel-dlq`): read a
/// function's letters in it, and send their events to the function again.
struct DLQCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "Read a function's dead-letter queue and redrive its events.",
        subcommands: [List.self, Show.self, Redrive.self])

    struct Target: ParsableArguments {
        @OptionGroup var store: StoreOptions
        @Option(help: "The function's account (default: the admin account).") var account: String?
        @Argument(help: "The function's name.") var function: String

        /// The queue, and the account whose function is meant.
        func open() throws -> (EventStore, String) {
            let s = try store.open()
            let events = EventStore(s.db, keys: s.keys)
            // A data directory of an earlier version: its dead letters move into the queue first.
            try events.migrateDeadLetters(now: PlatformClock().nowMillis())
            return (events, account ?? s.configuration.accountID)
        }
    }

    static func attempts(_ record: Data) -> String {
        let o = (try? JSONSerialization.jsonObject(with: record)) as? [String: Any]
        return "\((o?["requestContext"] as? [String: Any])?["approximateInvokeCount"] ?? "")"
    }

    static func time(_ ms: Int64) -> String { iso(Date(timeIntervalSince1970: Double(ms) / 1000)) }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a function's dead letters, oldest first.")
        @OptionGroup var target: Target
        @Flag(help: "One JSON object per line, with the invocation record.") var json = false

        func run() throws {
            do {
                let (events, account) = try target.open()
                let letters = try events.deadLetters(account: account, function: target.function, limit: Int.max)
                if json {
                    for l in letters {
                        printJSON([
                            "id": l.id, "requestId": l.requestID, "condition": l.condition, "time": DLQCommand.time(l.created),
                            "record": (try? JSONSerialization.jsonObject(with: l.record)) ?? [:],
                        ])
                    }
                } else if letters.isEmpty {
                    print("The dead-letter queue of \(target.function) (account \(account)) is empty.")
                } else {
                    printTable(
                        ["ID", "REQUEST ID", "CONDITION", "ATTEMPTS", "TIME"],
                        letters.map {
                            ["\($0.id)", $0.requestID, $0.condition, DLQCommand.attempts($0.record), DLQCommand.time($0.created)]
                        })
                }
            } catch { throw operatorFailure(error) }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print one dead letter's invocation record (JSON).")
        @OptionGroup var target: Target
        @Argument(help: "The record's id (from dlq list).") var id: Int64

        func run() throws {
            do {
                let (events, account) = try target.open()
                guard let l = try events.deadLetter(account: account, id: id), l.function == target.function else {
                    throw StoreError("the dead-letter queue of \(target.function) has no record \(id)")
                }
                let o = (try? JSONSerialization.jsonObject(with: l.record)) ?? [:]
                let data = try JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
            } catch { throw operatorFailure(error) }
        }
    }

    struct Redrive: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Queue the original events again (under new request ids) and remove them from the dead-letter queue; a running daemon picks them up within a second."
        )
        @OptionGroup var target: Target
        @Argument(help: "Record ids (default: every record of the function).") var ids: [Int64] = []

        func run() throws {
            do {
                let (events, account) = try target.open()
                let now = PlatformClock().nowMillis()
                let queued = try events.redrive(account: account, function: target.function, ids: ids.isEmpty ? nil : ids, now: now)
                for e in queued { print(e.id) }
                FileHandle.standardError.write(Data("Redrove \(queued.count) event(s) to \(target.function).\n".utf8))
            } catch { throw operatorFailure(error) }
        }
    }
}
