import AsyncHTTPClient
import Foundation
import GRDB
import Logging
import Metrics
import NIOCore
import PetrelCore
import PetrelStore
import ServiceLifecycle
import Synchronization

/// A notification waiting for an HTTP(S) subscriber.
public struct OutboxEntry: Sendable, Equatable {
    public var id: Int64
    public var account: String
    public var subscription: String
    /// `SubscriptionConfirmation` or `Notification`.
    public var messageType: String
    public var messageID: String
    public var body: Data
    public var attempts: Int
    public var due: Int64
    public var created: Int64
}

/// The HTTP(S) subscribers' outbox in SQLite: entries are stored (fsynced, with the
/// publish) before the publish is answered, and leave once the endpoint took them or
/// they ran out of attempts.
public struct OutboxStore: Sendable {
    let db: PetrelDatabase
    let keys: KeyRing
    let commits: GroupCommit

    public init(_ db: PetrelDatabase, keys: KeyRing, commits: GroupCommit) {
        self.db = db
        self.keys = keys
        self.commits = commits
    }

    static func context(_ account: String, _ messageID: String, _ subscription: String) -> String {
        "sns-outbox:\(account):\(messageID):\(subscription)"
    }

    public func add(account: String, subscription: String, messageType: String, messageID: String, body: Data, now: Int64) async throws {
        let sealed = try keys.seal(body, context: Self.context(account, messageID, subscription))
        try await commits.write { db in
            try db.execute(
                sql: """
                    INSERT INTO sns_outbox (account, subscription, message_type, message_id, body, due, created)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [account, subscription, messageType, messageID, sealed, now, now])
        }
    }

    public func due(now: Int64, limit: Int, excluding: Set<Int64>) throws -> [OutboxEntry] {
        try db.pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM sns_outbox WHERE due <= ? ORDER BY due, id LIMIT ?", arguments: [now, limit + excluding.count])
        }
        .filter { !excluding.contains($0["id"]) }.prefix(limit)
        .map { row in
            let account: String = row["account"]
            let messageID: String = row["message_id"]
            let subscription: String = row["subscription"]
            return OutboxEntry(
                id: row["id"], account: account, subscription: subscription, messageType: row["message_type"], messageID: messageID,
                body: try keys.unseal(row["body"], context: Self.context(account, messageID, subscription)), attempts: row["attempts"],
                due: row["due"], created: row["created"])
        }
    }

    public func nextDue() throws -> Int64? {
        try db.pool.read { db in try Int64.fetchOne(db, sql: "SELECT min(due) FROM sns_outbox") }
    }

    public func remove(_ id: Int64) throws {
        try db.pool.write { db in try db.execute(sql: "DELETE FROM sns_outbox WHERE id = ?", arguments: [id]) }
    }

    public func retry(_ id: Int64, attempts: Int, due: Int64) throws {
        try db.pool.write { db in
            try db.execute(sql: "UPDATE sns_outbox SET attempts = ?, due = ? WHERE id = ?", arguments: [attempts, due, id])
        }
    }
}

/// Which HTTP(S) endpoints topics may deliver to: the operator's list of URL prefixes
/// (`http://127.0.0.1:8080/`, `https://hooks.example.com/`). Empty: none.
public struct HTTPEndpointAllowList: Sendable {
    public var prefixes: [String]
    public init(_ prefixes: [String]) { self.prefixes = prefixes.filter { !$0.isEmpty } }

    public func allows(_ url: String) -> Bool {
        guard let u = URL(string: url), let scheme = u.scheme?.lowercased(), scheme == "http" || scheme == "https", u.host != nil else {
            return false
        }
        return prefixes.contains { url.lowercased().hasPrefix($0.lowercased()) }
    }
}

/// Delivers the outbox: POSTs each entry to its subscription's endpoint with SNS's
/// headers; a 2xx answer removes it, anything else (or no answer within 15 s) tries
/// again later (1 s, 2 s, 4 s … up to a minute between attempts, 20 attempts in all).
public final class HTTPDeliveryService: Service, Sendable {
    let outbox: OutboxStore
    let topics: TopicStore
    let allow: HTTPEndpointAllowList
    let clock: PlatformClock
    let logger: Logger
    let http: HTTPClient
    let signals = QueueSignals()
    static let maxAttempts = 20
    static let parallel = 16

    public init(
        outbox: OutboxStore, topics: TopicStore, allow: HTTPEndpointAllowList, clock: PlatformClock = PlatformClock(), logger: Logger
    ) {
        self.outbox = outbox
        self.topics = topics
        self.allow = allow
        self.clock = clock
        self.logger = logger
        http = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5), read: .seconds(15))))
    }

    /// Something was added: look now.
    public func ring() { signals.ring(0) }

    private let stopping = Mutex(false)
    /// Entries whose delivery ended since the loop last looked.
    private let finished = Mutex<Set<Int64>>([])

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                try? await gracefulShutdown()
                self.stopping.withLock { $0 = true }
                self.signals.ringAll()
            }
            var running: Set<Int64> = []
            while !stopping.withLock({ $0 }) {
                running.subtract(
                    finished.withLock { f in
                        defer { f = [] }
                        return f
                    })
                do {
                    for e in try outbox.due(now: clock.nowMillis(), limit: Self.parallel - running.count, excluding: running) {
                        running.insert(e.id)
                        group.addTask {
                            await self.deliver(e)
                            self.finished.withLock { _ = $0.insert(e.id) }
                            self.ring()
                        }
                    }
                } catch {
                    logger.warning("cannot read the SNS outbox", metadata: ["error": "\(error)"])
                }
                var wait: Int64 = 1000
                if let next = try? outbox.nextDue() { wait = max(1, min(wait, next - clock.nowMillis())) }
                await signals.wait(0, timeoutMillis: wait)
            }
        }
        try? await http.shutdown()
    }

    func deliver(_ e: OutboxEntry) async {
        let outcome: String
        do {
            guard let s = try topics.subscription(arn: e.subscription) else {
                try outbox.remove(e.id) // unsubscribed meanwhile
                return
            }
            guard allow.allows(s.endpoint) else {
                logger.warning("dropped a notification: its endpoint is no longer allowed", metadata: ["endpoint": "\(s.endpoint)"])
                try outbox.remove(e.id)
                Self.count("refused")
                return
            }
            var request = HTTPClientRequest(url: s.endpoint)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "text/plain; charset=UTF-8")
            request.headers.add(name: "x-amz-sns-message-type", value: e.messageType)
            request.headers.add(name: "x-amz-sns-message-id", value: e.messageID)
            request.headers.add(
                name: "x-amz-sns-topic-arn", value: String(e.subscription.split(separator: ":").dropLast().joined(separator: ":")))
            if e.messageType == "Notification" { request.headers.add(name: "x-amz-sns-subscription-arn", value: e.subscription) }
            if s.raw, e.messageType == "Notification" { request.headers.add(name: "x-amz-sns-rawdelivery", value: "true") }
            request.headers.add(name: "User-Agent", value: "Amazon Simple Notification Service Agent (petreld)")
            request.body = .bytes(ByteBuffer(bytes: e.body))
            let response = try await http.execute(request, timeout: .seconds(15))
            _ = try? await response.body.collect(upTo: 65_536)
            guard (200..<300).contains(Int(response.status.code)) else { throw HTTPFailure(status: Int(response.status.code)) }
            try outbox.remove(e.id)
            outcome = "delivered"
        } catch {
            let attempts = e.attempts + 1
            if attempts >= Self.maxAttempts {
                logger.warning(
                    "gave up a notification to an HTTP subscriber",
                    metadata: ["subscription": "\(e.subscription)", "attempts": "\(attempts)", "error": "\(error)"])
                try? outbox.remove(e.id)
                outcome = "failed"
            } else {
                let delay = min(60_000, Int64(1000) << Int64(min(attempts - 1, 6)))
                try? outbox.retry(e.id, attempts: attempts, due: clock.nowMillis() + delay)
                outcome = "retried"
            }
        }
        Self.count(outcome)
    }

    static func count(_ outcome: String) {
        Counter(label: "petrel_sns_deliveries_total", dimensions: [("protocol", "http"), ("outcome", outcome)]).increment()
    }

    struct HTTPFailure: Error, CustomStringConvertible {
        var status: Int
        var description: String { "the endpoint answered HTTP \(status)" }
    }
}
