import NIOCore
import NIOPosix

/// Petrel's own API inside a sandbox: a listener in the sandbox's network namespace
/// (127.0.0.1:`port` there, what `AWS_ENDPOINT_URL` names) whose connections are relayed,
/// byte for byte, to the daemon's API on its Unix socket. The function's SDK signs its
/// requests with the instance's credentials; the API checks them like any other client's.
/// Nothing else of the host is reachable this way, and nothing outside the sandbox reaches in.
enum APIRelay {
    static let port: UInt16 = 9002

    static func start(listener fd: Int32, on loop: any EventLoop, to socketPath: String) -> EventLoopFuture<any Channel> {
        // The accepted connection is registered (and starts reading) once its initializer is
        // done, i.e. once both ends of the relay are in place.
        return ServerBootstrap(group: loop)
            .childChannelInitializer { inbound in
                ClientBootstrap(group: inbound.eventLoop)
                    .connect(unixDomainSocketPath: socketPath)
                    .flatMap { outbound in
                        let (a, b) = RelayHandler.pair()
                        return outbound.pipeline.addHandler(b).flatMap { inbound.pipeline.addHandler(a) }
                    }
            }
            .withBoundSocket(fd)
    }
}

/// One side of a relay: what it reads goes to its partner's channel; it reads on only while
/// the partner can take more (so a slow side holds the other back), and closing either closes both.
final class RelayHandler: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Both handlers of a relay live on one event loop (the outbound channel is made on the inbound one's).
    private var partner: RelayHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    static func pair() -> (RelayHandler, RelayHandler) {
        let a = RelayHandler()
        let b = RelayHandler()
        a.partner = b
        b.partner = a
        return (a, b)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.forward(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) { partner?.flushForward() }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.closeForward()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if partner?.canTakeMore ?? true {
            context.read()
        } else {
            pendingRead = true
        }
    }

    private var canTakeMore: Bool { context?.channel.isWritable ?? false }

    private func forward(_ data: ByteBuffer) { context?.write(wrapOutboundOut(data), promise: nil) }
    private func flushForward() { context?.flush() }
    private func closeForward() { context?.close(promise: nil) }

    private func resumeReading() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }
}
