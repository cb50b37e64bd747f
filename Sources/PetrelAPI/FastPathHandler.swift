import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTPTypes
import PetrelRuntime
import Synchronization

/// What a `FastPathHandler` answers: the requests it claims (by their head), the most
/// body it reads, and the answer (which runs the request pipeline's steps itself).
public struct FastPath: Sendable {
    /// The raw function name segment (or "" when there is none) of a request this path takes; nil: not its.
    var claim: @Sendable (HTTPRequest) -> String?
    var limit: Int
    var answer: @Sendable (Request, PetrelRequestContext) async -> Response
    var loops: LoopExecutors?
}

/// Requests answered from the connection's pipeline: synchronous Invoke on the API's
/// listener, every request on the function URLs' listener.
///
/// It sits in every connection's pipeline after the HTTP codec and before Hummingbird's
/// connection handling. It takes the requests its `FastPath` claims (for the API:
/// `POST /2015-03-31/functions/NAME/invocations`, which the router has no route for)
/// and answers each as one task on the connection's loop; the answer runs the same
/// steps as every routed operation (signature check, errors, audit). Everything else
/// passes through to Hummingbird. A warm invocation skips the async channel's streams
/// and writer, the router and the response writer. (`Scripts/bench invoke`'s URL rows put
/// a URL request beside a signed invoke, both through here.)
///
/// Order on a connection is kept: a request behind one still being answered (by
/// either side) waits until that answer has been written; for a client that
/// pipelines, reading stops too while requests are held.
public final class FastPathHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPRequestPart
    public typealias InboundOut = HTTPRequestPart
    public typealias OutboundIn = HTTPResponsePart
    public typealias OutboundOut = HTTPResponsePart

    let path: FastPath
    let logger: Logger

    /// An invocation being read (`running` false) or run (its answer not written yet).
    private var own: (head: HTTPRequest, name: String, body: ByteBuffer, running: Bool)?
    /// Requests handed to Hummingbird whose answers have not ended yet.
    private var passed = 0
    /// Parts that arrived while an earlier request was still being answered.
    private var held = CircularBuffer<HTTPRequestPart>()
    private var reads = HeldReads()
    /// The peer's address, formatted once per connection.
    private var peer: String?
    /// Graceful shutdown asked to close the connection while an invocation ran.
    private var quiesce: Any?

    public init(path: FastPath, logger: Logger) {
        self.path = path
        self.logger = logger
    }

    static let prefix = LambdaAPI.functionsPath + "/"
    static let suffix = "/invocations"

    /// The raw function name segment when `head` is a synchronous Invoke.
    static func invokeName(_ head: HTTPRequest) -> String? {
        // As bytes: Substring's hasSuffix and contains("/") go through Character
        // comparison and Foundation's string search, and this runs for every request.
        guard head.method == .post, let full = head.path else { return nil }
        let u = full.utf8
        let p = prefix.utf8
        let s = suffix.utf8
        let end = u.firstIndex(of: UInt8(ascii: "?")) ?? u.endIndex
        guard u.distance(from: u.startIndex, to: end) > p.count + s.count, u.starts(with: p) else { return nil }
        let nameStart = u.index(u.startIndex, offsetBy: p.count)
        let nameEnd = u.index(end, offsetBy: -s.count)
        guard u[nameEnd..<end].elementsEqual(s), !u[nameStart..<nameEnd].contains(UInt8(ascii: "/")) else { return nil }
        return String(Substring(u[nameStart..<nameEnd]))
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if !held.isEmpty || (own?.running ?? false) || !process(part, context: context) {
            held.append(part)
        }
    }

    /// One part, in order. Returns false when it must wait (an invocation behind
    /// Hummingbird's answers).
    private func process(_ part: HTTPRequestPart, context: ChannelHandlerContext) -> Bool {
        switch part {
        case .head(let head):
            if let name = path.claim(head) {
                if passed > 0 { return false }
                own = (head, name, context.channel.allocator.buffer(capacity: 0), false)
            } else {
                passed += 1
                context.fireChannelRead(wrapInboundOut(part))
            }
        case .body(var chunk):
            if own != nil {
                // Past the limit the rest is dropped; the answer then refuses the request as too large.
                let room = path.limit + 1 - own!.body.readableBytes
                if room > 0 {
                    if chunk.readableBytes > room { chunk.moveWriterIndex(to: chunk.readerIndex + room) }
                    own!.body.writeBuffer(&chunk)
                }
            } else {
                context.fireChannelRead(wrapInboundOut(part))
            }
        case .end:
            if own != nil {
                own!.running = true
                run(context: context)
            } else {
                context.fireChannelRead(wrapInboundOut(part))
            }
        }
        return true
    }

    private func run(context: ChannelHandlerContext) {
        guard let (head, name, body, _) = own else { return }
        if peer == nil { peer = context.channel.remoteAddress?.ipAddress ?? "unknown" }
        var ctx = PetrelRequestContext(
            source: ApplicationRequestContextSource(channel: context.channel, logger: logger), remoteAddress: peer!)
        ctx.functionName = Substring(name)
        let requestContext = ctx
        let request = Request(head: head, body: RequestBody(buffer: body))
        let answer = path.answer
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        let close = head.headerFields[.connection]?.lowercased() == "close"
        let task: @Sendable () async -> Void = {
            let response = await answer(request, requestContext)
            if response.body.contentLength == nil {
                // A body of unknown length (a streamed response): the head at once, then each
                // part as it is made, chunked.
                var head = response.head
                head.headerFields[.date] = HTTPDate.now()
                head.headerFields[.server] = LambdaAPI.serverName
                let send: @Sendable (HTTPResponsePart?) -> Void = { part in
                    loop.execute {
                        if let part {
                            bound.value.0.send(part, context: bound.value.1)
                        } else {
                            bound.value.0.finish(close: close, context: bound.value.1)
                        }
                    }
                }
                send(.head(head))
                try? await response.body.write(StreamingWriter(send: send))
                send(nil)
                return
            }
            let collector = Collector()
            try? await response.body.write(collector)
            var head = response.head
            head.headerFields[.date] = HTTPDate.now()
            head.headerFields[.server] = LambdaAPI.serverName
            head.headerFields[.contentLength] = String(collector.buffer.readableBytes)
            let out = (head, collector.buffer)
            if loop.inEventLoop {
                bound.value.0.answer(out.0, out.1, close: close, context: bound.value.1)
            } else {
                loop.execute { bound.value.0.answer(out.0, out.1, close: close, context: bound.value.1) }
            }
        }
        // The task belongs to its connection: the connection is not closed (not even by
        // graceful shutdown, see `userInboundEventTriggered`) before the task has answered.
        if let here = path.loops?.executor(for: loop) {
            Task(executorPreference: here, operation: task)
        } else {
            Task(operation: task)
        }
    }

    /// A part of a streamed answer, flushed at once.
    private func send(_ part: HTTPResponsePart, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        context.writeAndFlush(wrapOutboundOut(part), promise: nil)
    }

    /// The end of a streamed answer.
    private func finish(close: Bool, context: ChannelHandlerContext) {
        answer(nil, ByteBuffer(), close: close, context: context)
    }

    /// Writes an answer (`head` nil: its head and body went out already) and lets what waits behind it go on.
    private func answer(_ head: HTTPResponse?, _ body: ByteBuffer, close: Bool, context: ChannelHandlerContext) {
        own = nil
        guard context.channel.isActive else { return }
        if let head { context.write(wrapOutboundOut(.head(head)), promise: nil) }
        if body.readableBytes > 0 { context.write(wrapOutboundOut(.body(body)), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        if close {
            context.close(promise: nil)
            return
        }
        if let event = quiesce {
            quiesce = nil
            context.fireUserInboundEventTriggered(event)
        }
        resume(context: context)
    }

    /// Hands on what was held, as far as order allows, then lets reading go on.
    private func resume(context: ChannelHandlerContext) {
        var delivered = false
        while let part = held.first, !(own?.running ?? false), process(part, context: context) {
            held.removeFirst()
            delivered = true
        }
        if delivered { context.fireChannelReadComplete() }
        if held.isEmpty { reads.released(context: context) }
    }

    public func read(context: ChannelHandlerContext) {
        // Only while requests are held: holding reads during every invocation would cost
        // two epoll_ctl each.
        reads.read(context: context, holding: !held.isEmpty)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // Hummingbird's answers pass here; the end of one lets held requests go on.
        let isEnd: Bool
        if case .end = unwrapOutboundIn(data) { isEnd = true } else { isEnd = false }
        context.write(data, promise: promise)
        if isEnd, passed > 0 {
            passed -= 1
            if passed == 0 { resume(context: context) }
        }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent, own != nil {
            // Hummingbird would close the connection at once (it sees no request in progress).
            quiesce = event
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// Hands each part of a streamed body to the connection as it is written.
private struct StreamingWriter: ResponseBodyWriter {
    let send: @Sendable (HTTPResponsePart?) -> Void
    mutating func write(_ buffer: ByteBuffer) async throws {
        if buffer.readableBytes > 0 { send(.body(buffer)) }
    }
    mutating func write(contentsOf buffers: some Sequence<ByteBuffer>) async throws {
        for b in buffers { try await write(b) }
    }
    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}

/// Collects a response body that is already in memory.
private final class Collector: ResponseBodyWriter, @unchecked Sendable {
    var buffer = ByteBuffer()
    func write(_ b: ByteBuffer) async throws {
        if buffer.readableBytes == 0 {
            buffer = b
        } else {
            var b = b
            buffer.writeBuffer(&b)
        }
    }
    func finish(_ trailingHeaders: HTTPFields?) async throws {}
}

/// The `Date` header's value, made once a second.
enum HTTPDate {
    private static let cache = Mutex<(second: Int, text: String)>((-1, ""))

    static func now() -> String {
        var t = time(nil)
        let second = Int(t)
        if let hit = cache.withLock({ $0.second == second ? $0.text : nil }) { return hit }
        var tm = tm()
        gmtime_r(&t, &tm)
        var buf = [CChar](repeating: 0, count: 40)
        let n = strftime(&buf, buf.count, "%a, %d %b %Y %H:%M:%S GMT", &tm)
        let text = String(decoding: buf.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        cache.withLock { $0 = (second, text) }
        return text
    }
}
