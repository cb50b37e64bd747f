import Foundation
import NIOCore
import PetrelCore

/// One synchronous invocation as the API hands it to the runtime.
public struct InvocationRequest: Sendable {
    public var requestID: String
    public var payload: ByteBuffer
    public var invokedARN: String
    public var clientContext: String?
    public var cognitoIdentity: String?
    public var traceID: String
    /// Whether the caller wants the log's tail (LogType: Tail); building it costs.
    public var wantsLogTail = true
    /// The alias the caller invoked through, if any (a label of the invocation's metrics).
    public var alias: String?
    /// Whether it came through a function URL (a label of the invocation's metrics).
    public var viaURL = false
    /// Where a response the runtime streams goes as it arrives (nil: it is gathered and
    /// answered whole, as Invoke answers it).
    public var stream: ResponseStream?

    public init(
        requestID: String = FastIDs.uuid(), payload: ByteBuffer, invokedARN: String,
        clientContext: String? = nil, cognitoIdentity: String? = nil, traceID: String = InvocationRequest.newTraceID()
    ) {
        self.requestID = requestID
        self.payload = payload
        self.invokedARN = invokedARN
        self.clientContext = clientContext
        self.cognitoIdentity = cognitoIdentity
        self.traceID = traceID
    }

    /// X-Ray's trace header format.
    public static func newTraceID() -> String {
        let epoch = FastIDs.hex(UInt64(Date().timeIntervalSince1970), 8)
        let rand = FastIDs.hex(FastIDs.next(), 16) + FastIDs.hex(FastIDs.next(), 8)
        let parent = FastIDs.hex(FastIDs.next(), 16)
        return "Root=1-\(epoch)-\(rand);Parent=\(parent);Sampled=0"
    }
}

/// The receiver of a streamed response, called on the instance's event loop in order:
/// `begin` with the runtime's content type, then `write` with each part.
public final class ResponseStream: Sendable {
    let begin: @Sendable (String?) -> Void
    let write: @Sendable (ByteBuffer) -> Void
    public init(begin: @escaping @Sendable (String?) -> Void = { _ in }, _ write: @escaping @Sendable (ByteBuffer) -> Void) {
        self.begin = begin
        self.write = write
    }
}

/// What an invocation produced.
public struct InvocationResult: Sendable {
    /// The function's response, or Lambda's error document.
    public var payload: ByteBuffer
    /// `Unhandled` when the function failed (X-Amz-Function-Error).
    public var functionError: String?
    /// The error's type when it failed (the runtime's, or the platform's: Sandbox.Timedout, Runtime.OutOfMemory …).
    public var errorType: String?
    /// The invocation's log (START … REPORT), at most its last 4 KB.
    public var logTail: String
    /// The journal sequence number of the invocation's last log batch (see `LogSink.sync`).
    public var logSequence: UInt64?
    public var executedVersion: String
    public var coldStart: Bool
    public var durationMs: Double
    public var initDurationMs: Double?
    /// On a cold start: how the time before the first invocation was spent.
    public var phases: ColdStartPhases?
}

/// A cold start, split: making the sandbox, the runtime's own start (until it
/// loads the handler), and the function's init (loading the handler until the
/// runtime asks for work). The last two need the runtime's help (our
/// bootstraps send `Petrel-Init-Start`); custom runtimes only report the total.
public struct ColdStartPhases: Sendable, Equatable {
    public var sandboxMs: Double
    public var runtimeStartMs: Double?
    public var functionInitMs: Double?
    public var start: StartPath
}

/// How a cold start got its runtime: pre-started (see `StemSpec`), or started fresh, and why.
public enum StartPath: Sendable, Equatable, CustomStringConvertible {
    case prestarted
    case fresh(Fresh)

    public enum Fresh: Sendable, Equatable {
        /// `[instances] prestarted_per_runtime = 0`.
        case disabled
        /// Only python3.11 and nodejs20.x are pre-started.
        case runtime
        /// The sandbox policy's open-files limit leaves no room for the stem socket.
        case policy
        /// Attached to an operator's network (such sandboxes are not pooled).
        case network
        /// The function sets a variable that its interpreter reads when it starts.
        case environment(String)
        /// None was ready (a burst larger than the pool, or the first start of its kind).
        case noneReady
    }

    /// `prestarted`, or `fresh (why)`: the `X-Petrel-Start` header.
    public var description: String {
        switch self {
        case .prestarted: "prestarted"
        case .fresh(let why):
            switch why {
            case .disabled: "fresh (disabled)"
            case .runtime: "fresh (runtime)"
            case .policy: "fresh (policy)"
            case .network: "fresh (network)"
            case .environment(let name): "fresh (environment \(name))"
            case .noneReady: "fresh (none ready)"
            }
        }
    }

    /// The metrics' `start` label.
    public var label: String {
        if case .prestarted = self { return "prestarted" }
        return "fresh"
    }
}

/// How an invocation ended inside an instance.
enum InvocationOutcome: Sendable {
    case response(ByteBuffer)
    case functionError(ByteBuffer, type: String?)
    /// The instance is gone (or must go): timeout, exit, OOM, init failure, oversize response.
    case failed(InstanceFailure)
}

/// Why an instance stopped being usable, in Lambda's error types.
enum InstanceFailure: Sendable, Error {
    case timedOut(seconds: Double)
    case initError(ByteBuffer, type: String?)
    case initTimedOut(seconds: Double)
    case exited(report: ExitDescription)
    case responseTooLarge
    case startFailed(String)

    struct ExitDescription: Sendable {
        var oom: Bool
        var exitCode: Int?
        var signal: Int?
        var startError: String?
    }

    /// The error document the caller receives.
    func document(requestID: String) -> (type: String, json: String) {
        func doc(_ type: String, _ message: String) -> (String, String) {
            let body: [String: String] = ["errorType": type, "errorMessage": message]
            let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data()
            return (type, String(decoding: data, as: UTF8.self))
        }
        switch self {
        case .timedOut(let s):
            return doc("Sandbox.Timedout", "RequestId: \(requestID) Error: Task timed out after \(String(format: "%.2f", s)) seconds")
        case .initTimedOut(let s):
            return doc("Sandbox.Timedout", "RequestId: \(requestID) Error: Init phase timed out after \(String(format: "%.2f", s)) seconds")
        case .initError(let body, let type):
            return (type ?? "Runtime.Unknown", String(buffer: body))
        case .exited(let e):
            if e.oom {
                return doc("Runtime.OutOfMemory", "RequestId: \(requestID) Error: Runtime exited with error: signal: killed")
            }
            if let s = e.startError {
                return doc("Runtime.InvalidEntrypoint", "RequestId: \(requestID) Error: Couldn't start the runtime: \(s)")
            }
            if let sig = e.signal {
                return doc("Runtime.ExitError", "RequestId: \(requestID) Error: Runtime exited with error: signal: \(Self.signalName(sig))")
            }
            return doc("Runtime.ExitError", "RequestId: \(requestID) Error: Runtime exited with error: exit status \(e.exitCode ?? 0)")
        case .responseTooLarge:
            return doc("Function.ResponseSizeTooLarge", "Response payload size exceeded maximum allowed payload size (6291556 bytes).")
        case .startFailed(let m):
            return doc("Runtime.Unknown", "RequestId: \(requestID) Error: \(m)")
        }
    }

    /// The `Status:` part of the REPORT line.
    var reportStatus: String {
        switch self {
        case .timedOut, .initTimedOut: "timeout"
        default: "error\tError Type: \(document(requestID: "").type)"
        }
    }

    static func signalName(_ s: Int) -> String {
        switch s {
        case 9: "killed"
        case 11: "segmentation fault"
        case 6: "aborted"
        case 15: "terminated"
        default: "signal \(s)"
        }
    }
}
