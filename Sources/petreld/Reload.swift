import Dispatch
import Foundation
import Glibc
import Logging
import PetrelSources
import ServiceLifecycle
import Synchronization

/// The daemon's log level, which a reload may change: every handler reads it on each record.
final class LogLevelControl: Sendable {
    private let index: Atomic<Int>
    init(_ level: Logger.Level) { index = Atomic(Logger.Level.allCases.firstIndex(of: level) ?? 2) }
    var level: Logger.Level {
        get { Logger.Level.allCases[index.load(ordering: .relaxed)] }
        set { index.store(Logger.Level.allCases.firstIndex(of: newValue) ?? 2, ordering: .relaxed) }
    }
}

/// A handler whose level is the daemon's current one (a logger's own level setting is not used).
struct ReloadableLevelHandler<Inner: LogHandler>: LogHandler {
    var inner: Inner
    let control: LogLevelControl

    var logLevel: Logger.Level {
        get { control.level }
        set {}
    }
    var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }
    var metadataProvider: Logger.MetadataProvider? {
        get { inner.metadataProvider }
        set { inner.metadataProvider = newValue }
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }
    func log(event: LogEvent) { inner.log(event: event) }
}

/// `SIGHUP` (systemd's `ExecReload`): reads the configuration again, as at start (the same
/// file, environment and flags), and applies what can change while running: the log level
/// and the operator's source lists (`rabbitmq_brokers`, `rabbitmq_ca_file`,
/// `postgres_servers`, `kafka_allow`). Other changes are named in the log as waiting for a
/// restart. A configuration that does not load changes nothing.
final class ReloadService: Service, Sendable {
    let load: @Sendable () throws -> DaemonConfiguration
    let running: Mutex<DaemonConfiguration>
    let levels: LogLevelControl
    let mappings: MappingService
    let logger: Logger

    /// What a reload applies, by their keys (`[logging] level` is `log_level`, as in PETREL_LOG_LEVEL;
    /// `rabbitmq_ca_file` goes with `rabbitmq_brokers`).
    static let reloadable: Set<String> = ["log_level", "rabbitmq_brokers", "postgres_servers", "kafka_allow"]
    /// The configuration's fields whose names in petreld.toml are not their snake_case.
    static let keys = [
        "listenHost": "listen", "listenPort": "listen", "urlListenHost": "url_listen", "urlListenPort": "url_listen",
        "rabbitBrokers": "rabbitmq_brokers", "dataDirectory": "data_dir", "runDirectory": "run_dir", "policyPath": "policy",
        "memoryBudgetMB": "memory_budget_mb", "logStorageMB": "log_storage_mb",
        "snsHTTPAllow": "sns_http_allow", "accountID": "account_id",
    ]

    init(
        running: DaemonConfiguration, load: @escaping @Sendable () throws -> DaemonConfiguration, levels: LogLevelControl,
        mappings: MappingService, logger: Logger
    ) {
        self.running = Mutex(running)
        self.load = load
        self.levels = levels
        self.mappings = mappings
        self.logger = logger
    }

    /// Makes SIGHUP harmless until the service listens for it (its default ends the process).
    static func ignoreHangups() { signal(SIGHUP, SIG_IGN) }

    func run() async throws {
        Self.ignoreHangups()
        let (hangups, hangup) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler { hangup.yield() }
        source.resume()
        defer { source.cancel() }
        for await _ in hangups.cancelOnGracefulShutdown() { reload() }
    }

    func reload() {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        SystemdNotify.send("RELOADING=1\nMONOTONIC_USEC=\(Int(ts.tv_sec) * 1_000_000 + Int(ts.tv_nsec) / 1000)")
        defer { SystemdNotify.send("READY=1\nSTATUS=serving the Lambda API") }
        let fresh: DaemonConfiguration
        do {
            fresh = try load()
        } catch {
            logger.error("the configuration was not reloaded; the daemon keeps the one it has", metadata: ["error": "\(error)"])
            return
        }
        let old = running.withLock { $0 }
        let changed = Self.differences(old, fresh)
        levels.level = fresh.logLevel
        mappings.reconfigure(
            brokers: fresh.rabbitBrokers, databases: fresh.postgresServers, kafkaAllow: KafkaAllowList(fresh.kafkaAllow))
        running.withLock { c in
            c.logLevel = fresh.logLevel
            c.rabbitBrokers = fresh.rabbitBrokers
            c.postgresServers = fresh.postgresServers
            c.kafkaAllow = fresh.kafkaAllow
        }
        let applied = changed.filter(Self.reloadable.contains)
        let waiting = changed.filter { !Self.reloadable.contains($0) }
        var metadata: Logger.Metadata = ["applied": "\(applied.joined(separator: ","))"]
        if !waiting.isEmpty { metadata["restart.needed"] = "\(waiting.joined(separator: ","))" }
        logger.notice("configuration reloaded", metadata: metadata)
        if !waiting.isEmpty {
            logger.warning(
                "these settings changed and take effect at the next restart", metadata: ["settings": "\(waiting.joined(separator: ","))"])
        }
    }

    /// The settings that differ, by their keys (PETREL_<KEY> in upper case).
    static func differences(_ a: DaemonConfiguration, _ b: DaemonConfiguration) -> [String] {
        let left = Mirror(reflecting: a).children
        let right = Dictionary(
            Mirror(reflecting: b).children.compactMap { c in c.label.map { ($0, String(reflecting: c.value)) } },
            uniquingKeysWith: { x, _ in x })
        var out: [String] = []
        for c in left {
            guard let label = c.label, right[label] != String(reflecting: c.value) else { continue }
            out.append(keys[label] ?? snake(label))
        }
        return Array(Set(out)).sorted()
    }

    static func snake(_ s: String) -> String {
        var out = ""
        for ch in s {
            if ch.isUppercase {
                out += "_" + ch.lowercased()
            } else {
                out.append(ch)
            }
        }
        return out
    }
}
