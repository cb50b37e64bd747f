/// `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`.
public struct FunctionARN: Sendable, Hashable, CustomStringConvertible {
    public var region: String
    public var account: String
    public var name: String
    public var qualifier: String?

    public init(region: String, account: String, name: String, qualifier: String? = nil) {
        self.region = region
        self.account = account
        self.name = name
        self.qualifier = qualifier
    }

    public var description: String {
        "arn:aws:lambda:\(region):\(account):function:\(name)" + (qualifier.map { ":" + $0 } ?? "")
    }
}
