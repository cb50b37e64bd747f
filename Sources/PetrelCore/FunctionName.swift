/// The `FunctionName` parameter: a name, a partial ARN (`ACCOUNT:function:NAME`)
/// or a full ARN, each optionally with a `:QUALIFIER`.
public struct FunctionReference: Sendable, Equatable {
    public var name: String
    public var qualifier: String?
    public var account: String?
    public var region: String?

    /// Parses and validates; throws the domain's validation error when it is none of the forms.
    public init(parsing raw: String, field: String = "functionName") throws {
        func bad() -> DomainError {
            .constraint(
                raw, at: field,
                "Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?(\\d{12}:)?(function:)?([a-zA-Z0-9-_\\.]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?"
            )
        }
        guard !raw.isEmpty, raw.utf8.count <= 170 else { throw bad() }
        var parts = raw.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        if parts.first == "arn" {
            // arn:PARTITION:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
            guard parts.count == 7 || parts.count == 8, parts[1].hasPrefix("aws"), parts[2] == "lambda", parts[5] == "function",
                Self.isRegion(parts[3]), Self.isAccount(parts[4])
            else { throw bad() }
            region = parts[3]
            account = parts[4]
            parts = Array(parts[6...])
        } else if parts.count >= 3, parts[1] == "function" {
            guard Self.isAccount(parts[0]), parts.count <= 4 else { throw bad() }
            account = parts[0]
            region = nil
            parts = Array(parts[2...])
        } else {
            account = nil
            region = nil
        }
        guard parts.count == 1 || parts.count == 2 else { throw bad() }
        name = parts[0]
        qualifier = parts.count == 2 ? parts[1] : nil
        guard Self.isValidName(name) else { throw bad() }
        if let q = qualifier {
            guard q == "$LATEST" || (1...128).contains(q.utf8.count) && q.utf8.allSatisfy(Self.isNameByte) else { throw bad() }
        }
    }

    /// The same function without the qualifier (its account and region kept).
    public var unqualified: FunctionReference {
        var r = self
        r.qualifier = nil
        return r
    }

    /// 1–64 of `[a-zA-Z0-9-_]`.
    public static func isValidName(_ s: String) -> Bool {
        (1...64).contains(s.utf8.count) && s.utf8.allSatisfy(isNameByte)
    }

    /// `[a-zA-Z0-9-_]`.
    public static func isNameByte(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2d || c == 0x5f
    }

    public static func isAccount(_ s: String) -> Bool { s.utf8.count == 12 && s.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }
    static func isRegion(_ s: String) -> Bool {
        let p = s.split(separator: "-")
        return p.count >= 3 && p.first?.count == 2 && p.last.map { $0.allSatisfy(\.isNumber) } == true
    }
}
