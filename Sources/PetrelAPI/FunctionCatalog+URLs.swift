import Foundation
import PetrelCore
import PetrelStore

struct URLConfigInput: Decodable {
    struct CorsShape: Codable {
        var AllowCredentials: Bool?
        var AllowHeaders: [String]?
        var AllowMethods: [String]?
        var AllowOrigins: [String]?
        var ExposeHeaders: [String]?
        var MaxAge: Int?

        var cors: URLCors {
            URLCors(
                allowCredentials: AllowCredentials, allowHeaders: AllowHeaders, allowMethods: AllowMethods, allowOrigins: AllowOrigins,
                exposeHeaders: ExposeHeaders, maxAge: MaxAge)
        }

        init(_ c: URLCors) {
            AllowCredentials = c.allowCredentials
            AllowHeaders = c.allowHeaders
            AllowMethods = c.allowMethods
            AllowOrigins = c.allowOrigins
            ExposeHeaders = c.exposeHeaders
            MaxAge = c.maxAge
        }
    }
    var AuthType: String?
    var Cors: CorsShape?
    var InvokeMode: String?
}

/// Function URLs: one per function and alias.
extension FunctionCatalog {
    /// The function (its `$LATEST`) and the URL qualifier (an alias, or nil) a URL call names.
    func urlTarget(_ raw: String, _ parameter: String?, caller: Caller) throws -> (FunctionRecord, String?) {
        let ref = try FunctionReference(parsing: raw)
        let q = try qualifier(ref, parameter).flatMap { $0 == FunctionRecord.latest ? nil : $0 }
        let f = try resolve(ref.unqualified, caller: caller)
        if let q {
            try FunctionURLConfig.validate(qualifier: q)
            guard try functions.alias(account: f.account, f.name, q) != nil else { throw notFound(f.account, f.name, qualifier: q) }
        }
        return (f, q)
    }

    static func authType(_ raw: String?) throws -> FunctionURLConfig.AuthType? {
        guard let raw else { return nil }
        guard let t = FunctionURLConfig.AuthType(rawValue: raw) else {
            throw LambdaError.constraint(raw, at: "authType", "Member must satisfy enum value set: [NONE, AWS_IAM]")
        }
        return t
    }

    static func invokeMode(_ raw: String?) throws -> FunctionURLConfig.InvokeMode? {
        guard let raw else { return nil }
        guard let m = FunctionURLConfig.InvokeMode(rawValue: raw) else {
            throw LambdaError.constraint(raw, at: "invokeMode", "Member must satisfy enum value set: [BUFFERED, RESPONSE_STREAM]")
        }
        return m
    }

    func urlNotFound(_ f: FunctionRecord, _ q: String?) -> LambdaError {
        LambdaError(
            .resourceNotFound,
            "The resource you requested does not exist: \(FunctionARN(region: region, account: f.account, name: f.name, qualifier: q)) has no function URL."
        )
    }

    func createURL(_ raw: String, qualifier: String?, _ input: URLConfigInput, caller: Caller) throws -> FunctionURLConfig {
        let (f, q) = try urlTarget(raw, qualifier, caller: caller)
        guard let auth = try Self.authType(input.AuthType) else { throw LambdaError(.invalidParameterValue, "AuthType is required.") }
        let cors = input.Cors?.cors
        try cors?.validate()
        let url = FunctionURLConfig(
            account: f.account, function: f.name, qualifier: q, authType: auth, cors: cors,
            invokeMode: try Self.invokeMode(input.InvokeMode) ?? .buffered)
        guard try urls.insert(url) else {
            throw LambdaError(
                .resourceConflict,
                "Failed to create function url config for [functionArn = \(FunctionARN(region: region, account: f.account, name: f.name, qualifier: q))]. Error message:  FunctionUrlConfig exists for this Lambda function"
            )
        }
        logger.info(
            "function URL created", metadata: ["function.name": "\(f.name)", "url.id": "\(url.id)", "url.auth": "\(auth.rawValue)"])
        return url
    }

    func url(_ raw: String, qualifier: String?, caller: Caller) throws -> FunctionURLConfig {
        let (f, q) = try urlTarget(raw, qualifier, caller: caller)
        guard let u = try urls.url(account: f.account, function: f.name, qualifier: q) else { throw urlNotFound(f, q) }
        return u
    }

    func updateURL(_ raw: String, qualifier: String?, _ input: URLConfigInput, caller: Caller) throws -> FunctionURLConfig {
        let (f, q) = try urlTarget(raw, qualifier, caller: caller)
        let auth = try Self.authType(input.AuthType)
        let mode = try Self.invokeMode(input.InvokeMode)

        let cors = input.Cors?.cors
        try cors?.validate()
        guard
            let u = try urls.update(
                account: f.account, function: f.name, qualifier: q,
                { u in
                    if let auth { u.authType = auth }
                    if let mode { u.invokeMode = mode }
                    if input.Cors != nil { u.cors = cors }
                })
        else { throw urlNotFound(f, q) }
        return u
    }

    func deleteURL(_ raw: String, qualifier: String?, caller: Caller) throws {
        let (f, q) = try urlTarget(raw, qualifier, caller: caller)
        guard try !urls.delete(account: f.account, function: f.name, qualifier: q).isEmpty else { throw urlNotFound(f, q) }
        logger.info("function URL deleted", metadata: ["function.name": "\(f.name)"])
    }

    func listURLs(_ raw: String, caller: Caller) throws -> [FunctionURLConfig] {
        let f = try resolve(FunctionReference(parsing: raw).unqualified, caller: caller)
        return try urls.urls(account: f.account, function: f.name)
    }
}
