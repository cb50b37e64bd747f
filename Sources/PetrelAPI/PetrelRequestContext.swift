import Hummingbird
import NIOCore

/// The request context of every route: Hummingbird's, plus where the request came from.
public struct PetrelRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The peer's IP address (the audit trail's source).
    public let remoteAddress: String
    public let fromLoopback: Bool

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        let peer = source.channel.remoteAddress
        remoteAddress = peer?.ipAddress ?? "unknown"
        fromLoopback = remoteAddress == "::1" || remoteAddress.hasPrefix("127.") || remoteAddress.hasPrefix("::ffff:127.")
    }
}
