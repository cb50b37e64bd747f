import CPetrelLinux
import Glibc
import Synchronization

/// One sandbox's network namespace, held open by `fd`.
public final class SandboxNetwork: Sendable {
    let fd: Int32
    /// Inode of the namespace (to prove later that nothing holds it any more).
    public let inode: UInt64
    public let mode: SandboxPolicy.NetworkMode
    /// Host-side veth name, gateway and the sandbox's own address (host mode).
    public let hostInterface: String?
    public let gateway: String?
    public let address: String?
    let slot: Int?
    /// On an operator's network: which, and so where the far end of the veth pair is.
    public let attachment: NetworkAttachment?

    init(
        fd: Int32, mode: SandboxPolicy.NetworkMode, hostInterface: String?, gateway: String?, address: String?, slot: Int?,
        attachment: NetworkAttachment? = nil
    ) {
        self.attachment = attachment
        self.fd = fd
        self.inode = Sys.inode(ofFD: fd) ?? 0
        self.mode = mode
        self.hostInterface = hostInterface
        self.gateway = gateway
        self.address = address
        self.slot = slot
    }
}

/// Makes sandbox network namespaces (firewall loaded; in host mode a veth pair
/// with a /30 of `subnet`; on an operator's network a veth pair with a /30 of its
/// subnet, whose far end is in the operator's namespace) and gives them back. They are
/// made off the request path, as part of a prepared sandbox.
final class SandboxNetworks: Sendable {
    let subnet: IPv4CIDR
    /// The /30 slots in use by this daemon, per pool: host mode's (`""`) and each operator network's
    /// (by name); and a counter that names the veths in operators' namespaces.
    private let slots = Mutex<(used: [String: Set<Int>], names: Int)>(([:], 0))

    init(subnet: IPv4CIDR) {
        self.subnet = subnet
    }

    func make(_ policy: SandboxPolicy.Network, mode: SandboxPolicy.NetworkMode, attachment: NetworkAttachment? = nil) throws
        -> SandboxNetwork
    {
        if let a = attachment {
            // Unique in the operator's namespace: this daemon's pid and a counter (15 bytes at most).
            let (slot, n) = try allocate(pool: a.network, in: a.subnet)
            let name = "pv\(getpid() % 100_000)n\(n % 100_000)"
            return try veth(
                Firewall.rules(for: policy, attachment: a), name: name, slot: slot, pool: a.network, in: a.subnet, attachment: a)
        }
        let rules = Firewall.rules(for: policy)
        guard mode == .host else {
            var err = [CChar](repeating: 0, count: 512)
            let fd = petrel_netns_create(rules, nil, nil, nil, nil, &err, 512)
            guard fd >= 0 else { throw SandboxError(.system, "network namespace: \(String(cBuffer: err))", errno: errno) }
            return SandboxNetwork(fd: fd, mode: .none, hostInterface: nil, gateway: nil, address: nil, slot: nil)
        }
        for _ in 0..<16 {
            let (slot, _) = try allocate(pool: "", in: subnet)
            let name = "petrel\(slot)"
            if petrel_link_exists(name) != 0 { // another daemon's
                free(pool: "", slot)
                continue
            }
            return try veth(rules, name: name, slot: slot, pool: "", in: subnet, attachment: nil)
        }
        throw SandboxError(.exhausted, "no free address for a sandbox in \(subnet)")
    }

    /// A namespace with a veth pair on `slot` of `subnet`: `eth0` inside, the gateway end named
    /// `name` here (host mode) or in the attachment's namespace, which then routes its traffic.
    private func veth(
        _ rules: String, name: String, slot: Int, pool: String, in subnet: IPv4CIDR, attachment a: NetworkAttachment?
    ) throws -> SandboxNetwork {
        let net = subnet.address & (subnet.prefix == 0 ? 0 : ~UInt32(0) << (32 - subnet.prefix))
        let base = net &+ UInt32(slot * 4)
        let gateway = IPv4CIDR.format(base + 1)
        let inside = IPv4CIDR.format(base + 2)
        var err = [CChar](repeating: 0, count: 512)
        let fd = petrel_netns_create(rules, name, "\(inside)/30", gateway, a?.namespace, &err, 512)
        guard fd >= 0 else {
            free(pool: pool, slot)
            throw SandboxError(.system, "network namespace\(a.map { " on \($0.network)" } ?? ""): \(String(cBuffer: err))", errno: errno)
        }
        let ip = ["/usr/sbin/ip"] + (a.map { ["-n", $0.namespace] } ?? [])
        do {
            try Sys.run(ip + ["-batch", "-"], stdin: "addr add \(gateway)/30 dev \(name)\nlink set \(name) up\n")
        } catch {
            deleteLink(name, attachment: a)
            Sys.close(fd)
            free(pool: pool, slot)
            throw error
        }
        return SandboxNetwork(fd: fd, mode: .host, hostInterface: name, gateway: gateway, address: inside, slot: slot, attachment: a)
    }

    func release(_ net: SandboxNetwork) {
        if let name = net.hostInterface { deleteLink(name, attachment: net.attachment) }
        Sys.close(net.fd)
        if let slot = net.slot { free(pool: net.attachment?.network ?? "", slot) }
    }

    private func deleteLink(_ name: String, attachment a: NetworkAttachment?) {
        if let a { try? Sys.run(["/usr/sbin/ip", "-n", a.namespace, "link", "del", name]) } else { _ = petrel_link_delete(name) }
    }

    /// A free /30 slot of `subnet` in `pool`, and the next veth number.
    private func allocate(pool: String, in subnet: IPv4CIDR) throws -> (slot: Int, name: Int) {
        let count = 1 << max(0, 30 - subnet.prefix)
        return try slots.withLock { s in
            var used = s.used[pool] ?? []
            guard used.count < count else {
                throw SandboxError(
                    .exhausted, "all \(count) sandbox networks in \(subnet)\(pool.isEmpty ? "" : " (network \(pool))") are in use")
            }
            var i = 0
            repeat { i = Int.random(in: 0..<count) } while !used.insert(i).inserted
            s.used[pool] = used
            s.names += 1
            return (i, s.names)
        }
    }

    private func free(pool: String, _ slot: Int) { _ = slots.withLock { $0.used[pool]?.remove(slot) } }
}
