import Testing

@testable import PetrelCore
@testable import PetrelRuntime
@testable import PetrelSandbox

/// A function's VpcConfig against the operator's networks and rule sets, and the destinations
/// they are written in.
@Suite("Function networks")
struct FunctionNetworksTests {
    @Test("destinations: a CIDR, an address, a port or a range of ports; anything else is refused")
    func destinations() throws {
        #expect(try NetworkDestination(parsing: "10.1.0.0/16").description == "10.1.0.0/16")
        #expect(try NetworkDestination(parsing: "10.1.2.3").description == "10.1.2.3/32")
        #expect(try NetworkDestination(parsing: "10.1.2.3:5432").ports == 5432...5432)
        #expect(try NetworkDestination(parsing: "10.1.0.0/24:8000-8100").ports == 8000...8100)
        #expect(
            try NetworkDestination(parsing: "10.1.0.0/24:80").matches == [
                "ip daddr 10.1.0.0/24 tcp dport 80", "ip daddr 10.1.0.0/24 udp dport 80",
            ])
        #expect(try NetworkDestination(parsing: "10.1.0.0/24").matches == ["ip daddr 10.1.0.0/24 meta l4proto { tcp, udp }"])
        for bad in ["", "10.1.2", "10.1.2.3/33", "10.1.2.3:0", "10.1.2.3:70000", "10.1.2.3:90-80", "10.1.2.3:a", "host:80", "1:2:3"] {
            #expect(throws: SandboxError.self, "\(bad)") { try NetworkDestination(parsing: bad) }
        }
    }

    func networks() throws -> FunctionNetworks {
        var n = FunctionNetworks()
        n.networks["db"] = .init(
            name: "db", namespace: "ns", subnet: IPv4CIDR("10.9.0.0/24")!, allow: [try NetworkDestination(parsing: "10.1.0.0/16:5432")],
            accounts: ["*"])
        n.networks["private"] = .init(
            name: "private", namespace: "ns", subnet: IPv4CIDR("10.9.1.0/24")!, allow: [], accounts: ["111111111111"])
        n.groups["pg"] = [try NetworkDestination(parsing: "10.1.2.3:5432")]
        n.groups["dns"] = [try NetworkDestination(parsing: "10.1.0.2:53")]
        return n
    }

    @Test("a VpcConfig names one network and its rule sets; the attachment carries both allow lists")
    func attachments() throws {
        let n = try networks()
        #expect(try n.attachment(nil, account: "222222222222") == nil)
        #expect(try n.attachment(VPCSettings(subnetIds: [], securityGroupIds: []), account: "222222222222") == nil)
        let a = try #require(
            try n.attachment(VPCSettings(subnetIds: ["db", "db"], securityGroupIds: ["pg", "dns"]), account: "222222222222"))
        #expect(a.network == "db" && a.namespace == "ns" && a.groups == ["pg", "dns"])
        #expect(a.allow.map(\.description) == ["10.1.0.0/16:5432"])
        #expect(a.groupAllow.map(\.description) == ["10.1.2.3/32:5432", "10.1.0.2/32:53"])
        #expect(try n.attachment(VPCSettings(subnetIds: ["private"], securityGroupIds: ["pg"]), account: "111111111111") != nil)
    }

    @Test(
        "what a VpcConfig may not name",
        arguments: [
            (["nope"], ["pg"], "not one of this Petrel's networks"),
            (["db"], ["nope"], "not one of this Petrel's rule sets"),
            (["db"], [], "SecurityGroupIds are required"),
            ([], ["pg"], "SubnetIds are required"),
            (["db", "private"], ["pg"], "name one network"),
            (["private"], ["pg"], "may not attach"),
        ])
    func refusals(subnets: [String], groups: [String], words: String) throws {
        let n = try networks()
        let e = #expect(throws: DomainError.self) {
            try n.check(VPCSettings(subnetIds: subnets, securityGroupIds: groups), account: "222222222222")
        }
        #expect(e?.message.contains(words) == true, "\(e?.message ?? "")")
    }

    @Test("the firewall of an attached sandbox: the network's chain first, then the rule sets, then a reject")
    func firewall() throws {
        let a = try #require(try networks().attachment(VPCSettings(subnetIds: ["db"], securityGroupIds: ["pg"]), account: "1"))
        let rules = Firewall.rules(for: SandboxPolicy.default.network, attachment: a)
        let network = try #require(rules.range(of: "chain network {"))
        let output = try #require(rules.range(of: "chain output {"))
        #expect(network.lowerBound < output.lowerBound)
        #expect(rules.contains("ip daddr 10.1.0.0/16 tcp dport 5432 return"))
        #expect(rules.contains("jump network"))
        #expect(rules.contains("ip daddr 10.1.2.3/32 tcp dport 5432 accept"))
        #expect(!rules.contains("meta l4proto { tcp, udp } accept"), "nothing else goes out")
        #expect(rules.contains("tcp dport { 25 } reject with tcp reset"))
    }
}
