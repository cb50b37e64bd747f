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
/// with a /30 of `subnet`) and gives them back. They are made off the request
/// path, as part of a prepared sandbox.
final class SandboxNetworks: Sendable {
    let subnet: IPv4CIDR
    /// The /30 slots in use by this daemon.
    private let slots = Mutex<Set<Int>>([])

    init(subnet: IPv4CIDR) {
        self.subnet = subnet
    }

    var slotCount: Int { 1 << max(0, 30 - subnet.prefix) }

    func make(_ policy: SandboxPolicy.Network, mode: SandboxPolicy.NetworkMode, attachment: NetworkAttachment? = nil) throws
        -> SandboxNetwork
    {
        if let attachment { return try attach(attachment, rules: Firewall.rules(for: policy, attachment: attachment)) }
        let rules = Firewall.rules(for: policy)
        var err = [CChar](repeating: 0, count: 512)
        guard mode == .host else {
            let fd = petrel_netns_create(rules, nil, nil, nil, nil, &err, 512)
            guard fd >= 0 else { throw SandboxError(.system, "network namespace: \(String(cBuffer: err))", errno: errno) }
            return SandboxNetwork(fd: fd, mode: .none, hostInterface: nil, gateway: nil, address: nil, slot: nil)
        }
        for _ in 0..<16 {
            let slot = try allocateSlot()
            let net = subnet.address & (subnet.prefix == 0 ? 0 : ~UInt32(0) << (32 - subnet.prefix))
            let base = net &+ UInt32(slot * 4)
            let gateway = IPv4CIDR.format(base + 1)
            let inside = IPv4CIDR.format(base + 2)
            let name = "petrel\(slot)"
            if petrel_link_exists(name) != 0 {
                freeSlot(slot)
                continue
            } // another daemon's
            let fd = petrel_netns_create(rules, name, "\(inside)/30", gateway, nil, &err, 512)
            guard fd >= 0 else {
                freeSlot(slot)
                throw SandboxError(.system, "network namespace: \(String(cBuffer: err))", errno: errno)
            }
            do {
                try Sys.run(["/usr/sbin/ip", "-batch", "-"], stdin: "addr add \(gateway)/30 dev \(name)\nlink set \(name) up\n")
            } catch {
                _ = petrel_link_delete(name)
                Sys.close(fd)
                freeSlot(slot)
                throw error
            }
            return SandboxNetwork(fd: fd, mode: .host, hostInterface: name, gateway: gateway, address: inside, slot: slot)
        }
        throw SandboxError(.exhausted, "no free address for a sandbox in \(subnet)")
    }

    /// The /30 slots in use on each operator network, and a counter that names their veths.
    private let attached = Mutex<(slots: [String: Set<Int>], names: Int)>(([:], 0))

    /// A namespace on an operator's network: a veth pair whose far end, the instance's
    /// gateway, goes to the operator's namespace, which routes its traffic.
    func attach(_ a: NetworkAttachment, rules: String) throws -> SandboxNetwork {
        let count = 1 << max(0, 30 - a.subnet.prefix)
        let (slot, n) = try attached.withLock { s -> (Int, Int) in
            var used = s.slots[a.network] ?? []
            guard used.count < count else {
                throw SandboxError(.exhausted, "all \(count) instance addresses of the network \(a.network) (\(a.subnet)) are in use")
            }
            var i = 0
            repeat { i = Int.random(in: 0..<count) } while !used.insert(i).inserted
            s.slots[a.network] = used
            s.names += 1
            return (i, s.names)
        }
        func free() { attached.withLock { s in _ = s.slots[a.network]?.remove(slot) } }
        let net = a.subnet.address & (a.subnet.prefix == 0 ? 0 : ~UInt32(0) << (32 - a.subnet.prefix))
        let base = net &+ UInt32(slot * 4)
        let gateway = IPv4CIDR.format(base + 1)
        let inside = IPv4CIDR.format(base + 2)
        // Unique in the operator's namespace: this daemon's pid and a counter (15 bytes at most).
        let name = "pv\(getpid() % 100_000)n\(n % 100_000)"
        var err = [CChar](repeating: 0, count: 512)
        let fd = petrel_netns_create(rules, name, "\(inside)/30", gateway, a.namespace, &err, 512)
        guard fd >= 0 else {
            free()
            throw SandboxError(.system, "network namespace on \(a.network): \(String(cBuffer: err))", errno: errno)
        }
        do {
            try Sys.run(
                ["/usr/sbin/ip", "-n", a.namespace, "-batch", "-"], stdin: "addr add \(gateway)/30 dev \(name)\nlink set \(name) up\n")
        } catch {
            try? Sys.run(["/usr/sbin/ip", "-n", a.namespace, "link", "del", name])
            Sys.close(fd)
            free()
            throw error
        }
        return SandboxNetwork(fd: fd, mode: .host, hostInterface: name, gateway: gateway, address: inside, slot: slot, attachment: a)
    }

    func release(_ net: SandboxNetwork) {
        if let a = net.attachment {
            if let name = net.hostInterface { try? Sys.run(["/usr/sbin/ip", "-n", a.namespace, "link", "del", name]) }
            Sys.close(net.fd)
            if let slot = net.slot { attached.withLock { s in _ = s.slots[a.network]?.remove(slot) } }
            return
        }
        if let name = net.hostInterface { _ = petrel_link_delete(name) }
        Sys.close(net.fd)
        if let slot = net.slot { freeSlot(slot) }
    }

    private func allocateSlot() throws -> Int {
        let count = slotCount
        return try slots.withLock { s in
            guard s.count < count else { throw SandboxError(.exhausted, "all \(count) sandbox networks in \(subnet) are in use") }
            while true {
                let i = Int.random(in: 0..<count)
                if s.insert(i).inserted { return i }
            }
        }
    }

    private func freeSlot(_ i: Int) { _ = slots.withLock { $0.remove(i) } }
}
