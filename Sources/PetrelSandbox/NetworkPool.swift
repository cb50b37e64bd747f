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

/// Network namespaces are pooled: making one (with its firewall and veth pair)
/// costs milliseconds, so sandboxes take a ready one and the pool refills
/// off the hot path. Keyed by the firewall ruleset and the mode.
final class NetworkPool: Sendable {
    struct Key: Hashable { var rules: String; var mode: SandboxPolicy.NetworkMode }

    let subnet: IPv4CIDR
    let target: Int
    private let state = Mutex<(ready: [Key: [SandboxNetwork]], slots: Set<Int>)>(([:], []))

    init(subnet: IPv4CIDR, target: Int) {
        self.subnet = subnet
        self.target = target
    }

    var slotCount: Int { 1 << max(0, 30 - subnet.prefix) }

    func take(_ policy: SandboxPolicy.Network, mode: SandboxPolicy.NetworkMode) throws -> SandboxNetwork {
        let key = Key(rules: Firewall.rules(for: policy), mode: mode)
        let pooled: SandboxNetwork? = state.withLock { s in
            if s.ready[key] == nil { s.ready[key] = [] }
            return s.ready[key]!.popLast()
        }
        if let pooled { return pooled }
        return try make(key)
    }

    /// Makes namespaces until every key seen so far has `target` ready. Returns how many it made.
    @discardableResult
    func replenish() -> Int {
        var made = 0
        while true {
            let key: Key? = state.withLock { s in s.ready.first { $0.value.count < target }?.key }
            guard let key, let net = try? make(key) else { return made }
            state.withLock { s in s.ready[key, default: []].append(net) }
            made += 1
        }
    }

    func make(_ key: Key) throws -> SandboxNetwork {
        var err = [CChar](repeating: 0, count: 512)
        guard key.mode == .host else {
            let fd = petrel_netns_create(key.rules, nil, nil, nil, &err, 512)
            guard fd >= 0 else { throw SandboxError(.system, "network namespace: \(String(cBuffer: err))", errno: errno) }
            return SandboxNetwork(fd: fd, mode: .none, hostInterface: nil, gateway: nil, address: nil, slot: nil)
        }
        for _ in 0..<16 {
            let slot = try allocateSlot()
            let net = subnet.address & (subnet.prefix == 0 ? 0 : ~UInt32(0) << (32 - subnet.prefix))
            let base = net &+ UInt32(slot * 4)
            let gateway = IPv4CIDR.format(base + 1), inside = IPv4CIDR.format(base + 2)
            let name = "petrel\(slot)"
            if petrel_link_exists(name) != 0 { freeSlot(slot); continue } // another daemon's
            let fd = petrel_netns_create(key.rules, name, "\(inside)/30", gateway, &err, 512)
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

    func drain() {
        let all = state.withLock { s in
            let a = s.ready.values.flatMap { $0 }
            s.ready = [:]
            return a
        }
        all.forEach(release)
    }

    private func allocateSlot() throws -> Int {
        let count = slotCount
        return try state.withLock { s in
            guard s.slots.count < count else { throw SandboxError(.exhausted, "all \(count) sandbox networks in \(subnet) are in use") }
            while true {
                let i = Int.random(in: 0..<count)
                if s.slots.insert(i).inserted { return i }
            }
        }
    }

    private func freeSlot(_ i: Int) { _ = state.withLock { $0.slots.remove(i) } }
}
