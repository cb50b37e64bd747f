import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// Everything an instance writes to stdout/stderr, plus the platform's own
/// lines (START, END, REPORT), in order. Lines go to the log store in batches
/// (stream per instance) and, while an invocation runs, into its tail.
final class InstanceLog: Sendable {
    let group: String
    let stream: String
    let sink: LogSink
    /// The read end of the instance's output pipe (owned by the pipe channel).
    private let fd: Int32
    private struct State {
        var partial: [UInt8] = []
        var batch: [(timestamp: Int64, message: String)] = []
        var tail: [String]? = nil
    }
    private let state = Mutex(State())

    init(group: String, stream: String, sink: LogSink, fd: Int32) {
        self.group = group
        self.stream = stream
        self.sink = sink
        self.fd = fd
    }

    /// Starts reading the pipe on `loop`; the channel closes itself at EOF.
    func start(on loop: any EventLoop) -> EventLoopFuture<any Channel> {
        NIOPipeBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(PipeHandler(log: self))
                }
            }
            .takingOwnershipOfDescriptor(input: fd)
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
    static func nowMs() -> Double { Date().timeIntervalSince1970 * 1000 }

    /// Bytes from the pipe: split into lines (a line longer than 256 KiB is cut).
    func received(_ bytes: UnsafeRawBufferPointer) {
        state.withLock { s in
            for b in bytes {
                if b == 0x0a {
                    Self.emit(&s, String(decoding: s.partial, as: UTF8.self))
                    s.partial.removeAll(keepingCapacity: true)
                } else {
                    s.partial.append(b)
                    if s.partial.count >= 262_144 {
                        Self.emit(&s, String(decoding: s.partial, as: UTF8.self))
                        s.partial.removeAll(keepingCapacity: true)
                    }
                }
            }
            if s.batch.count >= 512 { flushLocked(&s) }
        }
    }

    /// Reads whatever is in the pipe right now. Call on the pipe's event loop, so
    /// it cannot interleave with the channel's own reads: what the function
    /// printed before it answered is then in the log before END.
    func drain() {
        var buf = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            buf.withUnsafeBytes { received(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
    }

    /// A line of the platform's own (START, END, REPORT, INIT_START).
    func platform(_ line: String) {
        state.withLock { s in Self.emit(&s, line) }
    }

    /// Starts collecting the tail of one invocation.
    /// `keep`: go on with the tail already collecting (a cold start's init output belongs to it).
    func beginTail(keep: Bool) { state.withLock { if !keep || $0.tail == nil { $0.tail = [] } } }

    /// Ends the invocation's tail: its last 4 KB (when `build`), and flushes the batch.
    func endTail(build: Bool = true) -> String {
        state.withLock { s in
            let lines = s.tail ?? []
            s.tail = nil
            flushLocked(&s)
            guard build else { return "" }
            let text = lines.map { $0 + "\n" }.joined()
            let bytes = Array(text.utf8)
            return bytes.count <= 4096 ? text : String(decoding: bytes.suffix(4096), as: UTF8.self)
        }
    }

    /// Ends a tail nobody will read (an instance initialized ahead), writing its lines.
    func endTailDiscarding() { _ = endTail() }

    /// Writes out what is pending (partial line included).
    func flush() {
        state.withLock { s in
            if !s.partial.isEmpty {
                Self.emit(&s, String(decoding: s.partial, as: UTF8.self))
                s.partial.removeAll()
            }
            flushLocked(&s)
        }
    }

    private func flushLocked(_ s: inout State) {
        guard !s.batch.isEmpty else { return }
        sink.write(group: group, stream: stream, lines: s.batch)
        s.batch.removeAll(keepingCapacity: true)
    }

    private static func emit(_ s: inout State, _ line: String) {
        s.batch.append((now(), line))
        if s.tail != nil {
            s.tail!.append(line)
            if s.tail!.count > 2_000 { s.tail!.removeFirst(s.tail!.count - 1_000) }
        }
    }
}

private final class PipeHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let log: InstanceLog
    init(log: InstanceLog) { self.log = log }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buf = unwrapInboundIn(data)
        buf.withUnsafeReadableBytes { log.received($0) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        log.flush()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelEvent, case .inputClosed = event as! ChannelEvent {
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }
}
