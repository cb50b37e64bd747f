import PetrelTOML

/// An isolation policy: what a sandbox may call, reach and use. Platform teams
/// write these as TOML (`Config/policies/*.toml`); the keys and defaults here
/// are the ones documented in `Config/policies/default.toml`.
public struct SandboxPolicy: Sendable, Equatable {
    public enum NetworkMode: String, Sendable, Equatable, CaseIterable {
        /// Loopback only.
        case none
        /// A veth pair whose host side is the sandbox's default gateway.
        case host
    }

    public struct Seccomp: Sendable, Hashable {
        /// System calls that fail with `errno` (on top of the always-blocked set).
        public var deny: [String]
        public var errno: String
        /// AF_NETLINK sockets of the NETLINK_ROUTE family (reads: getifaddrs, getaddrinfo).
        public var allowNetlinkRoute: Bool
    }

    public struct Network: Sendable, Hashable {
        public var mode: NetworkMode
        /// Outbound TCP ports refused with a reset; 25 is refused whatever this says.
        public var denyTCPPorts: [Int]
        /// IPv4 destinations (CIDR) refused in host mode.
        public var denyCIDRs: [String]
    }

    public struct Resources: Sendable, Equatable {
        /// Memory that buys one full CPU (Lambda: 1,769 MB).
        public var mbPerCPU: Int
        public var pidsMax: Int
        public var openFiles: Int
        public var processes: Int
    }

    public struct Rootfs: Sendable, Hashable {
        /// Host paths bound read-only at the same place; symlinks are recreated as symlinks.
        public var hostPaths: [String]
        public var hostname: String
    }

    public var name: String
    public var seccomp: Seccomp
    public var network: Network
    public var resources: Resources
    public var rootfs: Rootfs

    /// The system calls DESIGN.md lists beyond the always-blocked set.
    public static let defaultDeny = [
        "keyctl", "add_key", "request_key", "perf_event_open", "userfaultfd",
        "acct", "swapon", "swapoff", "reboot", "syslog", "settimeofday", "clock_settime",
        "clock_adjtime", "adjtimex", "quotactl", "name_to_handle_at",
        "fsopen", "fsmount", "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr",
        "kcmp", "lookup_dcookie", "iopl", "ioperm",
    ]

    public static let `default` = SandboxPolicy(
        name: "default",
        seccomp: Seccomp(deny: defaultDeny, errno: "EPERM", allowNetlinkRoute: true),
        network: Network(mode: .none, denyTCPPorts: [25], denyCIDRs: []),
        resources: Resources(mbPerCPU: 1769, pidsMax: 1024, openFiles: 1024, processes: 1024),
        rootfs: Rootfs(
            hostPaths: [
                "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                "/etc/ssl", "/etc/ca-certificates", "/etc/alternatives", "/etc/ld.so.cache",
                "/etc/localtime",
            ],
            hostname: "localhost"
        )
    )

    public init(name: String, seccomp: Seccomp, network: Network, resources: Resources, rootfs: Rootfs) {
        self.name = name
        self.seccomp = seccomp
        self.network = network
        self.resources = resources
        self.rootfs = rootfs
    }

    /// Reads a policy; keys left out keep the defaults, unknown keys are refused.
    public init(toml text: String, name: String) throws {
        do {
            let doc = try TOMLSection(parsing: text)
            try doc.rejectUnknown(["name", "seccomp", "network", "resources", "rootfs"])
            var p = SandboxPolicy.default
            p.name = try doc.string("name") ?? name

            let s = try doc.section("seccomp")
            try s.rejectUnknown(["deny", "errno", "allow_netlink_route"])
            p.seccomp.deny = try s.strings("deny") ?? p.seccomp.deny
            p.seccomp.errno = try s.string("errno") ?? p.seccomp.errno
            p.seccomp.allowNetlinkRoute = try s.bool("allow_netlink_route") ?? p.seccomp.allowNetlinkRoute

            let n = try doc.section("network")
            try n.rejectUnknown(["mode", "deny_tcp_ports", "deny_cidrs"])
            if let m = try n.string("mode") {
                guard let mode = NetworkMode(rawValue: m) else {
                    throw SandboxError(.invalidPolicy, "network.mode must be \"none\" or \"host\", not \"\(m)\"")
                }
                p.network.mode = mode
            }
            p.network.denyTCPPorts = try n.ints("deny_tcp_ports") ?? p.network.denyTCPPorts
            p.network.denyCIDRs = try n.strings("deny_cidrs") ?? p.network.denyCIDRs

            let r = try doc.section("resources")
            try r.rejectUnknown(["mb_per_cpu", "pids_max", "open_files", "processes"])
            p.resources.mbPerCPU = try r.int("mb_per_cpu") ?? p.resources.mbPerCPU
            p.resources.pidsMax = try r.int("pids_max") ?? p.resources.pidsMax
            p.resources.openFiles = try r.int("open_files") ?? p.resources.openFiles
            p.resources.processes = try r.int("processes") ?? p.resources.processes

            let f = try doc.section("rootfs")
            try f.rejectUnknown(["host_paths", "hostname"])
            p.rootfs.hostPaths = try f.strings("host_paths") ?? p.rootfs.hostPaths
            p.rootfs.hostname = try f.string("hostname") ?? p.rootfs.hostname
            try p.validate()
            self = p
        } catch let e as TOMLError {
            throw SandboxError(.invalidPolicy, "policy \(name): \(e)")
        } catch let e as SandboxError {
            throw SandboxError(.invalidPolicy, e.message.hasPrefix("policy ") ? e.message : "policy \(name): \(e.message)")
        }
    }

    /// The errno value named by `seccomp.errno`.
    public var denyErrno: Int32? { Self.errnoValues[seccomp.errno] }

    static let errnoValues: [String: Int32] = ["EPERM": 1, "EACCES": 13, "ENOSYS": 38, "EINVAL": 22]

    public func validate() throws {
        guard denyErrno != nil else {
            throw SandboxError(.invalidPolicy, "seccomp.errno must be one of \(Self.errnoValues.keys.sorted().joined(separator: ", "))")
        }
        for port in network.denyTCPPorts where !(1...65535).contains(port) {
            throw SandboxError(.invalidPolicy, "network.deny_tcp_ports: \(port) is not a TCP port")
        }
        for cidr in network.denyCIDRs where IPv4CIDR(cidr) == nil {
            throw SandboxError(.invalidPolicy, "network.deny_cidrs: \"\(cidr)\" is not an IPv4 CIDR like 10.0.0.0/8")
        }
        guard resources.mbPerCPU >= 64 else { throw SandboxError(.invalidPolicy, "resources.mb_per_cpu must be at least 64") }
        guard (16...65536).contains(resources.pidsMax) else { throw SandboxError(.invalidPolicy, "resources.pids_max must be 16–65536") }
        guard (16...1_048_576).contains(resources.openFiles) else {
            throw SandboxError(.invalidPolicy, "resources.open_files must be 16–1048576")
        }
        guard (16...65536).contains(resources.processes) else { throw SandboxError(.invalidPolicy, "resources.processes must be 16–65536") }
        for p in rootfs.hostPaths {
            guard p.hasPrefix("/"), !p.split(separator: "/").contains(".."), p != "/" else {
                throw SandboxError(.invalidPolicy, "rootfs.host_paths: \"\(p)\" must be an absolute path below /")
            }
            let reserved = ["/proc", "/dev", "/tmp", "/var/task", "/opt", "/sys"]
            guard !reserved.contains(where: { p == $0 || p.hasPrefix($0 + "/") }) else {
                throw SandboxError(.invalidPolicy, "rootfs.host_paths: \"\(p)\" is managed by the sandbox itself")
            }
        }
        guard !rootfs.hostname.isEmpty, rootfs.hostname.utf8.count <= 64 else {
            throw SandboxError(.invalidPolicy, "rootfs.hostname must be 1–64 characters")
        }
    }
}

/// An IPv4 network in CIDR notation.
public struct IPv4CIDR: Sendable, Hashable, CustomStringConvertible {
    public var address: UInt32
    public var prefix: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let prefix = Int(parts[1]), (0...32).contains(prefix),
            let a = IPv4CIDR.parseAddress(String(parts[0]))
        else { return nil }
        self.address = a
        self.prefix = prefix
    }

    public init(address: UInt32, prefix: Int) {
        self.address = address
        self.prefix = prefix
    }

    static func parseAddress(_ s: String) -> UInt32? {
        let octets = s.split(separator: ".", omittingEmptySubsequences: false)
        guard octets.count == 4 else { return nil }
        var v: UInt32 = 0
        for o in octets {
            guard let n = UInt32(o), n < 256 else { return nil }
            v = v << 8 | n
        }
        return v
    }

    static func format(_ a: UInt32) -> String { "\(a >> 24).\(a >> 16 & 255).\(a >> 8 & 255).\(a & 255)" }

    public var description: String { "\(IPv4CIDR.format(address))/\(prefix)" }
}
