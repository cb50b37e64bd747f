import ArgumentParser
import Foundation
import Glibc
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import Metrics
import NIOCore
import NIOPosix
import NIOSSL
import PetrelAPI
import PetrelCore
import PetrelMessaging
import PetrelRuntime
import PetrelSandbox
import PetrelSources
import PetrelStore
import PetrelSystem
import Prometheus
import ServiceLifecycle

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the controller: the Lambda API, the Runtime API and the function instances."
    )

    @Option(help: "Configuration file (default: Config/petreld.toml of the checkout, when it exists).")
    var config: String?

    @Option(help: "Where the API listens (HOST:PORT).")
    var listen: String?

    @Option(name: .customLong("data-dir"), help: "Data directory (metadata, encrypted code, master key).")
    var dataDirectory: String?

    @Option(name: .customLong("run-dir"), help: "Runtime directory (sandbox roots, unpacked code).")
    var runDirectory: String?

    @Option(help: "Isolation policy file for function instances (TOML).")
    var policy: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String?

    /// The configuration: the file, then the environment, then the flags (again at each reload).
    func configuration() throws -> DaemonConfiguration {
        var c = try DaemonConfiguration.load(file: config ?? Locations.defaultConfig(), environment: ProcessInfo.processInfo.environment)
        if let listen { (c.listenHost, c.listenPort) = try DaemonConfiguration.hostPort(listen, source: "--listen") }
        if let d = dataDirectory { c.dataDirectory = d }
        if let d = runDirectory { c.runDirectory = d }
        if let p = policy { c.policyPath = p }
        if let l = logLevel {
            guard let level = Logger.Level(rawValue: l) else {
                throw DaemonConfiguration.Invalid(description: "--log-level: unknown level \(l)")
            }
            c.logLevel = level
        }
        try c.checkTLS()
        return c
    }

    func run() async throws {
        // A SIGHUP before the reload service listens must not end the daemon.
        ReloadService.ignoreHangups()
        let c: DaemonConfiguration
        do { c = try configuration() } catch let e as DaemonConfiguration.Invalid { throw ValidationError(e.description) }
        let levels = LogLevelControl(c.logLevel)
        let json = c.logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json {
                var h = JSONLogHandler(label: label)
                h.logLevel = .trace
                return ReloadableLevelHandler(inner: h, control: levels)
            }
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .trace
            return ReloadableLevelHandler(inner: h, control: levels)
        }
        let logger = Logger(label: "petreld")
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(300), .seconds(900),
        ]
        MetricsSystem.bootstrap(factory)
        // What is running, for dashboards: a constant 1 labelled with the version and build.
        Gauge(label: "petrel_build_info", dimensions: [("version", Build.version), ("build", Build.configuration)]).record(1)
        let reload = ReloadInputs(command: self, levels: levels)
        try await Self.serve(c, logger: logger, metrics: registry, reload: reload)
    }

    /// What a reload needs from the command: how it read the configuration, and the log level.
    struct ReloadInputs: Sendable {
        var command: ServeCommand
        var levels: LogLevelControl
    }

    /// The lock that makes a directory this daemon's alone, or the error that says who has it.
    static func lock(_ dir: String, _ what: String) throws -> FileLock {
        do {
            return try FileLock(path: dir + "/petreld.lock")
        } catch {
            guard error.errno == EWOULDBLOCK else { throw ValidationError("cannot lock the \(what) directory \(dir): \(error)") }
            let holder = FileLock.holder(of: dir + "/petreld.lock").map { " (pid \($0))" } ?? ""
            throw ValidationError(
                "another petreld\(holder) is using the \(what) directory \(dir); give this one its own "
                    + "(--\(what)-dir or \(what)_dir in petreld.toml)")
        }
    }

    static func serve(
        _ c: DaemonConfiguration, logger: Logger, metrics: PrometheusCollectorRegistry, reload: ReloadInputs? = nil
    ) async throws {
        let fm = FileManager.default
        // What petreld unpacks and stages must be readable by the sandboxes' unprivileged users,
        // whatever umask a service manager gave it (the data directory is 0700 either way).
        umask(0o022)
        try fm.createDirectory(atPath: c.dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try fm.createDirectory(atPath: c.runDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o711])
        // …and able to pass through the run directory, even when it was made for petreld (0700).
        try fm.setAttributes([.posixPermissions: 0o711], ofItemAtPath: c.runDirectory)
        // One daemon per data directory and per run directory (staged runtimes, sandbox roots,
        // unpacked code): each lock is held until the process ends.
        let locks = try [(c.dataDirectory, "data"), (c.runDirectory, "run")].map(Self.lock)
        defer { withExtendedLifetime(locks) {} }
        let policy = try Locations.policy(c.policyPath)
        let store = try LocalStore(c)
        let db = store.db
        // The file that tells this daemon its cached keys are stale; without it none are cached.
        try store.accounts.ensureGeneration()
        if let made = try store.ensureAdmin() {
            logger.notice("made the admin account and its key", metadata: ["account": "\(made.account)", "credentials": "\(made.path)"])
        }
        let apiHost = c.listenHost == "0.0.0.0" || c.listenHost == "::" || c.listenHost.isEmpty ? "127.0.0.1" : c.listenHost
        try store.writeAWSConfig(endpoint: "\(c.tlsCertificate == nil ? "http" : "https")://\(Self.authority(apiHost, c.listenPort))")
        let code = try CodeStore(directory: c.dataDirectory + "/code", cacheDirectory: c.runDirectory + "/code", keys: store.keys)
        var engineConfig = SandboxEngineConfiguration(
            stateDirectory: c.dataDirectory, runDirectory: c.runDirectory,
            rootfsSkeleton: RuntimeFiles.stage(skeleton: Locations.rootfs(), runDirectory: c.runDirectory, logger: logger),
            preparedPoolSize: c.preparedSandboxes)
        engineConfig.stemsPerKey = c.prestartedPerRuntime
        engineConfig.stemMemoryMB = c.prestartedMemoryMB
        if let sdk = Locations.pythonSDK() {
            engineConfig.readOnlyBinds["/var/lang/python-sdk"] = sdk
        } else {
            logger.warning("no boto3 for the Python runtime (Scripts/setup installs it): Python functions must bring their own")
        }
        // The java17 runtime, at the same path inside (its class-data sharing archive names it),
        // and the JDK's configuration, which its files link to.
        let java = Locations.javaRuntime()
        if let java {
            engineConfig.readOnlyBinds[java] = java
            if FileManager.default.fileExists(atPath: "/etc/java-17-openjdk") {
                engineConfig.readOnlyBinds["/etc/java-17-openjdk"] = "/etc/java-17-openjdk"
            }
        }
        let engine = try SandboxEngine(configuration: engineConfig, logger: logger)
        // The API's and the instances' loops, one per core. A group of its own: the loops of
        // new connections then go round robin (the singleton's `next()` is everybody's),
        // so concurrent callers spread evenly over the loops (see LoopAffineExecutor).
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let roles = ExecutionRoles(accounts: store.accounts, unknownRoles: c.unknownRoles, credentialSeconds: c.credentialSeconds)
        var runtimeConfig = RuntimeConfiguration(
            region: c.region, accountID: c.accountID, policy: policy,
            keepAlive: .seconds(c.keepAliveSeconds), initTimeout: .seconds(c.initTimeoutSeconds),
            concurrencyLimit: c.concurrencyLimit,
            memoryBudgetMB: c.memoryBudgetMB ?? RuntimeConfiguration.defaultMemoryBudgetMB())
        // Each instance gets its role's credentials and reaches the API through its own 127.0.0.1:9002.
        runtimeConfig.credentials = { try roles.credentials($0) }
        let apiSocket = c.runDirectory + "/api.sock"
        runtimeConfig.apiSocket = apiSocket
        runtimeConfig.networks = c.networks
        runtimeConfig.javaRuntime = java
        let runtime = try RuntimeService(
            engine: engine, code: code, logs: LogStore(db), journalDirectory: c.dataDirectory + "/log-journal",
            configuration: runtimeConfig,
            group: group, logger: logger)
        let eventStore = EventStore(db, keys: store.keys)
        if try eventStore.migrateDeadLetters(now: PlatformClock().nowMillis()) > 0 {
            logger.notice("moved the dead-letter queue of an earlier version into the accounts' petrel-dlq queues")
        }
        let catalog = FunctionCatalog(
            functions: try FunctionStore(db, keys: store.keys), layers: LayerStore(db), urls: FunctionURLStore(db), code: code,
            events: eventStore,
            dispatcher: runtime.dispatcher, keys: store.keys, roles: roles, networks: c.networks, region: c.region,
            logger: logger)
        let events = EventService(
            store: eventStore, schedules: ScheduleStore(db, events: eventStore), functions: catalog.functions,
            dispatcher: runtime.dispatcher,
            settings: EventSettings(
                workers: c.eventWorkers, retryDelaySeconds: c.eventRetryDelaySeconds,
                drainTimeout: .seconds(c.drainTimeoutSeconds), region: c.region),
            logger: logger)
        let gate = Gatekeeper(accounts: store.accounts, audit: AuditStore(db), region: c.region, logger: logger)
        await runtime.dispatcher.loadReservations(try catalog.reservations())
        try catalog.sweepCode()
        try await catalog.loadProvisioned()
        let router = Router(context: PetrelRequestContext.self)
        router.add(middleware: UnknownRouteMiddleware(gate: gate))
        let scheme = c.tlsCertificate == nil ? "http" : "https"
        let urlAddressing = URLAddressing(scheme: scheme, authority: Self.authority(c.urlListenHost, c.urlListenPort), domain: c.urlDomain)
        // Queues and topics: queue URLs are the API's own address.
        let queues = QueueService(
            store: QueueStore(db, keys: store.keys, commits: eventStore.commits), region: c.region,
            baseURL: "\(scheme)://\(Self.authority(c.listenHost, c.listenPort))", logger: logger)
        let outbox = OutboxStore(db, keys: store.keys, commits: eventStore.commits)
        let allow = HTTPEndpointAllowList(c.snsHTTPAllow)
        let httpDeliveries = HTTPDeliveryService(outbox: outbox, topics: TopicStore(db), allow: allow, logger: logger)
        let topics = TopicService(
            store: TopicStore(db), queues: queues, functions: FunctionDeliveries(catalog: catalog, events: events), outbox: outbox,
            allow: allow, sender: httpDeliveries, region: c.region, logger: logger)
        let records = RecordDeliveries(queues: queues, topics: topics)
        events.bind(records)
        let mappings = MappingService(
            store: MappingStore(db), queues: queues, functions: catalog.functions, dispatcher: runtime.dispatcher, brokers: c.rabbitBrokers,
            databases: c.postgresServers, kafkaAllow: KafkaAllowList(c.kafkaAllow), sink: records,
            secrets: SecretStore(db, keys: store.keys), region: c.region, logger: logger)
        let lambda = LambdaAPI(
            catalog: catalog, dispatcher: runtime.dispatcher, events: events, queues: queues, mappings: mappings,
            topics: TopicStore(db), objectStores: c.objectStores, buckets: BucketNotificationStore(db), gate: gate,
            codeLinks: try CodeLinks(keys: store.keys, scheme: scheme), urlAddressing: urlAddressing, region: c.region,
            loops: LoopExecutors(group: group), logger: logger)
        lambda.register(on: router)
        ServiceRouter(
            logs: LogsAPI(logs: LogStore(db), gate: gate, region: c.region, defaultRetentionDays: c.logRetentionDays, logger: logger),
            sqs: SQSAPI(queues: queues, gate: gate, logger: logger), sns: SNSAPI(topics: topics, gate: gate, logger: logger),
            secrets: SecretsAPI(secrets: SecretStore(db, keys: store.keys), gate: gate, region: c.region, logger: logger),
            sts: STSAPI(accounts: store.accounts, gate: gate, logger: logger),
            iam: IAMAPI(accounts: store.accounts, gate: gate, logger: logger)
        ).register(on: router)
        MetricsAPI(registry: metrics).register(on: router)
        // Invoke is answered in each connection's pipeline, before Hummingbird (see FastPathHandler).
        let http1 = HTTPServerBuilder.http1(configuration: .init(additionalChannelHandlers: [lambda.invokeHandler()]))
        var server = http1
        let urlResponder = FunctionURLServer(
            catalog: catalog, dispatcher: runtime.dispatcher, gate: gate, addressing: urlAddressing, region: c.region,
            loops: LoopExecutors(group: group), logger: logger)
        let urlHTTP1 = HTTPServerBuilder.http1(configuration: .init(additionalChannelHandlers: [urlResponder.handler()]))
        var urlServer = urlHTTP1
        if let cert = c.tlsCertificate, let key = c.tlsKey {
            let chain = try NIOSSLCertificate.fromPEMFile(cert).map { NIOSSLCertificateSource.certificate($0) }
            let tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            server = try .tls(http1, tlsConfiguration: tls)
            urlServer = try .tls(urlHTTP1, tlsConfiguration: tls)
        }
        // Function URLs: public traffic on a listener of its own.
        let urls = Application(
            responder: urlResponder,
            server: urlServer,
            configuration: .init(address: .hostname(c.urlListenHost, port: c.urlListenPort), serverName: LambdaAPI.serverName),
            onServerRunning: { channel in
                logger.info(
                    "petreld is serving function URLs", metadata: ["url.address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
            },
            eventLoopGroupProvider: .shared(group),
            logger: logger)
        let app = Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(c.listenHost, port: c.listenPort), serverName: LambdaAPI.serverName),
            onServerRunning: { channel in
                logger.info(
                    "petreld is serving the Lambda API",
                    metadata: [
                        "api.address": "\(channel.localAddress.map { "\($0)" } ?? "?")",
                        "petreld.version": "\(Build.version)", "petreld.build": "\(Build.configuration)",
                    ])
                // Everything before the API (the store, the runtime) is up by now.
                SystemdNotify.send("READY=1\nSTATUS=serving the Lambda API")
            },
            eventLoopGroupProvider: .shared(group),
            logger: logger)
        // The same API, plain HTTP on a Unix socket in the run directory: what instances' SDKs
        // reach through their sandbox's 127.0.0.1:9002 (APIRelay). Requests are signed as any other.
        let local = Application(
            router: router, server: http1,
            configuration: .init(address: .unixDomainSocket(path: apiSocket), serverName: LambdaAPI.serverName),
            eventLoopGroupProvider: .shared(group), logger: logger)
        // Services shut down in reverse order: the API drains first, then the event runner lets running
        // events finish (the rest stay queued), then the runtime stops its instances. The audit writer
        // stops last: it records the calls the API drained.
        // The API's tasks run on the event loops (LoopAffineExecutor): an invocation stays on its
        // connection's loop, where its instance most likely lives too.
        let api = OnExecutor(app, executor: LoopAffineExecutor(group: group))
        let urlAPI = OnExecutor(urls, executor: LoopAffineExecutor(group: group))
        let localAPI = OnExecutor(local, executor: LoopAffineExecutor(group: group))
        let retention = RetentionService(
            logs: LogStore(db), logDays: c.logRetentionDays, logBudget: c.logStorageBytes(), audit: AuditStore(db),
            auditDays: c.auditRetentionDays, dataDirectory: c.dataDirectory, logger: logger)
        var config = ServiceGroupConfiguration(
            services: [
                .init(service: AuditService(gate: gate)), .init(service: retention),
                .init(service: runtime), .init(service: events), .init(service: queues), .init(service: httpDeliveries),
                .init(service: mappings),
                .init(service: api), .init(service: urlAPI), .init(service: localAPI),
            ]
                + (reload.map { r in
                    [
                        ServiceGroupConfiguration.ServiceConfiguration(
                            service: ReloadService(
                                running: c, load: { try r.command.configuration() }, levels: r.levels, mappings: mappings, logger: logger))
                    ]
                } ?? [])
                + [.init(service: SystemdStopping(), successTerminationBehavior: .ignore)],
            logger: logger)
        config.gracefulShutdownSignals = [.sigterm, .sigint]
        config.maximumGracefulShutdownDuration = .seconds(c.drainTimeoutSeconds + 15)
        do {
            try await ServiceGroup(configuration: config).run()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try? await group.shutdownGracefully()
        logger.info("petreld stopped")
    }
}

extension ServeCommand {
    /// `HOST:PORT` as clients write it (a wildcard listener is reached by the machine's name).
    static func authority(_ host: String, _ port: Int) -> String {
        let h = host == "0.0.0.0" || host == "::" || host.isEmpty ? ProcessInfo.processInfo.hostName : host
        return (h.contains(":") ? "[\(h)]" : h) + ":\(port)"
    }
}

/// Runs a service (and every task it makes) with a task executor preference.
struct OnExecutor<S: Service>: Service {
    let inner: S
    let executor: any TaskExecutor
    init(_ inner: S, executor: any TaskExecutor) {
        self.inner = inner
        self.executor = executor
    }
    func run() async throws {
        try await withTaskExecutorPreference(executor) { try await inner.run() }
    }
}
