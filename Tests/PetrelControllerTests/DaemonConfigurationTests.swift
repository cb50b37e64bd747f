import Foundation
import Testing

@testable import petreld

@Suite("petreld's configuration")
struct DaemonConfigurationTests {
    @Test("the shipped file holds the built-in defaults")
    func shippedFileIsTheDefault() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Config/petreld.toml").path
        let c = try DaemonConfiguration.load(file: file, environment: [:])
        let d = DaemonConfiguration()
        #expect(c.listenHost == d.listenHost && c.listenPort == d.listenPort)
        #expect(c.dataDirectory == d.dataDirectory && c.runDirectory == d.runDirectory)
        #expect(c.region == d.region && c.accountID == d.accountID && c.policyPath == nil)
        #expect(c.keepAliveSeconds == d.keepAliveSeconds && c.preparedSandboxes == d.preparedSandboxes)
        #expect(c.initTimeoutSeconds == d.initTimeoutSeconds && c.drainTimeoutSeconds == d.drainTimeoutSeconds)
        #expect(c.logLevel == d.logLevel)
        #expect(c.concurrencyLimit == d.concurrencyLimit && c.memoryBudgetMB == nil)
        #expect(c.logRetentionDays == d.logRetentionDays && d.logRetentionDays == 30)
        #expect(c.auditRetentionDays == d.auditRetentionDays && d.auditRetentionDays == 90)
        #expect(c.urlListenHost == d.urlListenHost && c.urlListenPort == d.urlListenPort && c.urlDomain == nil)
        #expect(c.snsHTTPAllow.isEmpty && d.snsHTTPAllow.isEmpty)
    }

    @Test("SNS's HTTP endpoints: URL prefixes, none by default")
    func snsHTTPAllow() throws {
        let path = NSTemporaryDirectory() + "petreld-\(UUID().uuidString).toml"
        try "[topics]\nhttp_allow = \"http://127.0.0.1:8080/, https://hooks.example.com/\"\n".write(
            toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let c = try DaemonConfiguration.load(file: path, environment: [:])
        #expect(c.snsHTTPAllow == ["http://127.0.0.1:8080/", "https://hooks.example.com/"])
        for bad in ["ftp://x/", "127.0.0.1:8080", "http://"] {
            #expect(throws: DaemonConfiguration.Invalid.self, "\(bad)") {
                try DaemonConfiguration.load(file: nil, environment: ["PETREL_SNS_HTTP_ALLOW": bad])
            }
        }
    }

    @Test("function URLs: their own listener, and a domain for host-based addresses")
    func urls() throws {
        let path = NSTemporaryDirectory() + "petreld-\(UUID().uuidString).toml"
        try "[urls]\nlisten = \"0.0.0.0:8443\"\ndomain = \"fn.example.com\"\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let c = try DaemonConfiguration.load(file: path, environment: [:])
        #expect(c.urlListenHost == "0.0.0.0" && c.urlListenPort == 8443 && c.urlDomain == "fn.example.com")
        let e = try DaemonConfiguration.load(
            file: path, environment: ["PETREL_URL_LISTEN": "127.0.0.1:9102", "PETREL_URL_DOMAIN": "x.test:9102"])
        #expect(e.urlListenPort == 9102 && e.urlDomain == "x.test:9102")
        for (k, bad) in [
            ("PETREL_URL_LISTEN", "nope"), ("PETREL_URL_LISTEN", "127.0.0.1:0"), ("PETREL_URL_DOMAIN", "a/b"), ("PETREL_URL_DOMAIN", "a b"),
        ] {
            #expect(throws: DaemonConfiguration.Invalid.self, "\(k)=\(bad)") {
                try DaemonConfiguration.load(file: nil, environment: [k: bad])
            }
        }
    }

    @Test(
        "log and audit retention: days, 0 for forever, out of range refused",
        arguments: [
            ("PETREL_LOG_RETENTION_DAYS", \DaemonConfiguration.logRetentionDays),
            ("PETREL_AUDIT_RETENTION_DAYS", \DaemonConfiguration.auditRetentionDays),
        ] as [(String, KeyPath<DaemonConfiguration, Int?> & Sendable)])
    func retention(_ variable: String, _ field: KeyPath<DaemonConfiguration, Int?> & Sendable) throws {
        #expect(try DaemonConfiguration.load(file: nil, environment: [variable: "7"])[keyPath: field] == 7)
        #expect(try DaemonConfiguration.load(file: nil, environment: [variable: "0"])[keyPath: field] == nil)
        #expect(throws: DaemonConfiguration.Invalid.self) { try DaemonConfiguration.load(file: nil, environment: [variable: "3654"]) }
        #expect(throws: DaemonConfiguration.Invalid.self) { try DaemonConfiguration.load(file: nil, environment: [variable: "-1"]) }
    }

    @Test("the log store's budget: megabytes, 0 for a tenth of the data directory's disk, out of range refused")
    func logBudget() throws {
        let dir = NSTemporaryDirectory()
        var c = try DaemonConfiguration.load(file: nil, environment: ["PETREL_LOG_STORAGE_MB": "64", "PETREL_DATA_DIR": dir])
        #expect(c.logStorageBytes() == 64 << 20)
        c = try DaemonConfiguration.load(file: nil, environment: ["PETREL_LOG_STORAGE_MB": "0", "PETREL_DATA_DIR": dir])
        var fs = statvfs()
        #expect(statvfs(dir, &fs) == 0)
        #expect(c.logStorageBytes() == Int64(fs.f_blocks) * Int64(fs.f_frsize) / 10)
        for bad in ["-1", "many", "16777217"] {
            #expect(throws: DaemonConfiguration.Invalid.self, "\(bad)") {
                try DaemonConfiguration.load(file: nil, environment: ["PETREL_LOG_STORAGE_MB": bad])
            }
        }
    }

    @Test("the environment overrides the file; bad values are refused with the key's name")
    func precedence() throws {
        let path = NSTemporaryDirectory() + "petreld-\(UUID().uuidString).toml"
        try "[api]\nlisten = \"127.0.0.1:9100\"\n[platform]\nregion = \"eu-west-1\"\n".write(
            toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fromFile = try DaemonConfiguration.load(file: path, environment: [:])
        #expect(fromFile.listenPort == 9100 && fromFile.region == "eu-west-1")
        let env = try DaemonConfiguration.load(
            file: path, environment: ["PETREL_LISTEN": "127.0.0.1:9200", "PETREL_KEEP_ALIVE_SECONDS": "30"])
        #expect(env.listenPort == 9200 && env.region == "eu-west-1" && env.keepAliveSeconds == 30)
        #expect(throws: DaemonConfiguration.Invalid.self) {
            try DaemonConfiguration.load(file: nil, environment: ["PETREL_REGION": "nowhere"])
        }
        #expect(throws: DaemonConfiguration.Invalid.self) {
            try DaemonConfiguration.load(file: nil, environment: ["PETREL_LISTEN": "9000"])
        }
        try "[api]\nlisten = \"127.0.0.1:9100\"\nport = 3\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: DaemonConfiguration.Invalid.self) { try DaemonConfiguration.load(file: path, environment: [:]) }
        var c = DaemonConfiguration()
        (c.listenHost, c.listenPort) = try DaemonConfiguration.hostPort("0.0.0.0:9000", source: "--listen")
        #expect(c.listenHost == "0.0.0.0")
        c.tlsCertificate = "/etc/petrel/cert.pem"
        #expect(throws: DaemonConfiguration.Invalid.self) { try c.checkTLS() }
        c.tlsKey = "/etc/petrel/key.pem"
        try c.checkTLS()
    }
}
