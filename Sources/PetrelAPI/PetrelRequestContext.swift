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

    /// The function named in the path, when the request did not come through the router
    /// (`FastPathHandler`); the router's requests have it in `parameters`.
    var functionName: Substring?

    public init(source: ApplicationRequestContextSource) {
        self.init(source: source, remoteAddress: source.channel.remoteAddress?.ipAddress ?? "unknown")
    }

    /// With the peer's address already known (it is the same for every request of a connection).
    init(source: ApplicationRequestContextSource, remoteAddress: String) {
        coreContext = .init(source: source)
        eventLoop = source.channel.eventLoop
        self.remoteAddress = remoteAddress
        fromLoopback = Self.isLoopback(remoteAddress)
    }

    /// The raw `{name}` of the path.
    var rawFunctionName: String? { functionName.map(String.init) ?? parameters.get("name") }

    /// 127.0.0.0/8, ::1 and IPv4-mapped 127.0.0.0/8.
    public static func isLoopback(_ ip: String) -> Bool {
        ip == "::1" || ip.hasPrefix("127.") || ip.hasPrefix("::ffff:127.")
    }
}
