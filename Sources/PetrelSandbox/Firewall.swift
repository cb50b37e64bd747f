/// The nftables ruleset loaded into every sandbox's network namespace.
///
/// Inbound: only loopback and replies to the sandbox's own connections; a new
/// TCP connection from outside gets a reset, anything else is dropped.
/// Outbound: TCP and UDP only; TCP port 25 (and the policy's ports) reset;
/// the policy's denied networks rejected; on an operator's network (`NetworkAttachment`)
/// only what the network and one of its rule sets both admit, the rest rejected.
enum Firewall {
    static func rules(for network: SandboxPolicy.Network, attachment: NetworkAttachment? = nil) -> String {
        let ports = Array(Set([25] + network.denyTCPPorts)).sorted().map(String.init).joined(separator: ", ")
        // On an operator's network: what the network admits returns to the output chain, which
        // then needs one of the rule sets to admit it too; everything else is refused.
        var networkChain = ""
        if let a = attachment {
            networkChain = "  chain network {\n"
            for d in a.allow { for m in d.matches { networkChain += "    \(m) return\n" } }
            networkChain += "    reject with icmpx admin-prohibited\n  }\n"
        }
        var out = """
            table inet petrel {
            \(networkChain)
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
        if let a = attachment {
            out += "    jump network\n"
            for d in a.groupAllow { for m in d.matches { out += "    \(m) accept\n" } }
            out += "    reject with icmpx admin-prohibited\n  }\n}\n"
            return out
        }
        out += """
                meta l4proto { tcp, udp } accept
              }
            }

            """
        return out
    }
}
