import Dispatch
import Logging
import NIOCore
import PetrelCore
import PetrelSandbox
import PetrelStore
import ServiceLifecycle
import Synchronization

/// The runtime layer as one Service of the daemon: it owns the instances'
/// watchers, the log writer, the prepared-sandbox refill and the idle reaper.
/// On graceful shutdown it stops every instance, waits until each has been
/// torn down and its log written, then releases the prepared sandboxes.
public final class RuntimeService: Service, Sendable {
    public let dispatcher: Dispatcher
    let engine: SandboxEngine
    let sink: LogSink
    let configuration: RuntimeConfiguration
    let logger: Logger
    private let stopped = Mutex(false)

    /// `journalDirectory`: where instances' output is journaled before their invocations are
    /// answered (what an earlier process left there is stored first); nil: not journaled.
    public init(
        engine: SandboxEngine, code: CodeStore, logs: LogStore, journalDirectory: String?, configuration: RuntimeConfiguration,
        group: any EventLoopGroup, logger: Logger
    ) throws {
        self.engine = engine
        self.configuration = configuration
        self.logger = logger
        sink = try LogSink(store: logs, journalDirectory: journalDirectory, logger: logger)
        let launcher = InstanceLauncher(engine: engine, configuration: configuration, sink: sink, logger: logger)
        dispatcher = Dispatcher(launcher: launcher, code: code, configuration: configuration, group: group, logger: logger)
    }

    public func run() async throws {
        let dispatcher = self.dispatcher
        await withDiscardingTaskGroup { group in
            group.addTask { await self.sink.run() }
            group.addTask {
                try? await gracefulShutdown()
                await dispatcher.stopAll()
            }
            group.addTask { await self.maintain() }
            for await instance in dispatcher.launches {
                group.addTask {
                    let report = await instance.sandbox.wait()
                    instance.ended(report)
                    await dispatcher.ended(instance)
                }
            }
            // Every instance has ended.
            stopped.withLock { $0 = true }
            sink.finish()
        }
        await blocking { self.engine.shutdown() }
        logger.info("runtime stopped")
    }

    /// Keeps prepared sandboxes ready and reaps idle instances, until the runtime stops.
    private func maintain() async {
        let policy = configuration.policy
        await blocking {
            do { try self.engine.prewarm(policy: policy, ephemeralStorageMB: FunctionLimits.defaultEphemeralStorageMB) } catch {
                self.logger.warning("cannot prepare sandboxes ahead", metadata: ["error": "\(error)"])
            }
        }
        while !stopped.withLock({ $0 }) {
            try? await Task.sleep(for: .milliseconds(100))
            if stopped.withLock({ $0 }) { break }
            await dispatcher.reapIdle()
            await dispatcher.publishGauges()
            await dispatcher.maintainProvisioned()
            await blocking { _ = self.engine.replenishPools() }
            dispatcher.metrics.prepared(engine.preparedCount)
            dispatcher.metrics.prestarted(engine.stemGauges)
        }
    }
}

/// Runs blocking work (spawning, unpacking) on a Dispatch thread, not on the cooperative pool.
func blocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { cont in
        DispatchQueue.global().async { cont.resume(returning: body()) }
    }
}
