import NIOCore

/// Reading from a connection that has requests waiting behind an earlier answer
/// (only a client that pipelines has any): a `read` is held back until they have
/// gone on, so such a client cannot fill the daemon's memory with requests it
/// sends ahead. Used by the API's Invoke handler and by the Runtime API.
public struct HeldReads: Sendable {
    private var pending = false

    public init() {}

    /// From the handler's `read(context:)`: passes the read on unless requests are held.
    public mutating func read(context: ChannelHandlerContext, holding: Bool) {
        if holding {
            pending = true
        } else {
            context.read()
        }
    }

    /// When the held requests have all gone on: the read held back, if any.
    public mutating func released(context: ChannelHandlerContext) {
        guard pending else { return }
        pending = false
        context.read()
    }
}
