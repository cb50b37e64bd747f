import Foundation
import Glibc
import Logging
import NIOCore
import NIOHTTP1
import PetrelCore
import PetrelSandbox
import Synchronization

/// One function instance: a sandbox running a runtime that pulls invocations
/// from the Runtime API we serve inside it. One invocation at a time.
final class Instance: RuntimeAPIDelegate, Sendable {
    let id: String
    let function: FunctionRecord
    let sandbox: Sandbox
    let log: InstanceLog
    let loop: any EventLoop
    let logger: Logger
    let launchedNanos: UInt64
    let launchedEpochMs: Double
    /// How long making the sandbox took (taking a prepared one and starting the command).
    let sandboxMs: Double

    private struct Pending {
        var request: InvocationRequest
        var deadlineMs: Int64
        var delivered: Bool
        var continuation: CheckedContinuation<InvocationOutcome, Never>
        var timer: Scheduled<Void>?
    }

    private struct State {
        var initDone = false
        var initDurationMs: Double?
        var initWaiter: CheckedContinuation<Void, any Error>?
        var parkedNext: RuntimeResponder?
        var current: Pending?
        var failure: InstanceFailure?
        var servers: [any Channel] = []
        var ended = false
        var report: SandboxReport?
        var phases: ColdStartPhases?
    }
    private let state = Mutex(State())

    init(id: String, function: FunctionRecord, sandbox: Sandbox, log: InstanceLog, loop: any EventLoop, logger: Logger, sandboxMs: Double) {
        self.sandboxMs = sandboxMs
        launchedEpochMs = InstanceLog.nowMs()
        self.id = id
        self.function = function
        self.sandbox = sandbox
        self.log = log
        self.loop = loop
        self.logger = logger
        launchedNanos = DispatchTime.now().uptimeNanoseconds
    }

    var initDurationMs: Double? { state.withLock { $0.initDurationMs } }
    var coldStartPhases: ColdStartPhases? { state.withLock { $0.phases } }
    var isUsable: Bool { state.withLock { $0.failure == nil && !$0.ended } }

    /// The Runtime API's listeners: each channel owns its fd from here on.
    func attach(servers: [EventLoopFuture<any Channel>]) {
        for server in servers {
            server.whenComplete { [self] result in
                switch result {
                case .success(let ch):
                    let close = state.withLock { s -> Bool in
                        if s.ended { return true }
                        s.servers.append(ch)
                        return false
                    }
                    if close { ch.close(promise: nil) }
                case .failure(let error):
                    logger.error("the Runtime API could not start", metadata: ["error": "\(error)"])
                    fail(.startFailed("the Runtime API could not start: \(error)"))
                }
            }
        }
    }

    // MARK: - driving it

    /// Waits until the runtime has initialized (its first `next`), at most `timeout`.
    func waitInitialized(timeout: Duration) async throws {
        let timer = loop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)) { [self] in
            let seconds = Double(timeout.components.seconds)
            let fire = state.withLock { !$0.initDone && $0.failure == nil }
            if fire { fail(.initTimedOut(seconds: seconds)) }
        }
        defer { timer.cancel() }
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, any Error>) in
            let resume: Result<Void, InstanceFailure>? = state.withLock { s in
                if let f = s.failure { return .failure(f) }
                if s.initDone { return .success(()) }
                s.initWaiter = cont
                return nil
            }
            if let resume { cont.resume(with: resume.mapError { $0 as any Error }) }
        }
    }

    /// Runs one invocation; the instance is killed when it times out.
    func invoke(_ request: InvocationRequest, timeoutSeconds: Int) async -> InvocationOutcome {
        let deadlineMs = InstanceLog.now() + Int64(timeoutSeconds) * 1000
        let deadline = NIODeadline.now() + .seconds(Int64(timeoutSeconds))
        let rid = request.requestID
        let onTimeout: @Sendable () -> Void = { [self] in
            let mine = state.withLock { $0.current?.request.requestID == rid }
            if mine { fail(.timedOut(seconds: Double(timeoutSeconds))) }
        }
        return await withCheckedContinuation { (cont: CheckedContinuation<InvocationOutcome, Never>) in
            enum Next { case failed(InstanceFailure), deliver(RuntimeResponder), wait }
            let next: Next = state.withLock { s in
                if let f = s.failure { return .failed(f) }
                precondition(s.current == nil, "an instance runs one invocation at a time")
                var p = Pending(request: request, deadlineMs: deadlineMs, delivered: false, continuation: cont)
                if let parked = s.parkedNext {
                    s.parkedNext = nil
                    p.delivered = true
                    s.current = p
                    return .deliver(parked)
                }
                s.current = p
                return .wait
            }
            switch next {
            case .failed(let f):
                cont.resume(returning: .failed(f))
            case .deliver(let respond):
                // On the instance's loop (at most one hop to it): arm the timer there and answer
                // the parked `next` (its write is then local, not a second cross-thread wake-up).
                let response = Self.nextResponse(request, deadlineMs: deadlineMs)
                if loop.inEventLoop {
                    arm(loop.scheduleTask(deadline: deadline, onTimeout), for: rid)
                    respond(response)
                } else {
                    loop.execute { [self] in
                        arm(loop.scheduleTask(deadline: deadline, onTimeout), for: rid)
                        respond(response)
                    }
                }
            case .wait:
                arm(loop.scheduleTask(deadline: deadline, onTimeout), for: rid)
            }
        }
    }

    /// Keeps the timer with its invocation (or cancels it when that already ended).
    private func arm(_ timer: Scheduled<Void>, for rid: String) {
        let keep = state.withLock { s -> Bool in
            guard s.current?.request.requestID == rid else { return false }
            s.current!.timer = timer
            return true
        }
        if !keep { timer.cancel() }
    }

    /// Ends the instance (idempotent): every waiter gets `failure`.
    func fail(_ failure: InstanceFailure) {
        let (waiter, pending) = state.withLock { s -> (CheckedContinuation<Void, any Error>?, Pending?) in
            if s.failure == nil { s.failure = failure }
            let w = s.initWaiter
            s.initWaiter = nil
            let p = s.current
            s.current = nil
            return (w, p)
        }
        sandbox.kill()
        waiter?.resume(throwing: failure)
        if let pending {
            pending.timer?.cancel()
            pending.continuation.resume(returning: .failed(failure))
        }
    }

    /// Kills the instance without reporting anything to anyone (retirement).
    func stop() { fail(.exited(report: .init(oom: false, exitCode: nil, signal: 9, startError: nil))) }

    /// Called once the sandbox has ended and been torn down.
    func ended(_ report: SandboxReport) {
        let ex = InstanceFailure.exited(report: .init(oom: report.oomKilled, exitCode: report.exitCode,
                                                      signal: report.signal, startError: report.startError))
        let servers = state.withLock { s -> [any Channel] in
            s.ended = true
            s.report = report
            defer { s.servers = [] }
            return s.servers
        }
        fail(ex)
        // A listener whose channel is not up yet is closed when it comes up (see attach).
        for server in servers { server.close(promise: nil) }
        log.flush()
    }

    /// The sandbox's final report, once it has ended (waits at most `limit`).
    func finalReport(within limit: Duration) async -> SandboxReport? {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if let r = state.withLock({ $0.report }) { return r }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return nil
    }

    /// Peak memory so far in MB: from the live cgroup, or from the final report once it is gone.
    func peakMemoryMB() -> Int {
        if let r = state.withLock({ $0.report }) { return Int(r.maxMemoryMB.rounded(.up)) }
        return Int((Double(sandbox.peakMemoryBytes() ?? 0) / 1_048_576).rounded(.up))
    }

    // MARK: - the Runtime API side

    func handle(_ request: RuntimeAPIRequest, respond: @escaping RuntimeResponder) {
        switch request {
        case .next(let initStartMs):
            var initJustDone = false
            let (waiter, deliver, old) = state.withLock { s -> (CheckedContinuation<Void, any Error>?, RuntimeAPIResponse?, RuntimeResponder?) in
                var waiter: CheckedContinuation<Void, any Error>?
                if !s.initDone {
                    initJustDone = true
                    s.initDone = true
                    s.initDurationMs = Double(DispatchTime.now().uptimeNanoseconds - launchedNanos) / 1e6
                    if let initStartMs, initStartMs >= launchedEpochMs {
                        s.phases = ColdStartPhases(sandboxMs: sandboxMs, runtimeStartMs: initStartMs - launchedEpochMs,
                                                   functionInitMs: InstanceLog.nowMs() - initStartMs)
                    } else {
                        s.phases = ColdStartPhases(sandboxMs: sandboxMs, runtimeStartMs: nil, functionInitMs: nil)
                    }
                    waiter = s.initWaiter
                    s.initWaiter = nil
                }
                if s.failure != nil { return (waiter, nil, nil) }
                if var p = s.current, !p.delivered {
                    p.delivered = true
                    s.current = p
                    return (waiter, Self.nextResponse(p.request, deadlineMs: p.deadlineMs), nil)
                }
                let old = s.parkedNext
                s.parkedNext = respond
                return (waiter, nil, old)
            }
            old?(.json(.conflict, #"{"errorMessage":"another next request replaced this one","errorType":"InvalidStateTransition"}"#))
            if waiter != nil || initJustDone {
                // Init ran with the host's CPUs; invocations get the memory-proportional share.
                do { try sandbox.settle() } catch {
                    logger.error("cannot apply the instance's CPU limit; stopping it", metadata: ["error": "\(error)"])
                    fail(.startFailed("cannot apply the instance's CPU limit: \(error)"))
                }
            }
            waiter?.resume()
            if let deliver { respond(deliver) }
        case .response(let id, let body, let tooLarge):
            log.drain()
            if tooLarge {
                respond(.json(.payloadTooLarge, #"{"errorMessage":"Exceeded maximum allowed payload size (6291556 bytes).","errorType":"RequestEntityTooLarge"}"#))
                if complete(id, .failed(.responseTooLarge)) == false { return }
                return
            }
            respond(complete(id, .response(body)) ? .accepted : Self.invalidID)
        case .error(let id, let body, let type):
            log.drain()
            respond(complete(id, .functionError(body, type: type)) ? .accepted : Self.invalidID)
        case .initError(let body, let type):
            log.drain()
            let initializing = state.withLock { !$0.initDone || $0.current != nil }
            respond(.accepted)
            if initializing {
                // Fail the waiter (or the invocation that is waiting on init) with the runtime's own document.
                fail(.initError(body, type: type))
            }
        }
    }

    static let invalidID = RuntimeAPIResponse.json(.badRequest, #"{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}"#)

    private func complete(_ id: String, _ outcome: InvocationOutcome) -> Bool {
        let pending = state.withLock { s -> Pending? in
            guard let p = s.current, p.delivered, p.request.requestID == id else { return nil }
            s.current = nil
            return p
        }
        guard let pending else { return false }
        pending.timer?.cancel()
        pending.continuation.resume(returning: outcome)
        if case .failed(let f) = outcome { fail(f) }
        return true
    }

    static func nextResponse(_ r: InvocationRequest, deadlineMs: Int64) -> RuntimeAPIResponse {
        var headers: [(String, String)] = [
            ("Content-Type", "application/json"),
            ("Lambda-Runtime-Aws-Request-Id", r.requestID),
            ("Lambda-Runtime-Deadline-Ms", "\(deadlineMs)"),
            ("Lambda-Runtime-Invoked-Function-Arn", r.invokedARN),
            ("Lambda-Runtime-Trace-Id", r.traceID),
        ]
        if let c = r.clientContext { headers.append(("Lambda-Runtime-Client-Context", c)) }
        if let c = r.cognitoIdentity { headers.append(("Lambda-Runtime-Cognito-Identity", c)) }
        return RuntimeAPIResponse(status: .ok, headers: headers, body: r.payload)
    }
}
