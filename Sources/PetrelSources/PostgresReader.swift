import CPetrelPQ
import Dispatch
import Foundation
import Logging
import PetrelCore
import Synchronization

/// Where a PostgreSQL mapping reads: a server the operator configured, a database, a table
/// (or all), with a user from a secret; the replication slot is the mapping's own.
struct PostgresSettings: Sendable {
    var host: String
    var port: Int
    var database: String
    var user: String
    var password: String
    var table: String?
    var slot: String
    var arn: String

    /// libpq's connection string, each value quoted.
    func conninfo(replication: Bool) -> String {
        func q(_ v: String) -> String {
            "'" + v.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
        }
        var s = "host=\(q(host)) port=\(port) dbname=\(q(database)) user=\(q(user)) password=\(q(password))"
        s += " connect_timeout=5 application_name='petrel'"
        if replication { s += " replication=database" }
        return s
    }
}

extension MappingService {
    /// The server, database, table and credentials a PostgreSQL mapping reads with; throws a
    /// sentence for the mapping's state when one is missing.
    func postgresSettings(_ m: EventSourceMapping) throws -> PostgresSettings {
        guard let name = PostgresServers.name(m.sourceArn), let server = databases.brokers[name] else {
            throw DomainError(
                .invalidParameter, "The database server \(m.sourceArn) is not one the operator configured (postgres_servers).")
        }
        guard let database = m.stream?.database else { throw DomainError(.invalidParameter, "DatabaseName is required.") }
        guard let secretARN = (m.sourceAccess ?? []).first(where: { $0.type == "BASIC_AUTH" })?.uri else {
            throw DomainError(
                .invalidParameter, "A PostgreSQL mapping needs SourceAccessConfigurations of type BASIC_AUTH (a secret's ARN).")
        }
        let (user, password) = try credentials(m, secretARN)
        return PostgresSettings(
            host: server.host, port: server.port, database: database, user: user, password: password, table: m.stream?.table,
            slot: PostgresServers.slot(m.uuid), arn: m.sourceArn)
    }

    /// A deleted PostgreSQL mapping: once its reader stopped, its slot is dropped (so the
    /// server stops keeping WAL for it), then the mapping is gone.
    func retire(_ m: EventSourceMapping) async {
        defer { retiring.withLock { _ = $0.remove(m.uuid) } }
        for attempt in 0..<20 {
            do {
                try await PostgresReader.dropSlot(try postgresSettings(m))
                break
            } catch {
                if attempt == 19 {
                    logger.warning(
                        "a deleted PostgreSQL mapping's replication slot could not be dropped: drop it by hand",
                        metadata: ["mapping": "\(m.uuid)", "slot": "\(PostgresServers.slot(m.uuid))", "error": "\(error)"])
                }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        try? store.delete(m.uuid)
    }
}

/// The operator's PostgreSQL servers, named by cluster ARNs (`arn:aws:rds:REGION:ACCOUNT:cluster:NAME`).
public enum PostgresServers {
    public static func name(_ arn: String) -> String? {
        let p = arn.split(separator: ":", omittingEmptySubsequences: false)
        guard p.count == 7, p[0] == "arn", p[2] == "rds", p[5] == "cluster", !p[6].isEmpty else { return nil }
        return String(p[6])
    }

    /// The mapping's replication slot.
    public static func slot(_ uuid: String) -> String { "petrel_" + uuid.lowercased().filter { $0.isHexDigit } }
}

/// A PostgreSQL change stream over logical replication (the wal2json plugin, format 2):
/// every committed change of the table, in commit order, as one partition. The slot's
/// confirmed position moves only past transactions whose every record is done; the
/// records of a transaction already done are counted in Petrel's checkpoint, and skipped
/// when the transaction comes again after a restart.
final class PostgresReader: StreamReader, @unchecked Sendable {
    // Touched only on `queue`.
    private var conn: OpaquePointer?
    private var txn: Txn?
    private var skip: (end: UInt64, done: Int)?
    private var lastStatus = ContinuousClock.now
    private var sentFlush: UInt64 = 0

    private let queue = DispatchQueue(label: "petrel.postgres")
    let settings: PostgresSettings
    let uuid: String
    let region: String
    let checkpoints: MappingStore
    let partitionName: String

    private struct Shared {
        var flush: UInt64 = 0
        var handed: UInt64 = 0
        var handedIndex = 0
        var committed: UInt64 = 0
        var committedIndex = 0
        /// The end of the last transaction with no records for us (other tables, DDL).
        var idle: UInt64 = 0
        var paused = false
        var problem: String?
    }
    private let shared = Mutex(Shared())
    /// Whether Petrel's checkpoint holds a transaction's partial progress.
    private let partial = Mutex(true)

    private struct Txn {
        var xid: Int
        var end: UInt64
        var time: Int64
        var index = 0
        var records: [StreamRecord] = []
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    private init(_ settings: PostgresSettings, uuid: String, region: String, checkpoints: MappingStore) {
        self.settings = settings
        self.uuid = uuid
        self.region = region
        self.checkpoints = checkpoints
        partitionName = settings.table ?? settings.database
    }

    private func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in queue.async { c.resume(with: Result { try body() }) } }
    }

    static func open(_ m: EventSourceMapping, settings: PostgresSettings, checkpoints: MappingStore, region: String) async throws
        -> PostgresReader
    {
        let r = PostgresReader(settings, uuid: m.uuid, region: region, checkpoints: checkpoints)
        if let cp = try checkpoints.checkpoint(m.uuid, partition: r.partitionName) {
            let p = cp.split(separator: "/")
            if p.count == 2, let end = UInt64(p[0]), let done = Int(p[1]) { r.skip = (end, done) }
        }
        do {
            try await r.run { try r.start() }
        } catch {
            await r.close()
            throw error
        }
        return r
    }

    /// Connects, checks the table, makes the slot when it is new, and starts streaming from it.
    private func start() throws {
        let c = PQconnectdb(settings.conninfo(replication: true))
        conn = c
        guard PQstatus(c) == CONNECTION_OK else { throw Failure(description: "Connection error. \(Self.message(c))") }
        if let table = settings.table {
            let rows = try query("SELECT to_regclass(\(literal(table))) IS NOT NULL")
            guard rows.first?.first == "t" else {
                throw Failure(description: "The table \(table) does not exist in the database \(settings.database).")
            }
        }
        let exists = try query("SELECT 1 FROM pg_replication_slots WHERE slot_name = \(literal(settings.slot))")
        if exists.isEmpty {
            _ = try query("CREATE_REPLICATION_SLOT \(settings.slot) LOGICAL wal2json")
        }
        var options = [
            ("format-version", "2"), ("include-timestamp", "1"), ("include-lsn", "1"), ("include-pk", "1"),
            ("include-transaction", "1"), ("include-xids", "1"),
        ]
        if let table = settings.table { options.append(("add-tables", table.contains(".") ? table : "public." + table)) }
        let list = options.map { "\"\($0.0)\" \(literal($0.1))" }.joined(separator: ", ")
        let res = PQexec(conn, "START_REPLICATION SLOT \(settings.slot) LOGICAL 0/0 (\(list))")
        defer { PQclear(res) }
        guard PQresultStatus(res) == PGRES_COPY_BOTH else { throw Failure(description: Self.message(conn)) }
    }

    private func literal(_ s: String) -> String {
        guard let p = PQescapeLiteral(conn, s, s.utf8.count) else { return "''" }
        defer { PQfreemem(p) }
        return String(cString: p)
    }

    private func query(_ sql: String) throws -> [[String]] {
        let res = PQexec(conn, sql)
        defer { PQclear(res) }
        let status = PQresultStatus(res)
        guard status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK else { throw Failure(description: Self.message(conn)) }
        var rows: [[String]] = []
        for i in 0..<PQntuples(res) {
            rows.append((0..<PQnfields(res)).map { String(cString: PQgetvalue(res, i, $0)) })
        }
        return rows
    }

    static func message(_ c: OpaquePointer?) -> String {
        guard let p = PQerrorMessage(c) else { return "unknown error" }
        return String(cString: p).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Drops a mapping's slot (nothing when it is gone already).
    static func dropSlot(_ s: PostgresSettings) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            DispatchQueue.global().async {
                let conn = PQconnectdb(s.conninfo(replication: false))
                defer { PQfinish(conn) }
                guard PQstatus(conn) == CONNECTION_OK else { return c.resume(throwing: Failure(description: message(conn))) }
                let res = PQexec(
                    conn, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '\(s.slot)'")
                defer { PQclear(res) }
                guard PQresultStatus(res) == PGRES_TUPLES_OK else { return c.resume(throwing: Failure(description: message(conn))) }
                c.resume()
            }
        }
    }

    var problem: String? { shared.withLock { $0.problem } }

    func poll(waitMillis: Int) async throws -> [StreamRecord] {
        try await run { try self.read(waitMillis: waitMillis) }
    }

    private func read(waitMillis: Int) throws -> [StreamRecord] {
        try sendStatus(force: false)
        if shared.withLock({ $0.paused }) {
            Thread.sleep(forTimeInterval: Double(waitMillis) / 1000)
            return []
        }
        var out: [StreamRecord] = []
        var fds = pollfd(fd: PQsocket(conn), events: Int16(POLLIN), revents: 0)
        _ = Glibc.poll(&fds, 1, Int32(waitMillis))
        guard PQconsumeInput(conn) == 1 else { throw Failure(description: "Connection error. \(Self.message(conn))") }
        while out.count < 10_000 {
            var buf: UnsafeMutablePointer<CChar>?
            let n = PQgetCopyData(conn, &buf, 1)
            if n == 0 { break }
            if n < 0 {
                throw Failure(description: "Connection error. The server ended the stream: \(Self.message(conn))")
            }
            defer { PQfreemem(buf) }
            guard let buf else { continue }
            let bytes = UnsafeRawBufferPointer(start: buf, count: Int(n))
            switch bytes[0] {
            case UInt8(ascii: "w") where n > 25:
                try take(Data(bytes[25...]), into: &out)
            case UInt8(ascii: "k") where n >= 18:
                if bytes[17] != 0 { try sendStatus(force: true) }
            default: break
            }
        }
        return out
    }

    /// One change of wal2json's format 2 (a transaction's begin, a row's change, its commit).
    private func take(_ data: Data, into out: inout [StreamRecord]) throws {
        guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any], let action = o["action"] as? String else {
            return
        }
        switch action {
        case "B":
            txn = Txn(
                xid: o["xid"] as? Int ?? 0, end: Self.lsn(o["nextlsn"] as? String) ?? 0,
                time: Self.timestamp(o["timestamp"] as? String) ?? Int64(Date().timeIntervalSince1970 * 1000))
        case "C":
            guard var t = txn.take() else { return }
            if t.records.isEmpty {
                shared.withLock { s in
                    s.idle = max(s.idle, t.end)
                    if s.committed == s.handed, s.committedIndex == s.handedIndex { s.flush = max(s.flush, s.idle) }
                }
                return
            }
            t.records[t.records.count - 1].closes = true
            let last = t.records[t.records.count - 1]
            shared.withLock { s in
                s.handed = last.position
                s.handedIndex = last.index
            }
            out += t.records
        case "I", "U", "D":
            // (In place: a copy of the transaction would copy its records at every change.)
            guard let index = txn?.index, let end = txn?.end, let time = txn?.time, let xid = txn?.xid else { return }
            txn?.index += 1
            if let skip, skip.end == end, index < skip.done { return }
            txn?.records.append(record(o, action: action, xid: xid, end: end, time: time, index: index, size: data.count))
        default:
            return
        }
    }

    /// The record of one change, modelled on DynamoDB Streams' (`eventName`, keys, the new
    /// and old rows), with the commit's LSN and time.
    private func record(_ o: [String: Any], action: String, xid: Int, end: UInt64, time: Int64, index: Int, size: Int) -> StreamRecord {
        func columns(_ key: String) -> [String: Any]? {
            guard let list = o[key] as? [[String: Any]] else { return nil }
            var out: [String: Any] = [:]
            for c in list { if let name = c["name"] as? String { out[name] = c["value"] ?? NSNull() } }
            return out
        }
        let new = columns("columns")
        let old = columns("identity")
        var keys: [String: Any] = [:]
        for k in (o["pk"] as? [[String: Any]] ?? []).compactMap({ $0["name"] as? String }) {
            keys[k] = new?[k] ?? old?[k] ?? NSNull()
        }
        if keys.isEmpty, let old { keys = old }
        let sequence = String(format: "%020llu%08d", end, index)
        var change: [String: Any] = [
            "ApproximateCreationDateTime": Double(time) / 1000, "Keys": keys, "SequenceNumber": sequence, "SizeBytes": size,
            "StreamViewType": "NEW_AND_OLD_IMAGES", "Database": settings.database, "Schema": o["schema"] as? String ?? "",
            "Table": o["table"] as? String ?? "", "LSN": o["lsn"] as? String ?? "", "CommitLSN": Self.lsnText(end),
            "TransactionId": xid,
        ]
        if let new { change["NewImage"] = new }
        if let old { change["OldImage"] = old }
        let r: [String: Any] = [
            "eventID": sequence, "eventName": ["I": "INSERT", "U": "MODIFY", "D": "REMOVE"][action] ?? action, "eventVersion": "1.0",
            "eventSource": "petrel:postgres", "awsRegion": region, "eventSourceARN": settings.arn, "postgres": change,
        ]
        return StreamRecord(
            partition: partitionName, identifier: sequence, time: time, record: r, payload: Data(), field: "", size: size + 400,
            position: end, index: index, closes: false)
    }

    func commit(_ record: StreamRecord) async throws {
        // Petrel's checkpoint first: a slot never stands beyond what Petrel knows is done. (A
        // batch that ends with its transaction needs none: the slot itself says it.)
        if !record.closes || partial.withLock({ $0 }) {
            try checkpoints.setCheckpoint(uuid, partition: partitionName, record.closes ? nil : "\(record.position)/\(record.index + 1)")
            partial.withLock { $0 = !record.closes }
        }
        shared.withLock { s in
            s.committed = record.position
            s.committedIndex = record.index
            if record.closes { s.flush = max(s.flush, record.position) }
            if s.committed == s.handed, s.committedIndex == s.handedIndex { s.flush = max(s.flush, s.idle) }
        }
    }

    /// Tells the server how far the slot may go (and that Petrel is alive), when that moved
    /// or every 10 seconds.
    private func sendStatus(force: Bool) throws {
        guard conn != nil else { return }
        let flush = shared.withLock { $0.flush }
        guard force || flush > sentFlush || ContinuousClock.now - lastStatus > .seconds(10) else { return }
        var msg = [UInt8(ascii: "r")]
        func be(_ v: UInt64) { for i in (0..<8).reversed() { msg.append(UInt8((v >> (UInt64(i) * 8)) & 0xff)) } }
        be(flush)
        be(flush)
        be(flush)
        // Microseconds since 2000-01-01.
        be(UInt64(max(0, (Date().timeIntervalSince1970 - 946_684_800) * 1_000_000)))
        msg.append(0)
        let ok = msg.withUnsafeBufferPointer { p in
            p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: msg.count) { PQputCopyData(conn, $0, Int32(msg.count)) }
        }
        guard ok == 1, PQflush(conn) == 0 else { throw Failure(description: "Connection error. \(Self.message(conn))") }
        sentFlush = flush
        lastStatus = .now
    }

    func pause(_ partition: String, _ paused: Bool) async { shared.withLock { $0.paused = paused } }

    func lag(_ partition: String) -> Int64? { nil }

    func event(_ partition: String, _ records: [StreamRecord]) -> [String: Any] { ["Records": records.map(\.record)] }

    func batchInfo(_ partition: String, _ records: [StreamRecord]) -> (key: String, value: [String: Any]) {
        var info: [String: Any] = [
            "eventSourceArn": settings.arn, "database": settings.database, "batchSize": records.count,
            "startSequenceNumber": records.first?.identifier ?? "", "endSequenceNumber": records.last?.identifier ?? "",
            "approximateArrivalOfFirstRecord": PlatformClock.iso8601(millis: records.first?.time ?? 0),
            "approximateArrivalOfLastRecord": PlatformClock.iso8601(millis: records.last?.time ?? 0),
        ]
        if let t = settings.table { info["table"] = t }
        return ("PostgresBatchInfo", info)
    }

    func close() async {
        _ = try? await run {
            if self.conn != nil, PQstatus(self.conn) == CONNECTION_OK { try? self.sendStatus(force: true) }
            PQfinish(self.conn)
            self.conn = nil
        }
    }

    /// `X/Y` in hexadecimal: a WAL position.
    static func lsn(_ s: String?) -> UInt64? {
        guard let p = s?.split(separator: "/"), p.count == 2, let hi = UInt64(p[0], radix: 16), let lo = UInt64(p[1], radix: 16) else {
            return nil
        }
        return hi << 32 | lo
    }

    static func lsnText(_ v: UInt64) -> String {
        String(v >> 32, radix: 16, uppercase: true) + "/" + String(v & 0xffff_ffff, radix: 16, uppercase: true)
    }

    /// PostgreSQL's `2026-12-07 13:58:09.170359+00` (an offset of hours, or hours and minutes).
    static func timestamp(_ s: String?) -> Int64? {
        guard let s, s.count >= 19 else { return nil }
        let chars = Array(s)
        func num(_ r: Range<Int>) -> Int? { Int(String(chars[r])) }
        guard let y = num(0..<4), let mo = num(5..<7), let d = num(8..<10), let h = num(11..<13), let mi = num(14..<16),
            let se = num(17..<19)
        else { return nil }
        var i = 19
        var micros = 0
        if i < chars.count, chars[i] == "." {
            i += 1
            var digits = ""
            while i < chars.count, chars[i].isNumber {
                digits.append(chars[i])
                i += 1
            }
            micros = Int((digits + "000000").prefix(6)) ?? 0
        }
        var offset = 0
        if i < chars.count, chars[i] == "+" || chars[i] == "-" {
            let sign = chars[i] == "-" ? -1 : 1
            let rest = String(chars[(i + 1)...]).replacingOccurrences(of: ":", with: "")
            let hh = Int(rest.prefix(2)) ?? 0
            let mm = rest.count >= 4 ? Int(rest.dropFirst(2).prefix(2)) ?? 0 : 0
            offset = sign * (hh * 3600 + mm * 60)
        }
        var t = tm()
        t.tm_year = Int32(y - 1900)
        t.tm_mon = Int32(mo - 1)
        t.tm_mday = Int32(d)
        t.tm_hour = Int32(h)
        t.tm_min = Int32(mi)
        t.tm_sec = Int32(se)
        let seconds = Int64(timegm(&t)) - Int64(offset)
        return seconds * 1000 + Int64(micros / 1000)
    }
}
