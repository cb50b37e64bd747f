/// What an instance on an operator's network may reach: an IPv4 CIDR and, optionally, a port
/// or a range of ports (TCP and UDP). Written `10.1.0.0/16`, `10.1.2.3` (a /32),
/// `10.1.2.3:5432` or `10.1.0.0/16:8000-8100`.
public struct NetworkDestination: Hashable, Sendable, CustomStringConvertible {
    public var cidr: IPv4CIDR
    public var ports: ClosedRange<Int>?

    public init(parsing text: String) throws(SandboxError) {
        let bad = SandboxError(
            .invalidPolicy, "\(text) is not a destination: CIDR, CIDR:PORT or CIDR:LOW-HIGH (an address alone is a /32)")
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else { throw bad }
        let net = parts[0].contains("/") ? String(parts[0]) : parts[0] + "/32"
        guard let cidr = IPv4CIDR(net) else { throw bad }
        self.cidr = cidr
        if parts.count == 2 {
            let range = parts[1].split(separator: "-", omittingEmptySubsequences: false)
            guard range.count == 1 || range.count == 2, let low = Int(range[0]), let high = Int(range.last!), 1 <= low, low <= high,
                high <= 65_535
            else { throw bad }
            ports = low...high
        }
    }

    public var description: String {
        guard let ports else { return cidr.description }
        return cidr.description + ":" + (ports.count == 1 ? "\(ports.lowerBound)" : "\(ports.lowerBound)-\(ports.upperBound)")
    }

    /// nftables matches for this destination, one per protocol.
    var matches: [String] {
        guard let ports else { return ["ip daddr \(cidr) meta l4proto { tcp, udp }"] }
        let p = ports.count == 1 ? "\(ports.lowerBound)" : "\(ports.lowerBound)-\(ports.upperBound)"
        return ["ip daddr \(cidr) tcp dport \(p)", "ip daddr \(cidr) udp dport \(p)"]
    }
}

/// Where a function's instances attach (Lambda's VpcConfig, on the operator's own network):
/// each instance gets a veth pair whose far end, with a /30 of `subnet`, is in the operator's
/// network namespace `namespace` (which routes the traffic; Petrel never routes in the host's
/// own namespace). The instance reaches a destination only when both the network's `allow`
/// and one of its rule sets' (`groupAllow`) admit it; nothing comes in.
public struct NetworkAttachment: Hashable, Sendable {
    public var network: String
    public var namespace: String
    public var subnet: IPv4CIDR
    public var allow: [NetworkDestination]
    public var groups: [String]
    public var groupAllow: [NetworkDestination]

    public init(
        network: String, namespace: String, subnet: IPv4CIDR, allow: [NetworkDestination], groups: [String],
        groupAllow: [NetworkDestination]
    ) {
        self.network = network
        self.namespace = namespace
        self.subnet = subnet
        self.allow = allow
        self.groups = groups
        self.groupAllow = groupAllow
    }
}
