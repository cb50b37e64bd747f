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

    init(fd: Int32, mode: SandboxPolicy.NetworkMode, hostInterface: String?, gateway: String?, address: String?, slot: Int?) {
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

    func make(_ policy: SandboxPolicy.Network, mode: SandboxPolicy.NetworkMode) throws -> SandboxNetwork {
        let rules = Firewall.rules(for: policy)
        var err = [CChar](repeating: 0, count: 512)
        guard mode == .host else {
            let fd = petrel_netns_create(rules, nil, nil, nil, &err, 512)
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
            let fd = petrel_netns_create(rules, name, "\(inside)/30", gateway, &err, 512)
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

    func release(_ net: SandboxNetwork) {
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
