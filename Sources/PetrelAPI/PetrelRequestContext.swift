import Hummingbird
import NIOCore

/// The request context of every route: Hummingbird's, plus where the request came from.
public struct PetrelRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The peer's IP address (the audit trail's source).
    public let remoteAddress: String
    public let fromLoopback: Bool
    /// The loop of the request's connection (invocations run their task there).
    public let eventLoop: any EventLoop

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        eventLoop = source.channel.eventLoop
        let peer = source.channel.remoteAddress
        remoteAddress = peer?.ipAddress ?? "unknown"
        fromLoopback = Self.isLoopback(remoteAddress)
    }

    /// 127.0.0.0/8, ::1 and IPv4-mapped 127.0.0.0/8.
    public static func isLoopback(_ ip: String) -> Bool {
        ip == "::1" || ip.hasPrefix("127.") || ip.hasPrefix("::ffff:127.")
    }
}
