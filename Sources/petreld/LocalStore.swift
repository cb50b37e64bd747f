import ArgumentParser
import Foundation
import Glibc
import PetrelStore
import PetrelSystem

/// The data directory's stores, opened by the daemon or by an operator command
/// (SQLite in WAL mode lets both work at once).
struct LocalStore {
    let configuration: DaemonConfiguration
    let db: PetrelDatabase
    let keys: KeyRing
    let accounts: AccountStore

    init(_ c: DaemonConfiguration) throws {
        configuration = c
        try FileManager.default.createDirectory(
            atPath: c.dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        db = try PetrelDatabase(path: c.dataDirectory + "/petrel.sqlite", adminAccount: c.accountID)
        keys = try KeyRing(directory: c.dataDirectory, db: db)
        accounts = AccountStore(db, keys: keys)
    }

    var credentialsPath: String { configuration.dataDirectory + "/admin-credentials" }
    var awsConfigPath: String { configuration.dataDirectory + "/aws-config" }

    /// `<data>/aws-config`, written at every start: the AWS config profile "petrel" (the API's
    /// address as `endpoint_url`, and the region), so that the AWS CLI and SDKs reach this
    /// daemon with `--profile petrel` (with `AWS_CONFIG_FILE` and `AWS_SHARED_CREDENTIALS_FILE`
    /// pointing at this file and the admin credentials, or the section copied to ~/.aws).
    func writeAWSConfig(endpoint: String) throws {
        let text = """
            # The AWS config profile of this petreld (rewritten at each start). Use it with
            #   AWS_CONFIG_FILE=\(awsConfigPath) AWS_SHARED_CREDENTIALS_FILE=\(credentialsPath) aws lambda list-functions --profile petrel
            # or copy the section into ~/.aws/config (and the [petrel] credentials into ~/.aws/credentials).
            [profile petrel]
            region = \(configuration.region)
            endpoint_url = \(endpoint)

            """
        do { try Sys.atomicWrite(awsConfigPath, Array(text.utf8), mode: 0o644) } catch {
            throw StoreError("cannot write \(awsConfigPath)", cause: error)
        }
    }

    /// At first start: the admin account (the configured account id) and one key,
    /// written to `<data>/admin-credentials` (0600) in the AWS shared-credentials format.
    func ensureAdmin() throws -> (account: String, path: String)? {
        guard try accounts.adminAccount() == nil else { return nil }
        let account =
            try accounts.account(configuration.accountID)
            ?? accounts.createAccount(id: configuration.accountID, name: "admin", admin: true)
        let key = try accounts.createKey(account: account.id)
        let text = """
            # petreld's admin account \(account.id) (region \(configuration.region)), made at first start.
            # This file is written once; keep it secret, or move it away and revoke the key
            # (petreld keys revoke \(key.id)) once you have made other keys.
            [default]
            aws_access_key_id = \(key.id)
            aws_secret_access_key = \(key.secret)

            # The same key for the "petrel" profile of <data>/aws-config, which says where the API is.
            [petrel]
            aws_access_key_id = \(key.id)
            aws_secret_access_key = \(key.secret)

            """
        do { try Sys.atomicWrite(credentialsPath, Array(text.utf8), mode: 0o600) } catch {
            throw StoreError("cannot write \(credentialsPath)", cause: error)
        }
        return (account.id, credentialsPath)
    }
}

/// `--config` and `--data-dir` for the operator commands that work on the local store.
struct StoreOptions: ParsableArguments {
    @Option(help: "Configuration file (default: Config/petreld.toml of the checkout, when it exists).")
    var config: String?

    @Option(name: .customLong("data-dir"), help: "Data directory (default: the configuration's).")
    var dataDirectory: String?

    func open() throws -> LocalStore {
        var c: DaemonConfiguration
        do {
            c = try DaemonConfiguration.load(file: config ?? Locations.defaultConfig(), environment: ProcessInfo.processInfo.environment)
        } catch let e as DaemonConfiguration.Invalid {
            throw ValidationError(e.description)
        }
        if let d = dataDirectory { c.dataDirectory = d }
        return try LocalStore(c)
    }
}

/// Store failures as sentences on stderr, exit status 1.
func operatorFailure(_ error: Error) -> Error {
    if let e = error as? StoreError { return ValidationError(e.description) }
    return error
}
