import Foundation

/// A function URL: a dedicated HTTP endpoint for a function (or one of its aliases).
public struct FunctionURLConfig: Sendable, Codable, Equatable {
    public enum AuthType: String, Sendable, Codable {
        case none = "NONE"
        case awsIAM = "AWS_IAM"
    }
    public enum InvokeMode: String, Sendable, Codable {
        case buffered = "BUFFERED"
        case responseStream = "RESPONSE_STREAM"
    }

    public var account: String
    public var function: String
    /// An alias, or nil for the function itself.
    public var qualifier: String?
    /// Unguessable (160 random bits), stable for the URL's life, never given to another URL.
    public var id: String
    public var authType: AuthType
    public var cors: URLCors?
    public var invokeMode: InvokeMode
    public var created: Date
    public var lastModified: Date

    public init(
        account: String, function: String, qualifier: String?, authType: AuthType, cors: URLCors?, invokeMode: InvokeMode,
        id: String = FunctionURLConfig.newID(), created: Date = Date()
    ) {
        self.account = account
        self.function = function
        self.qualifier = qualifier
        self.id = id
        self.authType = authType
        self.cors = cors
        self.invokeMode = invokeMode
        self.created = created
        lastModified = created
    }

    /// 32 characters of `[a-z0-9]` (a DNS label, as Lambda's are): 160 random bits.
    public static func newID() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)
        var rng = SystemRandomNumberGenerator()
        return String(decoding: (0..<32).map { _ in alphabet[Int(rng.next() % 32)] }, as: UTF8.self)
    }

    public static func isID(_ s: Substring) -> Bool {
        s.utf8.count == 32 && s.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x32 && $0 <= 0x37) }
    }

    /// URL qualifiers are aliases: `[0-9a-zA-Z-_]+`, not all digits.
    public static func validate(qualifier q: String) throws(DomainError) {
        guard (1...128).contains(q.utf8.count), q.utf8.allSatisfy(FunctionReference.isNameByte),
            !q.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 })
        else {
            throw DomainError(
                .invalidParameter, "A function URL may name an alias only, not \(q) (Qualifier must satisfy ((?!^\\d+$)^[0-9a-zA-Z-_]+$)).")
        }
    }
}

/// A URL's CORS settings, answered by the platform (preflights never reach the function).
public struct URLCors: Sendable, Codable, Equatable {
    public var allowCredentials: Bool?
    public var allowHeaders: [String]?
    public var allowMethods: [String]?
    public var allowOrigins: [String]?
    public var exposeHeaders: [String]?
    public var maxAge: Int?

    public init(
        allowCredentials: Bool? = nil, allowHeaders: [String]? = nil, allowMethods: [String]? = nil, allowOrigins: [String]? = nil,
        exposeHeaders: [String]? = nil, maxAge: Int? = nil
    ) {
        self.allowCredentials = allowCredentials
        self.allowHeaders = allowHeaders
        self.allowMethods = allowMethods
        self.allowOrigins = allowOrigins
        self.exposeHeaders = exposeHeaders
        self.maxAge = maxAge
    }

    /// Lambda's limits on each list and value.
    public func validate() throws(DomainError) {
        func list(_ l: [String]?, _ field: String, max: Int, item: ClosedRange<Int>) throws(DomainError) {
            guard let l else { return }
            guard l.count <= max else {
                throw DomainError.constraint("\(l)", at: "cors.\(field)", "Member must have length less than or equal to \(max)")
            }
            for v in l where !item.contains(v.utf8.count) {
                throw DomainError.constraint(
                    v, at: "cors.\(field)", "Member must have length between \(item.lowerBound) and \(item.upperBound)")
            }
        }
        try list(allowOrigins, "allowOrigins", max: 100, item: 1...253)
        try list(allowMethods, "allowMethods", max: 6, item: 0...6)
        try list(allowHeaders, "allowHeaders", max: 100, item: 0...1024)
        try list(exposeHeaders, "exposeHeaders", max: 100, item: 0...1024)
        if let m = maxAge, !(0...86_400).contains(m) {
            throw DomainError.constraint(
                "\(m)", at: "cors.maxAge",
                m < 0 ? "Member must have value greater than or equal to 0" : "Member must have value less than or equal to 86400")
        }
        for m in allowMethods ?? []
        where m != "*" && !["GET", "PUT", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"].contains(m.uppercased()) {
            throw DomainError(.invalidParameter, "\(m) is not an HTTP method CORS can allow (or *).")
        }
    }

    /// The origin to allow for a request from `origin`, when it is allowed.
    public func allowedOrigin(_ origin: String) -> String? {
        guard let list = allowOrigins else { return nil }
        if list.contains("*") { return allowCredentials == true ? origin : "*" }
        return list.contains { $0.caseInsensitiveCompare(origin) == .orderedSame } ? origin : nil
    }

    /// Whether `method` may be asked for by a preflight.
    public func allows(method: String) -> Bool {
        guard let list = allowMethods else { return false }
        return list.contains("*") || list.contains { $0.caseInsensitiveCompare(method) == .orderedSame }
    }
}
