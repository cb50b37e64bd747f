import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import PetrelCore
import PetrelSandbox
import PetrelStore

/// Routes invocations to instances: an idle warm instance of the function's
/// current revision when there is one, a new one otherwise. Instances of an
/// older revision finish what they run and are then torn down.
public actor Dispatcher {
    let launcher: InstanceLauncher
    let code: CodeStore
    let configuration: RuntimeConfiguration
    let group: any EventLoopGroup
    let logger: Logger

    private struct Idle {
        var instance: Instance
        var since: ContinuousClock.Instant
    }
    private var idle: [String: [Idle]] = [:]
    private var live: [ObjectIdentifier: Instance] = [:]
    /// The newest revision seen per function; nil once deleted.
    private var revisions: [String: String] = [:]
    private var stopping = false

    /// New instances to watch (the runtime service owns the watching tasks).
    nonisolated let launches: AsyncStream<Instance>
    private nonisolated let launchesContinuation: AsyncStream<Instance>.Continuation

    init(launcher: InstanceLauncher, code: CodeStore, configuration: RuntimeConfiguration, group: any EventLoopGroup, logger: Logger) {
        self.launcher = launcher
        self.code = code
        self.configuration = configuration
        self.group = group
        self.logger = logger
        (launches, launchesContinuation) = AsyncStream.makeStream(of: Instance.self)
    }

    public var liveCount: Int { live.count }
    public var idleCount: Int { idle.values.reduce(0) { $0 + $1.count } }

    /// Invokes `function` synchronously.
    public func invoke(_ function: FunctionRecord, _ request: InvocationRequest) async throws(LambdaError) -> InvocationResult {
        guard !stopping else { throw LambdaError(.service, "Petrel is shutting down; try again shortly.") }
        noteRevision(function)
        var cold = false
        let instance: Instance
        if let warm = takeIdle(function) {
            instance = warm
        } else {
            cold = true
            instance = try await start(function)
        }
        if cold {
            do {
                try await instance.waitInitialized(timeout: configuration.initTimeout)
            } catch {
                let failure = error as? InstanceFailure ?? .startFailed("\(error)")
                instance.log.platform("START RequestId: \(request.requestID) Version: $LATEST")
                instance.stop()
                _ = await instance.finalReport(within: .seconds(2))
                return finish(instance, request, .failed(failure), cold: true, startedNanos: DispatchTime.now().uptimeNanoseconds)
            }
        }
        let started = DispatchTime.now().uptimeNanoseconds
        instance.log.beginTail(keep: cold)
        instance.log.platform("START RequestId: \(request.requestID) Version: $LATEST")
        let outcome = await instance.invoke(request, timeoutSeconds: function.timeoutSeconds)
        if case .failed = outcome {
            // The instance is done for: its last figures come from its final report.
            instance.stop()
            _ = await instance.finalReport(within: .seconds(2))
        }
        let result = finish(instance, request, outcome, cold: cold, startedNanos: started)
        if case .failed = outcome { return result }
        if instance.isUsable, !stopping, revisions[function.name] == function.revisionId {
            idle[function.name, default: []].append(Idle(instance: instance, since: .now))
        } else {
            instance.stop()
        }
        return result
    }

    /// Tears down the idle instances of a function (its code or configuration
    /// changed, or it was deleted); busy ones go when they finish.
    public func retire(_ name: String, newRevision: String?) {
        revisions[name] = newRevision
        for i in idle.removeValue(forKey: name) ?? [] { i.instance.stop() }
    }

    /// Stops instances idle for longer than the keep-alive; returns how many.
    @discardableResult
    public func reapIdle(now: ContinuousClock.Instant = .now) -> Int {
        var n = 0
        for (name, list) in idle {
            let (old, keep) = (list.filter { now - $0.since >= configuration.keepAlive }, list.filter { now - $0.since < configuration.keepAlive })
            old.forEach { $0.instance.stop() }
            n += old.count
            idle[name] = keep.isEmpty ? nil : keep
        }
        return n
    }

    /// Stops everything; new invocations are refused from now on.
    func stopAll() {
        stopping = true
        idle = [:]
        for i in live.values { i.stop() }
        if live.isEmpty { launchesContinuation.finish() }
    }

    func ended(_ instance: Instance) {
        live[ObjectIdentifier(instance)] = nil
        if var list = idle[instance.function.name] {
            list.removeAll { $0.instance === instance }
            idle[instance.function.name] = list.isEmpty ? nil : list
        }
        if stopping && live.isEmpty { launchesContinuation.finish() }
    }

    // MARK: -

    private func noteRevision(_ f: FunctionRecord) {
        if revisions[f.name] != f.revisionId {
            revisions[f.name] = f.revisionId
            for i in idle.removeValue(forKey: f.name) ?? [] { i.instance.stop() }
        }
    }

    private func takeIdle(_ f: FunctionRecord) -> Instance? {
        while var list = idle[f.name], let last = list.popLast() {
            idle[f.name] = list.isEmpty ? nil : list
            if last.instance.function.revisionId == f.revisionId, last.instance.isUsable { return last.instance }
            last.instance.stop()
        }
        return nil
    }

    private func start(_ function: FunctionRecord) async throws(LambdaError) -> Instance {
        let loop = group.next()
        let launcher = self.launcher
        let code = self.code
        let result: Result<Instance, LambdaError> = await withCheckedContinuation { cont in
            DispatchQueue.global().async {
                do {
                    let dir = try code.unpacked(hex: function.codeDigestHex)
                    cont.resume(returning: .success(try launcher.launch(function, codeDirectory: dir, on: loop)))
                } catch let e as LambdaError {
                    cont.resume(returning: .failure(e))
                } catch {
                    cont.resume(returning: .failure(LambdaError(.service, "Petrel could not start an instance: \(error)")))
                }
            }
        }
        let instance = try result.get()
        live[ObjectIdentifier(instance)] = instance
        launchesContinuation.yield(instance)
        instance.log.beginTail(keep: false)
        instance.log.platform("INIT_START Runtime Version: \(function.runtime.rawValue)\tRuntime Version ARN: petrel:\(function.runtime.rawValue)")
        if stopping { instance.stop() }
        return instance
    }

    private func finish(_ instance: Instance, _ request: InvocationRequest, _ outcome: InvocationOutcome,
                        cold: Bool, startedNanos: UInt64) -> InvocationResult {
        let durationMs = Double(DispatchTime.now().uptimeNanoseconds - startedNanos) / 1e6
        let peakMB = instance.peakMemoryMB()
        let initMs = cold ? instance.initDurationMs : nil
        var payload: ByteBuffer
        var functionError: String?
        var status: String?
        switch outcome {
        case .response(let body):
            payload = body
        case .functionError(let body, _):
            payload = body
            functionError = "Unhandled"
        case .failed(let f):
            let doc = f.document(requestID: request.requestID)
            payload = ByteBuffer(string: doc.json)
            functionError = "Unhandled"
            status = f.reportStatus
        }
        instance.log.platform("END RequestId: \(request.requestID)")
        var report = "REPORT RequestId: \(request.requestID)\tDuration: \(String(format: "%.2f", durationMs)) ms\tBilled Duration: \(Int(durationMs.rounded(.up))) ms\tMemory Size: \(instance.function.memoryMB) MB\tMax Memory Used: \(peakMB) MB"
        if let initMs { report += "\tInit Duration: \(String(format: "%.2f", initMs)) ms" }
        if let status { report += "\tStatus: \(status)" }
        instance.log.platform(report)
        let tail = instance.log.endTail()
        return InvocationResult(payload: payload, functionError: functionError, logTail: tail, executedVersion: "$LATEST",
                                coldStart: cold, durationMs: durationMs, initDurationMs: initMs)
    }
}
