/// The nftables ruleset loaded into every sandbox's network namespace.
///
/// Inbound: only loopback and replies to the sandbox's own connections; a new
/// TCP connection from outside gets a reset, anything else is dropped.
/// Outbound: TCP and UDP only; TCP port 25 (and the policy's ports) reset;
/// the policy's denied networks rejected.
enum Firewall {
    static func rules(for network: SandboxPolicy.Network) -> String {
        let ports = Array(Set([25] + network.denyTCPPorts)).sorted().map(String.init).joined(separator: ", ")
        var out = """
            table inet petrel {
              chain input {
                type filter hook input priority filter; policy drop;
                iifname "lo" accept
                ct state established,related accept
                meta l4proto tcp reject with tcp reset
              }
              chain output {
                type filter hook output priority filter; policy drop;
                oifname "lo" accept
                ct state established,related accept
                tcp dport { \(ports) } reject with tcp reset

            """
        if !network.denyCIDRs.isEmpty {
            let nets = network.denyCIDRs.compactMap(IPv4CIDR.init).map(\.description).joined(separator: ", ")
            out += "    ip daddr { \(nets) } reject with icmpx admin-prohibited\n"
        }
        out += """
                meta l4proto { tcp, udp } accept
              }
            }

            """
        return out
    }
}
