import PetrelCore
import PetrelSandbox

/// The operator's networks functions may attach to (`[networks.NAME]` in petreld.toml) and
/// their rule sets (`[security_groups.NAME]`): what a function's `VpcConfig` names.
/// `SubnetIds` name networks (one network per function: several ids must name the same one),
/// `SecurityGroupIds` rule sets; an instance reaches what its network and one of its rule sets
/// both allow, and nothing else.
public struct FunctionNetworks: Sendable, Equatable {
    public struct Network: Sendable, Equatable {
        public var name: String
        /// The operator's network namespace (`ip netns` name) that routes the network's traffic.
        public var namespace: String
        /// Instances' addresses: a /30 each, the namespace's end being the gateway.
        public var subnet: IPv4CIDR
        public var allow: [NetworkDestination]
        /// Accounts whose functions may attach (`*`: all).
        public var accounts: [String]

        public init(name: String, namespace: String, subnet: IPv4CIDR, allow: [NetworkDestination], accounts: [String]) {
            self.name = name
            self.namespace = namespace
            self.subnet = subnet
            self.allow = allow
            self.accounts = accounts
        }
    }

    public var networks: [String: Network] = [:]
    /// Rule sets: what they allow.
    public var groups: [String: [NetworkDestination]] = [:]

    public init() {}

    /// Checks a `VpcConfig` for a function of `account` (nil lists: none given).
    public func check(_ vpc: VPCSettings, account: String) throws(DomainError) {
        _ = try attachment(vpc, account: account)
    }

    /// Where instances of a function with `vpc` attach; nil when it names no network.
    public func attachment(_ vpc: VPCSettings?, account: String) throws(DomainError) -> NetworkAttachment? {
        guard let vpc, !vpc.subnetIds.isEmpty || !vpc.securityGroupIds.isEmpty else { return nil }
        guard !vpc.subnetIds.isEmpty else {
            throw DomainError(.invalidParameter, "SubnetIds are required with SecurityGroupIds: name one of the operator's networks.")
        }
        guard !vpc.securityGroupIds.isEmpty else {
            throw DomainError(.invalidParameter, "SecurityGroupIds are required with SubnetIds: name the rule sets the instances get.")
        }
        let known = networks.keys.sorted().joined(separator: ", ")
        var found: Network?
        for id in vpc.subnetIds {
            guard let n = networks[id] else {
                throw DomainError(
                    .invalidParameter,
                    "Subnet \(id) is not one of this Petrel's networks (\(known.isEmpty ? "there are none: [networks] in petreld.toml" : known))."
                )
            }
            if let f = found, f.name != n.name {
                throw DomainError(.invalidParameter, "SubnetIds name one network; \(f.name) and \(n.name) are two.")
            }
            found = n
        }
        let network = found!
        guard network.accounts.contains("*") || network.accounts.contains(account) else {
            throw DomainError(.invalidParameter, "Account \(account) may not attach functions to the network \(network.name).")
        }
        var allow: [NetworkDestination] = []
        for id in vpc.securityGroupIds {
            guard let g = groups[id] else {
                throw DomainError(
                    .invalidParameter, "Security group \(id) is not one of this Petrel's rule sets ([security_groups] in petreld.toml).")
            }
            allow += g
        }
        return NetworkAttachment(
            network: network.name, namespace: network.namespace, subnet: network.subnet, allow: network.allow,
            groups: vpc.securityGroupIds, groupAllow: allow)
    }
}
