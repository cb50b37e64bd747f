import Foundation

/// One function as the store keeps it: its `$LATEST` (`publishedVersion` nil) or one of
/// its published versions, which are frozen copies of `$LATEST` at PublishVersion.
public struct FunctionRecord: Sendable, Codable, Equatable {
    /// The 12-digit account that owns the function.
    public var account: String
    public var name: String
    public var runtime: FunctionRuntime
    public var handler: String?
    public var role: String
    public var description: String
    public var memoryMB: Int
    public var timeoutSeconds: Int
    public var ephemeralStorageMB: Int
    public var environment: [String: String]
    /// base64 of the ZIP's SHA-256, as Lambda reports it.
    public var codeSha256: String
    public var codeSize: Int
    /// The code's size unzipped (nil in records from before it was kept).
    public var codeUnzippedSize: Int?
    public var lastModified: Date
    /// Changes with every update: instances of an older revision are not reused.
    public var revisionId: String
    public var architectures: [String]
    /// PutFunctionConcurrency: instances reserved for this function (0 throttles it); nil = the shared pool.
    public var reservedConcurrency: Int?
    /// Provisioned concurrency per qualifier (a version number or an alias), kept on `$LATEST`.
    public var provisioned: [String: Int]?
    /// The number of this published version; nil for `$LATEST`.
    public var publishedVersion: Int?
    /// On `$LATEST`: the last version number published (numbers are never used twice).
    public var lastPublished: Int?
    /// The layers merged at /opt, in order (a later one's files win).
    public var layers: [LayerReference]?
    /// TagResource / CreateFunction's Tags.
    public var tags: [String: String]?
    /// The resource-based policy (AddPermission / RemovePermission).
    public var policy: [PolicyStatement]?
    /// The account key that seals the environment variables (nil: the platform's key).
    public var kmsKeyArn: String?
    /// `DeadLetterConfig.TargetArn`: the SQS queue or SNS topic an asynchronous event goes to
    /// (the event itself) once it has failed for good.
    public var deadLetterTarget: String?
    /// `VpcConfig`: the operator's network and rule sets its instances attach to (nil: never
    /// set; empty lists: detached).
    public var vpc: VPCSettings?

    public init(
        account: String, name: String, runtime: FunctionRuntime, handler: String?, role: String, description: String = "",
        memoryMB: Int = FunctionLimits.defaultMemoryMB, timeoutSeconds: Int = FunctionLimits.defaultTimeoutSeconds,
        ephemeralStorageMB: Int = FunctionLimits.defaultEphemeralStorageMB, environment: [String: String] = [:],
        codeSha256: String, codeSize: Int, lastModified: Date = Date(), revisionId: String = UUID().uuidString.lowercased(),
        architectures: [String] = ["x86_64"]
    ) {
        self.account = account
        self.name = name
        self.runtime = runtime
        self.handler = handler
        self.role = role
        self.description = description
        self.memoryMB = memoryMB
        self.timeoutSeconds = timeoutSeconds
        self.ephemeralStorageMB = ephemeralStorageMB
        self.environment = environment
        self.codeSha256 = codeSha256
        self.codeSize = codeSize
        self.lastModified = lastModified
        self.revisionId = revisionId
        self.architectures = architectures
    }

    /// The hex form of the code's SHA-256 (how code blobs are named).
    public var codeDigestHex: String {
        guard let data = Data(base64Encoded: codeSha256) else { return "" }
        return FastIDs.hex(bytes: data)
    }

    public func logGroup() -> String { "/aws/lambda/\(name)" }

    /// Names the function across accounts (admission's, reserved concurrency's and the metrics' key).
    public var key: String { account + ":" + name }

    /// `$LATEST` or the version's number, as Lambda writes it.
    public var version: String { publishedVersion.map(String.init) ?? Self.latest }

    public static let latest = "$LATEST"

    /// Names this version of the function: warm instances belong to one.
    public var instanceKey: String { key + ":" + version }

    /// Lambda's timestamp format: `2024-01-31T12:34:56.789+0000`.
    public static func lambdaTimestamp(_ date: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd'T'HH:mm:ss.SSSZ"
        return f.string(from: date)
    }
}

/// One statement of a function's resource-based policy, as AddPermission took it.
public struct PolicyStatement: Sendable, Codable, Equatable {
    public var sid: String
    /// `lambda:InvokeFunction`, `lambda:GetFunction`, `lambda:*`, ...
    public var action: String
    /// As given: a 12-digit account, an IAM ARN of an account, a service principal or `*`.
    public var principal: String
    public var sourceArn: String?
    public var sourceAccount: String?
    /// The version or alias the statement guards; nil: the unqualified function (and `$LATEST`).
    public var qualifier: String?
    /// Condition `lambda:FunctionUrlAuthType`: the statement lets in URL requests of that auth type only.
    public var functionUrlAuthType: String?
    /// Condition `lambda:InvokedViaFunctionUrl`: true, the statement lets in calls through a URL only.
    public var invokedViaFunctionUrl: Bool?

    public init(
        sid: String, action: String, principal: String, sourceArn: String? = nil, sourceAccount: String? = nil,
        qualifier: String? = nil
    ) {
        self.sid = sid
        self.action = action
        self.principal = principal
        self.sourceArn = sourceArn
        self.sourceAccount = sourceAccount
        self.qualifier = qualifier
    }

    /// Whether the statement belongs to the policy of `qualifier` (nil and `$LATEST`: the function's own).
    public func guards(_ qualifier: String?) -> Bool {
        let q = qualifier == FunctionRecord.latest ? nil : qualifier
        return self.qualifier == q
    }

    /// The account a principal names, when it names one.
    public var principalAccount: String? {
        if FunctionReference.isAccount(principal) { return principal }
        let p = principal.split(separator: ":", omittingEmptySubsequences: false)
        if p.count == 6, p[0] == "arn", p[2] == "iam", FunctionReference.isAccount(String(p[4])) { return String(p[4]) }
        return nil
    }

    /// Whether this statement lets `account` perform `action` (e.g. `lambda:InvokeFunction`);
    /// `urlAuthType`: the call comes through a function URL of that auth type.
    public func allows(account: String, action wanted: String, urlAuthType: String? = nil) -> Bool {
        guard action == wanted || action == "lambda:*" || action == "*" else { return false }
        if invokedViaFunctionUrl == true, urlAuthType == nil { return false }
        if let t = functionUrlAuthType, t != urlAuthType { return false }
        if let sourceAccount, sourceAccount != account { return false }
        return principal == "*" || principalAccount == account
    }

    /// Whether this statement lets a service (`sns.amazonaws.com`, ...) acting for `sourceArn`,
    /// a resource of `sourceAccount`, invoke the function (SNS subscriptions check this).
    public func allowsService(_ service: String, sourceArn arn: String, sourceAccount account: String) -> Bool {
        guard action == "lambda:InvokeFunction" || action == "lambda:*" || action == "*" else { return false }
        guard principal == service || principal == "*" else { return false }
        if let sourceArn, sourceArn != arn { return false }
        if let sourceAccount, sourceAccount != account { return false }
        return true
    }
}

/// The settings CreateFunction and UpdateFunctionConfiguration accept.
public struct FunctionSettings: Sendable, Equatable {
    public var runtime: String?
    public var handler: String?
    public var role: String?
    public var description: String?
    public var memoryMB: Int?
    public var timeoutSeconds: Int?
    public var ephemeralStorageMB: Int?
    public var environment: [String: String]?

    public init(
        runtime: String? = nil, handler: String? = nil, role: String? = nil, description: String? = nil,
        memoryMB: Int? = nil, timeoutSeconds: Int? = nil, ephemeralStorageMB: Int? = nil,
        environment: [String: String]? = nil
    ) {
        self.runtime = runtime
        self.handler = handler
        self.role = role
        self.description = description
        self.memoryMB = memoryMB
        self.timeoutSeconds = timeoutSeconds
        self.ephemeralStorageMB = ephemeralStorageMB
        self.environment = environment
    }

    /// Checks every field that is present, in Lambda's words.
    public func validate() throws {
        if let r = runtime, FunctionRuntime(rawValue: r) == nil {
            throw DomainError(
                .invalidParameter,
                "The runtime parameter of \(r) is not supported by Petrel. Supported runtimes: \(FunctionRuntime.supportedList).")
        }
        if let h = handler {
            guard (1...128).contains(h.count), !h.contains(where: \.isWhitespace) else {
                throw DomainError.constraint(
                    h, at: "handler", "Member must satisfy regular expression pattern: [^\\s]+ and have length between 1 and 128")
            }
        }
        if let role {
            guard Self.isRoleARN(role) else {
                throw DomainError.constraint(
                    role, at: "role",
                    "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+")
            }
        }
        if let d = description, d.count > 256 {
            throw DomainError.constraint(d, at: "description", "Member must have length less than or equal to 256")
        }
        if let m = memoryMB, !FunctionLimits.memoryMB.contains(m) {
            throw DomainError.constraint(
                "\(m)", at: "memorySize",
                m < FunctionLimits.memoryMB.lowerBound
                    ? "Member must have value greater than or equal to \(FunctionLimits.memoryMB.lowerBound)"
                    : "Member must have value less than or equal to \(FunctionLimits.memoryMB.upperBound)")
        }
        if let t = timeoutSeconds, !FunctionLimits.timeoutSeconds.contains(t) {
            throw DomainError.constraint(
                "\(t)", at: "timeout",
                t < 1
                    ? "Member must have value greater than or equal to 1"
                    : "Member must have value less than or equal to \(FunctionLimits.timeoutSeconds.upperBound)")
        }
        if let e = ephemeralStorageMB, !FunctionLimits.ephemeralStorageMB.contains(e) {
            throw DomainError.constraint(
                "\(e)", at: "ephemeralStorage.size",
                e < FunctionLimits.ephemeralStorageMB.lowerBound
                    ? "Member must have value greater than or equal to \(FunctionLimits.ephemeralStorageMB.lowerBound)"
                    : "Member must have value less than or equal to \(FunctionLimits.ephemeralStorageMB.upperBound)")
        }
        if let env = environment { try Self.validateEnvironment(env) }
    }

    /// A new function's record (CreateFunction) from these settings, checked first; Lambda's
    /// defaults fill what they leave out, here and nowhere else. Runtime and role are required.
    public func newRecord(account: String, name: String, codeSha256: String, codeSize: Int) throws -> FunctionRecord {
        try validate()
        guard let runtime = runtime.flatMap(FunctionRuntime.init(rawValue:)) else {
            throw DomainError(.invalidParameter, "Runtime is required.")
        }
        guard let role else { throw DomainError(.invalidParameter, "Role is required.") }
        var record = FunctionRecord(
            account: account, name: name, runtime: runtime, handler: handler, role: role, codeSha256: codeSha256,
            codeSize: codeSize)
        apply(to: &record)
        return record
    }

    /// Puts the settings that are present into `record` (UpdateFunctionConfiguration;
    /// CreateFunction through `newRecord`). Call after `validate()`.
    public func apply(to record: inout FunctionRecord) {
        if let r = runtime.flatMap(FunctionRuntime.init(rawValue:)) { record.runtime = r }
        if let h = handler { record.handler = h }
        if let r = role { record.role = r }
        if let d = description { record.description = d }
        if let m = memoryMB { record.memoryMB = m }
        if let t = timeoutSeconds { record.timeoutSeconds = t }
        if let e = ephemeralStorageMB { record.ephemeralStorageMB = e }
        if let env = environment { record.environment = env }
    }

    /// Keys the platform sets itself; a function may not override them.
    public static let reservedVariables: Set<String> = [
        "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "PETREL_RUNTIME_API_SOCKET",
    ]

    public static let environmentLimitBytes = 4096

    static func validateEnvironment(_ env: [String: String]) throws {
        for key in env.keys.sorted() {
            let ok =
                key.utf8.count >= 2 && key.utf8.first.map { ($0 | 0x20) >= 0x61 && ($0 | 0x20) <= 0x7a } == true
                && key.utf8.allSatisfy { FunctionReference.isNameByte($0) && $0 != 0x2d }
            guard ok else {
                throw DomainError.constraint(
                    key, at: "environment.variables", "Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+")
            }
        }
        let reserved = env.keys.filter(reservedVariables.contains).sorted()
        if !reserved.isEmpty {
            throw DomainError(
                .invalidParameter,
                "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: \(reserved.joined(separator: ", "))"
            )
        }
        if env.values.contains(where: { $0.contains("\0") }) {
            throw DomainError(.invalidParameter, "Environment variable values may not contain NUL characters.")
        }
        // Lambda measures the variables as JSON.
        let data = (try? JSONSerialization.data(withJSONObject: env, options: [.sortedKeys])) ?? Data()
        if data.count > environmentLimitBytes {
            throw DomainError(
                .invalidParameter,
                "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: \(data.count) bytes"
            )
        }
    }

    static func isRoleARN(_ s: String) -> Bool {
        let p = s.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
        guard p.count == 6, p[0] == "arn", p[1].hasPrefix("aws"), p[2] == "iam", p[3].isEmpty,
            FunctionReference.isAccount(String(p[4])), p[5].hasPrefix("role/"), p[5].count > 5
        else { return false }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+=,.@-_/")
        return p[5].allSatisfy(allowed.contains)
    }
}

/// A function's `VpcConfig` as given: `SubnetIds` name one of the operator's networks,
/// `SecurityGroupIds` its rule sets (see `FunctionNetworks`).
public struct VPCSettings: Sendable, Codable, Equatable {
    public var subnetIds: [String]
    public var securityGroupIds: [String]
    public init(subnetIds: [String], securityGroupIds: [String]) {
        self.subnetIds = subnetIds
        self.securityGroupIds = securityGroupIds
    }
    public var attached: Bool { !subnetIds.isEmpty }
}
