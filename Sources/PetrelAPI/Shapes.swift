import Foundation
import PetrelCore

/// Request and response shapes of the Lambda REST API, named as in botocore's model.
struct CreateFunctionInput: Decodable {
    struct CodeShape: Decodable {
        var ZipFile: String?
        var S3Bucket: String?
        var S3Key: String?
        var ImageUri: String?
    }
    struct EnvironmentShape: Decodable { var Variables: [String: String]? }
    struct EphemeralStorageShape: Decodable { var Size: Int }

    var FunctionName: String?
    var Runtime: String?
    var Role: String?
    var Handler: String?
    var Code: CodeShape?
    var Description: String?
    var Timeout: Int?
    var MemorySize: Int?
    var Publish: Bool?
    var Environment: EnvironmentShape?
    var EphemeralStorage: EphemeralStorageShape?
    var PackageType: String?
    var Architectures: [String]?
    var Layers: [String]?
    var Tags: [String: String]?
    var KMSKeyArn: String?
    var DeadLetterConfig: DeadLetterShape?
    var VpcConfig: VpcConfigShape?

    struct DeadLetterShape: Codable {
        var TargetArn: String?
    }

    struct VpcConfigShape: Decodable {
        var SubnetIds: [String]?
        var SecurityGroupIds: [String]?
        var Ipv6AllowedForDualStack: Bool?

        /// The settings given (a list left out is empty, as Lambda takes it).
        func settings() throws -> VPCSettings {
            if Ipv6AllowedForDualStack == true {
                throw LambdaError(.invalidParameterValue, "Petrel's networks are IPv4 only: Ipv6AllowedForDualStack cannot be true.")
            }
            return VPCSettings(subnetIds: SubnetIds ?? [], securityGroupIds: SecurityGroupIds ?? [])
        }
    }
}

struct UpdateFunctionCodeInput: Decodable {
    var ZipFile: String?
    var S3Bucket: String?
    var ImageUri: String?
    var Publish: Bool?
    var DryRun: Bool?
    var RevisionId: String?
    var Architectures: [String]?
}

struct UpdateFunctionConfigurationInput: Decodable {
    var Runtime: String?
    var Role: String?
    var Handler: String?
    var Description: String?
    var Timeout: Int?
    var MemorySize: Int?
    var Environment: CreateFunctionInput.EnvironmentShape?
    var EphemeralStorage: CreateFunctionInput.EphemeralStorageShape?
    var RevisionId: String?
    var Layers: [String]?
    var KMSKeyArn: String?
    var DeadLetterConfig: CreateFunctionInput.DeadLetterShape?
    var VpcConfig: CreateFunctionInput.VpcConfigShape?
}

/// `FunctionConfiguration` as Lambda returns it.
struct FunctionConfigurationShape: Encodable {
    struct EnvironmentOut: Encodable { var Variables: [String: String] }
    struct Tracing: Encodable { var Mode = "PassThrough" }
    struct Ephemeral: Encodable { var Size: Int }
    struct Logging: Encodable {
        var LogFormat = "Text"
        var LogGroup: String
    }
    struct SnapStart: Encodable {
        var ApplyOn = "None"
        var OptimizationStatus = "Off"
    }

    var FunctionName: String
    var FunctionArn: String
    var Runtime: String
    var Role: String
    var Handler: String?
    var CodeSize: Int
    var Description: String
    var Timeout: Int
    var MemorySize: Int
    var LastModified: String
    var CodeSha256: String
    var Version = "$LATEST"
    var Environment: EnvironmentOut?
    var TracingConfig = Tracing()
    var RevisionId: String
    var State = "Active"
    var LastUpdateStatus = "Successful"
    var PackageType = "Zip"
    var Architectures: [String]
    var EphemeralStorage: Ephemeral
    var LoggingConfig: Logging
    var SnapStart = SnapStart()
    var KMSKeyArn: String?
    var Layers: [LayerShape]?
    var DeadLetterConfig: CreateFunctionInput.DeadLetterShape?
    var VpcConfig: VpcOut?

    /// Lambda's `VpcConfigResponse`: the network's name is the VPC's id (empty once detached).
    struct VpcOut: Encodable {
        var SubnetIds: [String]
        var SecurityGroupIds: [String]
        var VpcId: String
        var Ipv6AllowedForDualStack = false
    }

    struct LayerShape: Encodable {
        var Arn: String
        var CodeSize: Int
    }

    /// `qualified`: the ARN names the version even when it is `$LATEST` (ListVersionsByFunction's).
    init(_ f: FunctionRecord, region: String, qualified: Bool = false) {
        FunctionName = f.name
        FunctionArn =
            FunctionARN(
                region: region, account: f.account, name: f.name,
                qualifier: f.publishedVersion != nil || qualified ? f.version : nil
            ).description
        Version = f.version
        Layers = f.layers.map { $0.map { LayerShape(Arn: $0.arn, CodeSize: $0.codeSize) } }
        KMSKeyArn = f.kmsKeyArn
        DeadLetterConfig = f.deadLetterTarget.map { .init(TargetArn: $0) }
        VpcConfig = f.vpc.map { .init(SubnetIds: $0.subnetIds, SecurityGroupIds: $0.securityGroupIds, VpcId: $0.subnetIds.first ?? "") }
        Runtime = f.runtime.rawValue
        Role = f.role
        Handler = f.handler
        CodeSize = f.codeSize
        Description = f.description
        Timeout = f.timeoutSeconds
        MemorySize = f.memoryMB
        LastModified = FunctionRecord.lambdaTimestamp(f.lastModified)
        CodeSha256 = f.codeSha256
        Environment = f.environment.isEmpty ? nil : .init(Variables: f.environment)
        RevisionId = f.revisionId
        Architectures = f.architectures
        EphemeralStorage = .init(Size: f.ephemeralStorageMB)
        LoggingConfig = .init(LogGroup: f.logGroup())
    }
}

struct GetFunctionShape: Encodable {
    struct CodeLocation: Encodable {
        var RepositoryType = "S3"
        var Location: String
    }
    struct Reserved: Encodable { var ReservedConcurrentExecutions: Int }
    var Configuration: FunctionConfigurationShape
    var Code: CodeLocation
    var Concurrency: Reserved?
    var Tags: [String: String]?
}

/// A resource-based policy in IAM's JSON, as GetPolicy and AddPermission return it.
enum PolicyDocument {
    static func statement(_ s: PolicyStatement, resource: String) -> [String: Any] {
        var out: [String: Any] = ["Sid": s.sid, "Effect": "Allow", "Action": s.action, "Resource": resource]
        if s.principal == "*" {
            out["Principal"] = "*"
        } else if let account = s.principalAccount {
            out["Principal"] = ["AWS": s.principal.hasPrefix("arn:") ? s.principal : "arn:aws:iam::\(account):root"]
        } else {
            out["Principal"] = ["Service": s.principal]
        }
        var condition: [String: Any] = [:]
        if let a = s.sourceAccount { condition["StringEquals"] = ["AWS:SourceAccount": a] }
        if let arn = s.sourceArn { condition["ArnLike"] = ["AWS:SourceArn": arn] }
        if let t = s.functionUrlAuthType {
            var eq = condition["StringEquals"] as? [String: String] ?? [:]
            eq["lambda:FunctionUrlAuthType"] = t
            condition["StringEquals"] = eq
        }
        if let v = s.invokedViaFunctionUrl { condition["Bool"] = ["lambda:InvokedViaFunctionUrl": v ? "true" : "false"] }
        if !condition.isEmpty { out["Condition"] = condition }
        return out
    }

    static func json(_ value: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func document(_ list: [PolicyStatement], resource: String) -> String {
        json(["Version": "2012-10-17", "Id": "default", "Statement": list.map { statement($0, resource: resource) }] as [String: Any])
    }
}

struct ListFunctionsShape: Encodable {
    var Functions: [FunctionConfigurationShape]
    var NextMarker: String?
}

struct AccountSettingsShape: Encodable {
    struct Limit: Encodable {
        var TotalCodeSize: Int
        var CodeSizeUnzipped: Int
        var CodeSizeZipped: Int
        var ConcurrentExecutions: Int
        var UnreservedConcurrentExecutions: Int
    }
    struct Usage: Encodable {
        var TotalCodeSize: Int
        var FunctionCount: Int
    }
    var AccountLimit: Limit
    var AccountUsage: Usage
}

/// `AliasConfiguration`.
struct AliasShape: Encodable {
    struct Routing: Encodable { var AdditionalVersionWeights: [String: Double] }
    var AliasArn: String
    var Name: String
    var FunctionVersion: String
    var Description: String
    var RoutingConfig: Routing?
    var RevisionId: String

    init(_ a: FunctionAlias, arn: String) {
        AliasArn = arn
        Name = a.name
        FunctionVersion = a.functionVersion
        Description = a.description
        RoutingConfig = a.weights.isEmpty ? nil : Routing(AdditionalVersionWeights: a.weights)
        RevisionId = a.revisionId
    }
}

/// `GetLayerVersionResponse` / `PublishLayerVersionResponse`, and (without `Content`) a list's item.
struct LayerVersionShape: Encodable {
    struct ContentShape: Encodable {
        var Location: String
        var CodeSha256: String
        var CodeSize: Int
    }
    var Content: ContentShape?
    var LayerArn: String?
    var LayerVersionArn: String
    var Description: String
    var CreatedDate: String
    var Version: Int
    var CompatibleRuntimes: [String]?
    var LicenseInfo: String?
    var CompatibleArchitectures: [String]?

    init(_ l: LayerVersionRecord, region: String, location: String?) {
        Content = location.map { .init(Location: $0, CodeSha256: l.codeSha256, CodeSize: l.codeSize) }
        LayerArn = location == nil ? nil : l.layerARN(region: region)
        LayerVersionArn = l.arn(region: region)
        Description = l.description
        CreatedDate = FunctionRecord.lambdaTimestamp(l.created)
        Version = l.version
        CompatibleRuntimes = l.compatibleRuntimes
        LicenseInfo = l.licenseInfo
        CompatibleArchitectures = l.compatibleArchitectures
    }
}
