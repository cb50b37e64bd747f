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
    /// Whether its runtime was pre-started, or why not.
    let start: StartPath
    /// From when (monotonic nanoseconds) an invocation that starts could outlive the credentials
    /// in the instance's environment: its function's timeout and 5 s before they expire.
    let credentialsRetireAt: UInt64?

    /// The instance's credentials would expire during an invocation that starts now: it takes
    /// no more work, and the next start gets fresh ones. One clock read, asked at every take.
    var credentialsExpiring: Bool {
        guard let at = credentialsRetireAt else { return false }
        return Sys.monotonicNanoseconds() >= at
    }

    private struct Pending {
        var request: InvocationRequest
        var deadlineMs: Int64
        var delivered: Bool
        var continuation: CheckedContinuation<InvocationOutcome, Never>
        var timer: Scheduled<Void>?
        /// A streamed response gathered for a caller that takes it whole (within 6 MB).
        var gathered: ByteBuffer?
        var gatheredTooLarge = false
    }

    /// Where the instance is in its life. Every transition happens under the state's
    /// lock, and every waiter (init, an invocation, the final report) is a continuation
    /// resumed by the transition it waits for: nothing polls.
    private enum Phase {
        /// Started; the runtime has not asked for work yet. `waiter`: `waitInitialized`.
        case initializing(waiter: CheckedContinuation<Void, any Error>?)
        /// Initialized, no invocation.
        case ready
        /// An invocation, delivered to the runtime or waiting for its `next`.
        case busy(Pending)
        /// Done for (killed, crashed, timed out): every later call gets this.
        case failed(InstanceFailure)
    }

    private struct State {
        var phase = Phase.initializing(waiter: nil)
        /// The runtime's `next`, while it waits for work.
        var parkedNext: RuntimeResponder?
        var initDurationMs: Double?
        var phases: ColdStartPhases?
        var servers: [any Channel] = []
        /// The sandbox's last report, once it has ended and been torn down.
        var report: SandboxReport?
        var reportWaiters: [Int: CheckedContinuation<SandboxReport?, Never>] = [:]
        var nextWaiter = 0

        var failure: InstanceFailure? {
            if case .failed(let f) = phase { return f }
            return nil
        }
    }
    private let state = Mutex(State())

    init(
        id: String, function: FunctionRecord, sandbox: Sandbox, log: InstanceLog, loop: any EventLoop, logger: Logger, sandboxMs: Double,
        credentialsExpire: Int64?, start: StartPath
    ) {
        self.sandboxMs = sandboxMs
        self.start = start
        credentialsRetireAt = credentialsExpire.map { expires in
            let left = expires - Int64(Date().timeIntervalSince1970) - Int64(function.timeoutSeconds) - 5
            return Sys.monotonicNanoseconds() &+ UInt64(max(0, left)) * 1_000_000_000
        }
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
    var isUsable: Bool { state.withLock { $0.failure == nil && $0.report == nil } }

    /// The Runtime API's listeners: each channel owns its fd from here on.
    func attach(servers: [EventLoopFuture<any Channel>]) {
        for server in servers {
            server.whenComplete { [self] result in
                switch result {
                case .success(let ch):
                    let close = state.withLock { s -> Bool in
                        if s.report != nil { return true }
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
        let timer = loop.scheduleTask(in: TimeAmount(timeout)) { [self] in
            let fire = state.withLock { s -> Bool in
                if case .initializing = s.phase { return true }
                return false
            }
            if fire { fail(.initTimedOut(seconds: Double(timeout.components.seconds))) }
        }
        defer { timer.cancel() }
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, any Error>) in
            let resume: Result<Void, InstanceFailure>? = state.withLock { s in
                switch s.phase {
                case .failed(let f): return .failure(f)
                case .ready, .busy: return .success(())
                case .initializing:
                    s.phase = .initializing(waiter: cont)
                    return nil
                }
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
            if running(rid) { fail(.timedOut(seconds: Double(timeoutSeconds))) }
        }
        return await withCheckedContinuation { (cont: CheckedContinuation<InvocationOutcome, Never>) in
            enum Next {
                case failed(InstanceFailure)
                case deliver(RuntimeResponder)
                case wait
            }
            let next: Next = state.withLock { s in
                switch s.phase {
                case .failed(let f): return .failed(f)
                case .initializing: return .failed(.startFailed("invoked before its runtime initialized"))
                case .busy: preconditionFailure("an instance runs one invocation at a time")
                case .ready: break
                }
                var p = Pending(request: request, deadlineMs: deadlineMs, delivered: false, continuation: cont)
                if let parked = s.parkedNext {
                    s.parkedNext = nil
                    p.delivered = true
                    s.phase = .busy(p)
                    return .deliver(parked)
                }
                s.phase = .busy(p)
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
            guard case .busy(var p) = s.phase, p.request.requestID == rid else { return false }
            p.timer = timer
            s.phase = .busy(p)
            return true
        }
        if !keep { timer.cancel() }
    }

    /// The invocation running now, if it is `rid`.
    private func running(_ rid: String) -> Bool {
        state.withLock { s in
            if case .busy(let p) = s.phase { return p.request.requestID == rid }
            return false
        }
    }

    /// Ends the instance (the first failure is the one it keeps): every waiter gets it.
    func fail(_ failure: InstanceFailure) {
        let (waiter, pending) = state.withLock { s -> (CheckedContinuation<Void, any Error>?, Pending?) in
            switch s.phase {
            case .failed: return (nil, nil)
            case .initializing(let w):
                s.phase = .failed(failure)
                return (w, nil)
            case .busy(let p):
                s.phase = .failed(failure)
                return (nil, p)
            case .ready:
                s.phase = .failed(failure)
                return (nil, nil)
            }
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
        let ex = InstanceFailure.exited(
            report: .init(
                oom: report.oomKilled, exitCode: report.exitCode,
                signal: report.signal, startError: report.startError))
        let (servers, waiters) = state.withLock { s -> ([any Channel], [CheckedContinuation<SandboxReport?, Never>]) in
            s.report = report
            defer {
                s.servers = []
                s.reportWaiters = [:]
            }
            return (s.servers, Array(s.reportWaiters.values))
        }
        fail(ex)
        // A listener whose channel is not up yet is closed when it comes up (see attach).
        for server in servers { server.close(promise: nil) }
        for w in waiters { w.resume(returning: report) }
        log.flush()
    }

    /// The sandbox's final report, once it has ended (waits at most `limit`; nil then).
    func finalReport(within limit: Duration) async -> SandboxReport? {
        await withCheckedContinuation { (cont: CheckedContinuation<SandboxReport?, Never>) in
            let (ready, id) = state.withLock { s -> (SandboxReport??, Int) in
                if let r = s.report { return (.some(r), 0) }
                s.nextWaiter += 1
                s.reportWaiters[s.nextWaiter] = cont
                return (nil, s.nextWaiter)
            }
            if let ready {
                cont.resume(returning: ready)
                return
            }
            loop.scheduleTask(in: TimeAmount(limit)) { [self] in
                state.withLock { $0.reportWaiters.removeValue(forKey: id) }?.resume(returning: nil)
            }
        }
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
            let (waiter, deliver, old) = state.withLock {
                s -> (CheckedContinuation<Void, any Error>?, RuntimeAPIResponse?, RuntimeResponder?) in
                switch s.phase {
                case .failed:
                    return (nil, nil, nil)
                case .initializing(let waiter):
                    initJustDone = true
                    s.initDurationMs = Double(DispatchTime.now().uptimeNanoseconds - launchedNanos) / 1e6
                    if let initStartMs, initStartMs >= launchedEpochMs {
                        s.phases = ColdStartPhases(
                            sandboxMs: sandboxMs, runtimeStartMs: initStartMs - launchedEpochMs,
                            functionInitMs: InstanceLog.nowMs() - initStartMs, start: start)
                    } else {
                        s.phases = ColdStartPhases(sandboxMs: sandboxMs, runtimeStartMs: nil, functionInitMs: nil, start: start)
                    }
                    s.phase = .ready
                    s.parkedNext = respond
                    return (waiter, nil, nil)
                case .busy(var p) where !p.delivered:
                    p.delivered = true
                    s.phase = .busy(p)
                    return (nil, Self.nextResponse(p.request, deadlineMs: p.deadlineMs), nil)
                case .ready, .busy:
                    let old = s.parkedNext
                    s.parkedNext = respond
                    return (nil, nil, old)
                }
            }
            old?(.json(.conflict, #"{"errorMessage":"another next request replaced this one","errorType":"InvalidStateTransition"}"#))
            if initJustDone {
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
                respond(
                    .json(
                        .payloadTooLarge,
                        #"{"errorMessage":"Exceeded maximum allowed payload size (6291556 bytes).","errorType":"RequestEntityTooLarge"}"#))
                if complete(id, .failed(.responseTooLarge)) == false { return }
                return
            }
            respond(complete(id, .response(body)) ? .accepted : Self.invalidID)
        case .error(let id, let body, let type):
            log.drain()
            respond(complete(id, .functionError(body, type: type)) ? .accepted : Self.invalidID)
        case .streamStart(let id, let contentType):
            let stream = state.withLock { s -> ResponseStream? in
                guard case .busy(let p) = s.phase, p.delivered, p.request.requestID == id else { return nil }
                return p.request.stream
            }
            stream?.begin(contentType)
        case .streamChunk(let id, let chunk):
            streamChunk(id, chunk)
        case .streamEnd(let id, let errorType, let errorBody, let streamTooLarge):
            log.drain()
            let (gathered, gatheredTooLarge) = state.withLock { s -> (ByteBuffer?, Bool) in
                guard case .busy(let p) = s.phase, p.request.requestID == id else { return (nil, false) }
                return (p.gathered, p.gatheredTooLarge)
            }
            let outcome: InvocationOutcome
            if let errorType {
                outcome = .functionError(errorBody ?? ByteBuffer(string: "{}"), type: errorType)
            } else if streamTooLarge || gatheredTooLarge {
                outcome = .failed(.responseTooLarge)
            } else {
                outcome = .response(gathered ?? ByteBuffer())
            }
            respond(complete(id, outcome) ? .accepted : Self.invalidID)
        case .initError(let body, let type):
            log.drain()
            let initializing = state.withLock { s -> Bool in
                switch s.phase {
                case .initializing, .busy: return true
                case .ready, .failed: return false
                }
            }
            respond(.accepted)
            if initializing {
                // Fail the waiter (or the invocation that is waiting on init) with the runtime's own document.
                fail(.initError(body, type: type))
            }
        }
    }

    /// A part of a streamed response: to the caller's stream as it comes, or gathered.
    private func streamChunk(_ id: String, _ chunk: ByteBuffer) {
        let stream = state.withLock { s -> ResponseStream? in
            guard case .busy(var p) = s.phase, p.delivered, p.request.requestID == id else { return nil }
            if let stream = p.request.stream { return stream }
            var chunk = chunk
            if (p.gathered?.readableBytes ?? 0) + chunk.readableBytes > Self.maxGathered {
                p.gatheredTooLarge = true
                p.gathered = nil
            } else if !p.gatheredTooLarge {
                if p.gathered == nil { p.gathered = chunk } else { p.gathered!.writeBuffer(&chunk) }
            }
            s.phase = .busy(p)
            return nil
        }
        stream?.write(chunk)
    }

    /// What a caller that takes the response whole may get of a streamed one (Invoke's 6 MB).
    static let maxGathered = 6_291_556

    static let invalidID = RuntimeAPIResponse.json(.badRequest, #"{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}"#)

    private func complete(_ id: String, _ outcome: InvocationOutcome) -> Bool {
        let pending = state.withLock { s -> Pending? in
            guard case .busy(let p) = s.phase, p.delivered, p.request.requestID == id else { return nil }
            s.phase = .ready
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
