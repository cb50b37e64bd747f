import Foundation
import Histogram
import NIOCore
import NIOHTTP1
import NIOPosix
import PetrelClient
import Synchronization

/// The load tool's engine: one keep-alive connection per caller, each driven
/// closed-loop on its event loop (the next request goes out from the handler
/// that read the last response), like wrk. No Swift task per request: the tool
/// should cost the machine far less than what it measures.
final class LoadDriver: Sendable {
    let host: String
    let port: Int
    let path: String
    let body: [UInt8]
    /// nil: requests go unsigned (a function URL with auth type NONE).
    let signer: SigV4Signer?
    let url: URL
    let deadline: NIODeadline
    let limit: Int?
    let issued = Atomic<Int>(0)
    let completed = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
    let throttled = Atomic<Int>(0)
    /// Signed headers per second (the date is the only thing that changes).
    private let signed = Mutex<(String, [(String, String)])>(("", []))

    /// Headers every request carries (beside the signature's): its content type, and an
    /// `X-Amz-Target` for the JSON protocols.
    let fixed: [String: String]

    /// `url`: another address to drive unsigned (a function URL) instead of the function's invoke endpoint.
    /// `event`: asynchronous invocations (`X-Amz-Invocation-Type: Event`, answered 202 once queued).
    convenience init(
        client: LambdaClient, function: String, url other: URL? = nil, event: Bool = false, body: [UInt8], seconds: Double, limit: Int?
    ) {
        var headers = ["Content-Type": "application/json"]
        if event { headers["X-Amz-Invocation-Type"] = "Event" }
        self.init(
            url: other ?? client.url("/2015-03-31/functions/\(function)/invocations"), signer: other == nil ? client.signer : nil,
            headers: headers, body: body, seconds: seconds, limit: limit)
    }

    /// Drives SQS's SendMessage or SendMessageBatch (`target`) with the same body each time.
    convenience init(client: LambdaClient, sqsTarget target: String, body: [UInt8], seconds: Double, limit: Int?) {
        var signer = client.signer
        signer.service = "sqs"
        self.init(
            url: client.url("/"), signer: signer,
            headers: ["Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS." + target], body: body, seconds: seconds,
            limit: limit)
    }

    private init(url: URL, signer: SigV4Signer?, headers: [String: String], body: [UInt8], seconds: Double, limit: Int?) {
        self.url = url
        host = url.host ?? "127.0.0.1"
        port = url.port ?? 80
        let c = URLComponents(url: url, resolvingAgainstBaseURL: false)!
        path = c.percentEncodedPath + (c.percentEncodedQuery.map { "?" + $0 } ?? "")
        self.body = body
        self.signer = signer
        fixed = headers
        deadline = .now() + .milliseconds(Int64(seconds * 1000))
        self.limit = limit
    }

    /// Takes a request slot; false when the run is over.
    func take() -> Bool {
        if NIODeadline.now() >= deadline { return false }
        if let limit, issued.wrappingAdd(1, ordering: .relaxed).oldValue >= limit { return false }
        return true
    }

    func headers() -> [(String, String)] {
        let now = Date()
        let stamp = String(Int(now.timeIntervalSince1970))
        if let cached = signed.withLock({ $0.0 == stamp ? $0.1 : nil }) { return cached }
        let base = fixed
        var h = base.map { ($0.key, $0.value) }
        if let signer { h += signer.sign(method: "POST", url: url, headers: base, body: body, date: now).map { ($0.key, $0.value) } }
        h.append(("Host", "\(host):\(port)"))
        h.append(("Content-Length", "\(body.count)"))
        h.append(("User-Agent", "petrel-load"))
        signed.withLock { $0 = (stamp, h) }
        return h
    }

    /// Runs `connections` closed loops; each returns its own figures.
    func run(connections: Int, group: MultiThreadedEventLoopGroup) async throws -> [LoadStats.Tally] {
        try await withThrowingTaskGroup(of: LoadStats.Tally.self) { tasks in
            for _ in 0..<connections {
                tasks.addTask {
                    let done = group.next().makePromise(of: LoadStats.Tally.self)
                    let channel = try await ClientBootstrap(group: group)
                        .channelOption(.socketOption(.tcp_nodelay), value: 1)
                        .channelInitializer { ch in
                            ch.eventLoop.makeCompletedFuture {
                                try ch.pipeline.syncOperations.addHTTPClientHandlers()
                                try ch.pipeline.syncOperations.addHandler(LoadConnection(driver: self, done: done))
                            }
                        }
                        .connect(host: self.host, port: self.port).get()
                    defer { channel.close(promise: nil) }
                    return try await done.futureResult.get()
                }
            }
            var out: [LoadStats.Tally] = []
            for try await t in tasks { out.append(t) }
            return out
        }
    }
}

/// One caller: sends, reads the answer, records it, sends the next.
final class LoadConnection: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    let driver: LoadDriver
    let done: EventLoopPromise<LoadStats.Tally>
    var tally = LoadStats.Tally()
    var sentAt = NIODeadline.now()
    var status = 0
    var functionError = false
    var cold = false
    var version: String?
    var errorBody: ByteBuffer?
    var finished = false

    func finish(_ context: ChannelHandlerContext) {
        guard !finished else { return }
        finished = true
        done.succeed(tally)
        context.close(promise: nil)
    }

    init(driver: LoadDriver, done: EventLoopPromise<LoadStats.Tally>) {
        self.driver = driver
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        sendNext(context)
        context.fireChannelActive()
    }

    func sendNext(_ context: ChannelHandlerContext) {
        guard driver.take() else { return finish(context) }
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: driver.path)
        for (k, v) in driver.headers() { head.headers.add(name: k, value: v) }
        sentAt = .now()
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: driver.body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            status = Int(h.status.code)
            functionError = h.headers.contains(name: "x-amz-function-error")
            cold = h.headers.contains(name: "x-petrel-init-duration")
            version = h.headers.first(name: "x-amz-executed-version")
            errorBody = functionError ? ByteBuffer() : nil
        case .body(var b):
            if errorBody != nil { errorBody!.writeBuffer(&b) }
        case .end:
            let us = UInt64(max(1, (NIODeadline.now() - sentAt).nanoseconds / 1000))
            _ = tally.histogram.record(us)
            tally.requests += 1
            if cold { tally.coldStarts += 1 }
            if let version { tally.versions[version, default: 0] += 1 }
            switch status {
            case 200 where functionError:
                var type = "Unhandled"
                if let b = errorBody, let bytes = b.getBytes(at: b.readerIndex, length: b.readableBytes),
                    let doc = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any], let t = doc["errorType"] as? String
                {
                    type = t
                }
                tally.errors["function: \(type)", default: 0] += 1
                driver.completed.wrappingAdd(1, ordering: .relaxed)
            case 200..<300:
                tally.ok += 1
                driver.completed.wrappingAdd(1, ordering: .relaxed)
            case 429:
                tally.throttles += 1
                driver.throttled.wrappingAdd(1, ordering: .relaxed)
            default:
                tally.errors["HTTP \(status)", default: 0] += 1
                driver.failures.wrappingAdd(1, ordering: .relaxed)
            }
            sendNext(context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        tally.errors["connection: \(error)", default: 0] += 1
        finish(context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !finished {
            finished = true
            done.succeed(tally)
        }
        context.fireChannelInactive()
    }
}
