import ArgumentParser
import Foundation
import PetrelStore

struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Read the audit trail: every API call, let in or refused.")

    @OptionGroup var store: StoreOptions
    @Option(help: "Only calls since then: 30m, 2h, 7d, an ISO-8601 time or milliseconds since the epoch.") var since: String?
    @Option(help: "Only calls of this account.") var account: String?
    @Option(help: "Only this action (CreateFunction, Invoke, GetLogEvents, ...).") var action: String?
    @Option(help: "At most this many records (the oldest first).") var limit: Int?
    @Flag(help: "One JSON object per line.") var json = false

    static func parseSince(_ s: String, now: Date = Date()) throws -> Int64 {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3_600, "d": 86_400]
        if let unit = s.last, let mult = units[unit], let n = Double(s.dropLast()), n >= 0 {
            return Int64((now.timeIntervalSince1970 - n * mult) * 1000)
        }
        if let ms = Int64(s) { return ms }
        let f = ISO8601DateFormatter()
        for opts: ISO8601DateFormatter.Options in [
            [.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime], [.withFullDate],
        ] {
            f.formatOptions = opts
            if let d = f.date(from: s) { return Int64(d.timeIntervalSince1970 * 1000) }
        }
        throw ValidationError("--since \(s): give a duration (30m, 2h, 7d), an ISO-8601 time or milliseconds since the epoch")
    }

    func run() throws {
        let from = try since.map { try Self.parseSince($0) }
        do {
            let records = try store.open().auditRecords(since: from, account: account, action: action, limit: limit ?? Int.max)
            if json {
                for r in records {
                    var o: [String: Any] = [
                        "seq": r.seq ?? 0, "time": iso(Date(timeIntervalSince1970: Double(r.time) / 1000)),
                        "source": r.source, "action": r.action, "status": r.status,
                        "parameters": (try? JSONSerialization.jsonObject(with: Data(r.parameters.utf8))) ?? r.parameters,
                    ]
                    if let a = r.account { o["account"] = a }
                    if let k = r.accessKey { o["accessKey"] = k }
                    if let p = r.principal { o["principal"] = p }
                    if let res = r.resource { o["resource"] = res }
                    if let e = r.errorCode { o["error"] = e }
                    printJSON(o)
                }
            } else {
                printTable(
                    ["TIME", "ACCOUNT", "ACCESS KEY", "SOURCE", "ACTION", "RESOURCE", "STATUS", "ERROR"],
                    records.map { r -> [String] in
                        let key: String = r.accessKey ?? "-"
                        let signer: String = r.principal.map { key + " (" + $0 + ")" } ?? key
                        let time: String = iso(Date(timeIntervalSince1970: Double(r.time) / 1000))
                        return [time, r.account ?? "-", signer, r.source, r.action, r.resource ?? "", String(r.status), r.errorCode ?? ""]
                    })
            }
        } catch { throw operatorFailure(error) }
    }
}

extension LocalStore {
    func auditRecords(since: Int64?, account: String?, action: String?, limit: Int) throws -> [AuditStore.Record] {
        try AuditStore(db).records(since: since, account: account, action: action, limit: limit)
    }
}
