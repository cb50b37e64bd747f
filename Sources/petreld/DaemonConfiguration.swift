import Foundation
import Logging
import PetrelCore
import PetrelRuntime
import PetrelSandbox
import PetrelSources
import PetrelStore
import PetrelTOML

/// petreld's settings: defaults, then `Config/petreld.toml`, then `PETREL_*`
/// variables, then flags (applied by the caller).
struct DaemonConfiguration: Sendable {
    var listenHost = "127.0.0.1"
    var listenPort = 9000
    /// Where function URLs are served (a listener of their own, TLS like the API's).
    var urlListenHost = "127.0.0.1"
    var urlListenPort = 9002
    /// With wildcard DNS for it: URLs are `<id>.<domain>`; else `HOST:PORT/<id>/`.
    var urlDomain: String?
    /// URL prefixes SNS topics may deliver to over HTTP(S) (none by default).
    var snsHTTPAllow: [String] = []
    /// The RabbitMQ brokers event source mappings may read, by the name in their broker ARN.
    var rabbitBrokers = BrokerDirectory()
    /// PostgreSQL servers change-stream mappings may name (`NAME=HOST:PORT`).
    var postgresServers = BrokerDirectory()
    /// Kafka bootstrap servers mappings may name (`HOST:PORT`, `HOST:*`, `*`); none by default.
    var kafkaAllow: [String] = []
    /// Object stores that push object events (`NAME=TOKEN`).
    var objectStores = ObjectStores()
    var dataDirectory = "/var/lib/petrel"
    var runDirectory = "/run/petrel"
    var region = "us-east-1"
    var accountID = "000000000000"
    var policyPath: String?
    var keepAliveSeconds = 600
    var preparedSandboxes = 2
    var prestartedPerRuntime = 2
    var prestartedMemoryMB = 512
    var initTimeoutSeconds = 10
    var drainTimeoutSeconds = 30
    var concurrencyLimit = 1000
    /// nil: 80% of the machine's memory.
    var memoryBudgetMB: Int?
    var logLevel = Logger.Level.info
    /// The daemon's own log: `text` (one line per record) or `json` (JSON lines).
    var logFormat = "text"
    /// Asynchronous events running at once at most.
    var eventWorkers = 32
    /// The first retry of a failed event waits this long (then twice as long each time).
    var eventRetryDelaySeconds = 60
    /// Function logs older than this are deleted, unless their group has a policy of its
    /// own (PutRetentionPolicy); nil (0 in the file): kept forever.
    var logRetentionDays: Int? = 30
    /// The most bytes the stored function logs may take (oldest first go, from the
    /// group that holds the most); nil (0 in the file): a tenth of the disk that holds
    /// the data directory.
    var logStorageMB: Int?
    /// Audit records older than this are deleted (90 days, as CloudTrail's event history
    /// keeps); nil (0 in the file): kept forever.
    var auditRetentionDays: Int? = 90
    /// PEM files: with both, the API speaks HTTPS.
    var tlsCertificate: String?
    var tlsKey: String?
    /// A function role ARN that names no role Lambda can assume: refused, or accepted with no
    /// credentials (for accounts that have not chosen; accounts from before roles accept).
    var unknownRoles = AccountStore.UnknownRoles.refuse
    /// How long an instance's temporary credentials last.
    var credentialSeconds = 21_600
    /// The operator's networks and rule sets functions may attach to (`[networks.NAME]`,
    /// `[security_groups.NAME]`).
    var networks = FunctionNetworks()

    struct Invalid: Error, CustomStringConvertible {
        var description: String
    }

    /// Reads the file (when it exists) and the environment over the defaults.
    static func load(file: String?, environment: [String: String]) throws -> DaemonConfiguration {
        var c = DaemonConfiguration()
        if let file {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw Invalid(description: "cannot read the configuration file \(file)")
            }
            do {
                try c.apply(toml: text)
            } catch let e as TOMLError {
                throw Invalid(description: "\(file): \(e)")
            }
        }
        for (key, setter) in Self.keys {
            if let v = environment["PETREL_" + key.uppercased()] {
                try setter(&c, v, "PETREL_" + key.uppercased())
            }
        }
        return c
    }

    typealias Setter = @Sendable (inout DaemonConfiguration, String, String) throws -> Void

    static let keys: [(String, Setter)] = [
        ("listen", { c, v, src in (c.listenHost, c.listenPort) = try hostPort(v, source: src) }),
        ("url_listen", { c, v, src in (c.urlListenHost, c.urlListenPort) = try hostPort(v, source: src) }),
        (
            "url_domain",
            { c, v, src in
                guard
                    v.isEmpty
                        || v.utf8.allSatisfy({
                            $0 == 0x2e || $0 == 0x2d || $0 == 0x3a || ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7a)
                        })
                else { throw Invalid(description: "\(src): \(v) is not a domain name (with an optional :PORT)") }
                c.urlDomain = v.isEmpty ? nil : v
            }
        ),
        (
            "sns_http_allow",
            { c, v, src in
                let list = v.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                for p in list where !(p.hasPrefix("http://") || p.hasPrefix("https://")) || URL(string: p)?.host == nil {
                    throw Invalid(description: "\(src): \(p) is not an http:// or https:// URL prefix")
                }
                c.snsHTTPAllow = list
            }
        ),
        (
            "rabbitmq_brokers",
            { c, v, src in
                let ca = c.rabbitBrokers.caFile
                do { c.rabbitBrokers = try BrokerDirectory(parsing: v, schemes: ("amqp", "amqps")) } catch {
                    throw Invalid(description: "\(src): \((error as? DomainError)?.message ?? "\(error)")")
                }
                c.rabbitBrokers.caFile = ca
            }
        ),
        (
            "rabbitmq_ca_file",
            { c, v, src in
                guard v.isEmpty || FileManager.default.isReadableFile(atPath: v) else {
                    throw Invalid(description: "\(src): \(v) is not a readable file")
                }
                c.rabbitBrokers.caFile = v.isEmpty ? nil : v
            }
        ),
        (
            "postgres_servers",
            { c, v, src in
                do { c.postgresServers = try BrokerDirectory(parsing: v, what: "PostgreSQL server") } catch {
                    throw Invalid(description: "\(src): \((error as? DomainError)?.message ?? "\(error)")")
                }
            }
        ),
        (
            "kafka_allow",
            { c, v, src in
                let list = v.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                for e in list
                where e != "*"
                    && !(e.lastIndex(of: ":").map { i in e[e.index(after: i)...] == "*" || Int(e[e.index(after: i)...]) != nil } ?? false)
                {
                    throw Invalid(description: "\(src): \(e) is not HOST:PORT, HOST:* or *")
                }
                c.kafkaAllow = list
            }
        ),
        (
            "object_stores",
            { c, v, src in
                do { c.objectStores = try ObjectStores(parsing: v) } catch {
                    throw Invalid(description: "\(src): \((error as? DomainError)?.message ?? "\(error)")")
                }
            }
        ),
        ("data_dir", { c, v, _ in c.dataDirectory = v }),
        ("run_dir", { c, v, _ in c.runDirectory = v }),
        ("region", { c, v, src in try c.setRegion(v, source: src) }),
        ("account_id", { c, v, src in try c.setAccount(v, source: src) }),
        ("policy", { c, v, _ in c.policyPath = v.isEmpty ? nil : v }),
        ("keep_alive_seconds", { c, v, src in c.keepAliveSeconds = try int(v, src, 1...86_400) }),
        ("prepared_sandboxes", { c, v, src in c.preparedSandboxes = try int(v, src, 0...64) }),
        ("prestarted_per_runtime", { c, v, src in c.prestartedPerRuntime = try int(v, src, 0...16) }),
        ("prestarted_memory_mb", { c, v, src in c.prestartedMemoryMB = try int(v, src, 0...65_536) }),
        ("init_timeout_seconds", { c, v, src in c.initTimeoutSeconds = try int(v, src, 1...900) }),
        ("drain_timeout_seconds", { c, v, src in c.drainTimeoutSeconds = try int(v, src, 0...3_600) }),
        ("concurrency_limit", { c, v, src in c.concurrencyLimit = try int(v, src, 1...100_000) }),
        (
            "memory_budget_mb",
            { c, v, src in
                c.memoryBudgetMB = try int(v, src, 0...16_777_216)
                if c.memoryBudgetMB == 0 { c.memoryBudgetMB = nil }
            }
        ),
        ("event_workers", { c, v, src in c.eventWorkers = try int(v, src, 1...1_000) }),
        ("event_retry_delay_seconds", { c, v, src in c.eventRetryDelaySeconds = try int(v, src, 1...3_600) }),
        (
            "log_retention_days",
            { c, v, src in
                let d = try int(v, src, 0...3_653)
                c.logRetentionDays = d == 0 ? nil : d
            }
        ),
        (
            "audit_retention_days",
            { c, v, src in
                let d = try int(v, src, 0...3_653)
                c.auditRetentionDays = d == 0 ? nil : d
            }
        ),
        (
            "log_storage_mb",
            { c, v, src in
                let d = try int(v, src, 0...16_777_216)
                c.logStorageMB = d == 0 ? nil : d
            }
        ),
        (
            "unknown_roles",
            { c, v, src in
                guard let u = AccountStore.UnknownRoles(rawValue: v) else {
                    throw Invalid(description: "\(src): unknown_roles is refuse or accept, not \(v)")
                }
                c.unknownRoles = u
            }
        ),
        ("credential_seconds", { c, v, src in c.credentialSeconds = try int(v, src, 15...43_200) }),
        ("tls_certificate", { c, v, _ in c.tlsCertificate = v.isEmpty ? nil : v }),
        ("tls_key", { c, v, _ in c.tlsKey = v.isEmpty ? nil : v }),
        (
            "log_level",
            { c, v, src in
                guard let l = Logger.Level(rawValue: v) else { throw Invalid(description: "\(src): unknown log level \(v)") }
                c.logLevel = l
            }
        ),
        (
            "log_format",
            { c, v, src in
                guard ["text", "json"].contains(v) else { throw Invalid(description: "\(src): the log format is text or json, not \(v)") }
                c.logFormat = v
            }
        ),
    ]

    private mutating func apply(toml text: String) throws {
        let root = try TOMLSection(parsing: text)
        try root.rejectUnknown([
            "api", "urls", "storage", "platform", "instances", "events", "topics", "sources", "logging", "iam", "networks",
            "security_groups",
        ])
        let sections: [String: [String: String]] = [
            "api": ["listen": "listen", "tls_certificate": "tls_certificate", "tls_key": "tls_key"],
            "urls": ["listen": "url_listen", "domain": "url_domain"],
            "storage": [
                "data_dir": "data_dir", "run_dir": "run_dir", "log_retention_days": "log_retention_days",
                "audit_retention_days": "audit_retention_days", "log_storage_mb": "log_storage_mb",
            ],
            "platform": ["region": "region", "account_id": "account_id", "policy": "policy"],
            "instances": [
                "keep_alive_seconds": "keep_alive_seconds", "prepared_sandboxes": "prepared_sandboxes",
                "prestarted_per_runtime": "prestarted_per_runtime", "prestarted_memory_mb": "prestarted_memory_mb",
                "init_timeout_seconds": "init_timeout_seconds", "drain_timeout_seconds": "drain_timeout_seconds",
                "concurrency_limit": "concurrency_limit", "memory_budget_mb": "memory_budget_mb",
            ],
            "events": ["workers": "event_workers", "retry_delay_seconds": "event_retry_delay_seconds"],
            "topics": ["http_allow": "sns_http_allow"],
            "sources": [
                "rabbitmq_brokers": "rabbitmq_brokers", "postgres_servers": "postgres_servers", "kafka_allow": "kafka_allow",
                "object_stores": "object_stores", "rabbitmq_ca_file": "rabbitmq_ca_file",
            ],
            "logging": ["level": "log_level", "format": "log_format"],
            "iam": ["unknown_roles": "unknown_roles", "credential_seconds": "credential_seconds"],
        ]
        try applyNetworks(root)
        for (name, fields) in sections {
            let s = try root.section(name)
            try s.rejectUnknown(Set(fields.keys))
            for (field, key) in fields {
                let value: String?
                if let i = try? s.int(field) { value = String(i) } else { value = try s.string(field) }
                guard let value else { continue }
                let setter = Self.keys.first { $0.0 == key }!.1
                try setter(&self, value, "\(name).\(field)")
            }
        }
    }

    /// `[networks.NAME]`: `namespace` (the operator's `ip netns` namespace that routes the
    /// network), `subnet` (instances' addresses), `allow` (destinations), `accounts`;
    /// `[security_groups.NAME]`: `allow`.
    mutating func applyNetworks(_ root: TOMLSection) throws {
        func name(_ n: String, _ what: String) throws {
            guard (1...64).contains(n.utf8.count), n.utf8.allSatisfy({ FunctionReference.isNameByte($0) || $0 == UInt8(ascii: ".") }) else {
                throw Invalid(description: "\(what) \(n): a name has 1 to 64 of [A-Za-z0-9._-]")
            }
        }
        func destinations(_ s: TOMLSection, _ path: String) throws -> [NetworkDestination] {
            do { return try (s.strings("allow") ?? []).map { d throws(SandboxError) in try NetworkDestination(parsing: d) } } catch let e
                as SandboxError
            {
                throw Invalid(description: "\(path).allow: \(e.message)")
            }
        }
        var out = FunctionNetworks()
        let nets = try root.section("networks")
        for n in nets.values.keys.sorted() {
            try name(n, "network")
            let sec = try nets.section(n)
            try sec.rejectUnknown(["namespace", "subnet", "allow", "accounts"])
            guard let ns = try sec.string("namespace") else {
                throw Invalid(
                    description: "networks.\(n).namespace is required: the operator's network namespace (ip netns) that routes the network")
            }
            try name(ns, "networks.\(n).namespace")
            guard FileManager.default.fileExists(atPath: "/run/netns/" + ns) else {
                throw Invalid(
                    description:
                        "networks.\(n).namespace: there is no network namespace \(ns) (/run/netns/\(ns)); make it with ip netns add")
            }
            guard let text = try sec.string("subnet"), let subnet = IPv4CIDR(text), subnet.prefix <= 30 else {
                throw Invalid(description: "networks.\(n).subnet must be an IPv4 CIDR of at least 4 addresses (a /30 per instance)")
            }
            let accounts = try sec.strings("accounts") ?? ["*"]
            for a in accounts where a != "*" && !FunctionReference.isAccount(a) {
                throw Invalid(description: "networks.\(n).accounts: \(a) is not a 12-digit account id or *")
            }
            out.networks[n] = .init(
                name: n, namespace: ns, subnet: subnet, allow: try destinations(sec, "networks.\(n)"), accounts: accounts)
        }
        let groups = try root.section("security_groups")
        for g in groups.values.keys.sorted() {
            try name(g, "security group")
            let sec = try groups.section(g)
            try sec.rejectUnknown(["allow"])
            out.groups[g] = try destinations(sec, "security_groups.\(g)")
        }
        networks = out
    }

    static func hostPort(_ v: String, source: String) throws -> (String, Int) {
        guard let colon = v.lastIndex(of: ":"), let port = Int(v[v.index(after: colon)...]), (1...65_535).contains(port) else {
            throw Invalid(description: "\(source): listen must be HOST:PORT, not \(v)")
        }
        return (String(v[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port)
    }

    mutating func setRegion(_ v: String, source: String) throws {
        let parts = v.split(separator: "-")
        guard parts.count >= 3, parts.last!.allSatisfy(\.isNumber), v.allSatisfy({ $0.isLowercase || $0.isNumber || $0 == "-" }) else {
            throw Invalid(description: "\(source): \(v) is not a region name like us-east-1")
        }
        region = v
    }

    mutating func setAccount(_ v: String, source: String) throws {
        guard v.count == 12, v.allSatisfy(\.isNumber) else { throw Invalid(description: "\(source): account_id must be 12 digits") }
        accountID = v
    }

    static func int(_ v: String, _ source: String, _ range: ClosedRange<Int>) throws -> Int {
        guard let i = Int(v), range.contains(i) else {
            throw Invalid(description: "\(source): \(v) is not a whole number in \(range.lowerBound)…\(range.upperBound)")
        }
        return i
    }

    /// The log store's budget in bytes: `log_storage_mb`, else a tenth of the filesystem
    /// that holds the data directory (which must exist).
    func logStorageBytes() -> Int64 {
        if let mb = logStorageMB { return Int64(mb) << 20 }
        var fs = statvfs()
        guard statvfs(dataDirectory, &fs) == 0 else { return 1 << 30 }
        return Int64(fs.f_blocks) * Int64(fs.f_frsize) / 10
    }

    /// TLS needs both files or neither.
    func checkTLS() throws {
        if (tlsCertificate == nil) != (tlsKey == nil) {
            throw Invalid(description: "TLS needs both tls_certificate and tls_key (one of them is set)")
        }
    }
}
