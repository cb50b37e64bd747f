import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// What a Runtime API request asks for, once parsed.
enum RuntimeAPIRequest {
    /// `initStartMs`: when the runtime began loading the handler (epoch ms; our bootstraps send it).
    case next(initStartMs: Double?)
    case response(requestID: String, body: ByteBuffer, tooLarge: Bool)
    case error(requestID: String, body: ByteBuffer, errorType: String?)
    case initError(body: ByteBuffer, errorType: String?)
    /// A response the runtime streams (`Lambda-Runtime-Function-Response-Mode: streaming`) begins.
    case streamStart(requestID: String, contentType: String?)
    /// A part of it.
    case streamChunk(requestID: String, ByteBuffer)
    /// Its end: the error trailers, if any, and whether it went over the limit.
    case streamEnd(requestID: String, errorType: String?, errorBody: ByteBuffer?, tooLarge: Bool)
}

/// One answer to the runtime.
struct RuntimeAPIResponse: Sendable {
    var status: HTTPResponseStatus
    var headers: [(String, String)] = []
    var body: ByteBuffer

    static func json(_ status: HTTPResponseStatus, _ text: String) -> RuntimeAPIResponse {
        RuntimeAPIResponse(status: status, headers: [("Content-Type", "application/json")], body: ByteBuffer(string: text))
    }
    static let accepted = json(.accepted, #"{"status":"OK"}"#)
}

/// Sends one response on the connection that asked (from any thread).
typealias RuntimeResponder = @Sendable (RuntimeAPIResponse) -> Void

/// The side of an instance the Runtime API talks to.
protocol RuntimeAPIDelegate: Sendable {
    func handle(_ request: RuntimeAPIRequest, respond: @escaping RuntimeResponder)
}

/// Serves the Runtime API on listening sockets that live inside one sandbox's
/// network namespace, on the instance's event loop: 127.0.0.1:9001 there (what
/// AWS_LAMBDA_RUNTIME_API names, as on Lambda) and an abstract AF_UNIX socket
/// (`abstractName`, in PETREL_RUNTIME_API_SOCKET), which Petrel's own runtimes
/// use. Both speak the same HTTP; the socket skips the TCP/IP stack on both sides
/// of each invocation's round trip (the event out, the response and the next
/// `next` back).
enum RuntimeAPIServer {
    static let maxBody = 6 * 1024 * 1024
    /// The abstract socket's name in every sandbox, in PETREL_RUNTIME_API_SOCKET with a
    /// leading `@` (as ss prints it); the address is the whole NUL-padded sun_path.
    static let abstractName = "petrel-runtime-api"

    static func start(listener fd: Int32, on loop: any EventLoop, delegate: any RuntimeAPIDelegate) -> EventLoopFuture<any Channel> {
        // TCP_NODELAY for TCP; NIO leaves it out on an AF_UNIX socket by itself.
        ServerBootstrap(group: loop)
            .serverChannelOption(.backlog, value: 128)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // No pipelining assistance: RuntimeAPIHandler keeps answers in order itself. NIO's
                    // handler stops reading while any request is unanswered, and `next` is unanswered
                    // until the event comes: two epoll_ctl on every invocation.
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withPipeliningAssistance: false, withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(RuntimeAPIHandler(delegate: delegate))
                }
            }
            .withBoundSocket(fd)
    }
}

/// Answers in the order the requests came (HTTP/1.1): every answer but `next`'s is
/// written at once; a request that arrives while `next` waits for its event waits
/// behind it, and reading stops while one does (only a runtime that sends more
/// behind its `next` meets that).
final class RuntimeAPIHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    let delegate: any RuntimeAPIDelegate
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var tooLarge = false
    /// Inside a read batch (between the first `channelRead` and `channelReadComplete`).
    private var reading = false
    /// A `next` has been received and not yet answered.
    private var nextOpen = false
    /// Answers written during the read and not flushed yet (see `channelReadComplete`).
    private var held = false
    /// Requests that came while `next` was open, in order, with their too-large flag.
    private var waiting: [(HTTPRequestHead, ByteBuffer, Bool)] = []
    private var reads = HeldReads()
    /// The request id of a response being streamed, and how many bytes came so far.
    private var streaming: (id: String, bytes: Int)?

    /// A streamed response's most (Lambda's: 20 MB).
    static let maxStreamed = 20 * 1_048_576

    init(delegate: any RuntimeAPIDelegate) { self.delegate = delegate }

    /// The request id when `head` posts a response in streaming mode (taken as it comes only
    /// while nothing waits ahead of it: order on the connection is kept).
    func streamedResponse(_ head: HTTPRequestHead) -> String? {
        guard head.method == .POST, !nextOpen, waiting.isEmpty,
            head.headers.first(name: "Lambda-Runtime-Function-Response-Mode")?.lowercased() == "streaming"
        else { return nil }
        let path = head.uri.split(separator: "?", maxSplits: 1).first ?? ""
        let parts = path.split(separator: "/")
        guard parts.count == 5, parts[0] == "2018-06-01", parts[1] == "runtime", parts[2] == "invocation", parts[4] == "response"
        else { return nil }
        return String(parts[3])
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reading = true
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = nil
            tooLarge = false
            streaming = streamedResponse(h).map { ($0, 0) }
            if let s = streaming {
                delegate.handle(.streamStart(requestID: s.id, contentType: h.headers.first(name: "Content-Type")), respond: { _ in })
            }
        case .body(var chunk):
            if let s = streaming {
                streaming!.bytes += chunk.readableBytes
                if s.bytes + chunk.readableBytes > Self.maxStreamed { tooLarge = true }
                if !tooLarge { delegate.handle(.streamChunk(requestID: s.id, chunk), respond: { _ in }) }
                return
            }
            if tooLarge { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > RuntimeAPIServer.maxBody {
                tooLarge = true
                body = nil
                return
            }
            if body == nil { body = chunk } else { body!.writeBuffer(&chunk) }
        case .end(let trailers):
            guard let head else { return }
            self.head = nil
            if let s = streaming {
                streaming = nil
                let errorBody = trailers?.first(name: "Lambda-Runtime-Function-Error-Body").flatMap { Data(base64Encoded: $0) }
                delegate.handle(
                    .streamEnd(
                        requestID: s.id, errorType: trailers?.first(name: "Lambda-Runtime-Function-Error-Type"),
                        errorBody: errorBody.map { ByteBuffer(bytes: $0) }, tooLarge: tooLarge),
                    respond: responder(head, context: context))
                return
            }
            if nextOpen || !waiting.isEmpty {
                waiting.append((head, body ?? ByteBuffer(), tooLarge))
                return
            }
            route(head, body ?? ByteBuffer(), tooLarge: tooLarge, context: context)
        }
    }

    func read(context: ChannelHandlerContext) {
        reads.read(context: context, holding: !waiting.isEmpty)
    }

    /// Routes the requests that waited for `next`'s answer, until another `next` waits.
    private func routeWaiting(context: ChannelHandlerContext) {
        while !nextOpen, !waiting.isEmpty {
            let (head, body, tooLarge) = waiting.removeFirst()
            route(head, body, tooLarge: tooLarge, context: context)
        }
        if waiting.isEmpty { reads.released(context: context) }
    }

    /// Answers written during a read go out at its end, unless a `next` is open then:
    /// a runtime that sends its `next` right behind its response (ours do: HTTP/1.1
    /// pipelining) gets the 202 together with the next event, one wake-up instead of
    /// two. A runtime that waits for the 202 before asking again gets it at the end of
    /// the read.
    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        if held && !nextOpen {
            held = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    /// Answers `head` on this connection (from any thread).
    private func responder(_ head: HTTPRequestHead, context: ChannelHandlerContext) -> RuntimeResponder {
        let keepAlive = head.isKeepAlive
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let loop = context.eventLoop
        return { response in
            if loop.inEventLoop {
                bound.value.0.write(response, keepAlive: keepAlive, context: bound.value.1)
            } else {
                loop.execute { bound.value.0.write(response, keepAlive: keepAlive, context: bound.value.1) }
            }
        }
    }

    private func route(_ head: HTTPRequestHead, _ body: ByteBuffer, tooLarge: Bool, context: ChannelHandlerContext) {
        let respond = responder(head, context: context)
        // /2018-06-01/runtime/invocation/next, …/invocation/ID/response|error, …/init/error,
        // matched as bytes (this runs twice per invocation).
        let uri = head.uri.utf8
        let path = uri.firstIndex(of: UInt8(ascii: "?")).map { uri[..<$0] } ?? uri[...]
        let base = "/2018-06-01/runtime/".utf8
        guard path.starts(with: base) else { return respond(Self.unknown(path)) }
        let rest = path.dropFirst(base.count)
        if head.method == .GET, rest.elementsEqual("invocation/next".utf8) {
            nextOpen = true
            delegate.handle(.next(initStartMs: head.headers.first(name: "Petrel-Init-Start").flatMap(Double.init)), respond: respond)
            return
        }
        guard head.method == .POST else { return respond(Self.unknown(path)) }
        if rest.elementsEqual("init/error".utf8) {
            return delegate.handle(
                .initError(body: body, errorType: head.headers.first(name: "Lambda-Runtime-Function-Error-Type")), respond: respond)
        }
        let invocation = "invocation/".utf8
        guard rest.starts(with: invocation) else { return respond(Self.unknown(path)) }
        let idAndVerb = rest.dropFirst(invocation.count)
        guard let slash = idAndVerb.firstIndex(of: UInt8(ascii: "/")) else { return respond(Self.unknown(path)) }
        let id = String(Substring(idAndVerb[..<slash]))
        let verb = idAndVerb[idAndVerb.index(after: slash)...]
        if id.isEmpty {
            respond(Self.unknown(path))
        } else if verb.elementsEqual("response".utf8) {
            delegate.handle(.response(requestID: id, body: body, tooLarge: tooLarge), respond: respond)
        } else if verb.elementsEqual("error".utf8) {
            delegate.handle(
                .error(requestID: id, body: body, errorType: head.headers.first(name: "Lambda-Runtime-Function-Error-Type")),
                respond: respond)
        } else {
            respond(Self.unknown(path))
        }
    }

    static func unknown(_ path: Substring.UTF8View) -> RuntimeAPIResponse {
        .json(
            .notFound,
            #"{"errorMessage":"# + EventDocuments.string("unknown path " + String(Substring(path))) + #","errorType":"InvalidRequest"}"#)
    }

    private func write(_ r: RuntimeAPIResponse, keepAlive: Bool, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        // Answers to `next` (the only ones that come later) close it; any answer written
        // while `next` is open is that one's. Requests that waited behind it go on after it.
        let wasNext = nextOpen
        nextOpen = false
        defer { if wasNext { routeWaiting(context: context) } }
        var headers = HTTPHeaders(r.headers)
        headers.replaceOrAdd(name: "Content-Length", value: "\(r.body.readableBytes)")
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        context.write(
            NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: r.status, headers: headers))), promise: nil)
        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(r.body))), promise: nil)
        if reading && keepAlive {
            context.write(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil)
            held = true
            return
        }
        held = false
        let done = context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
