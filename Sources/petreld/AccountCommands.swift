import ArgumentParser
import Foundation
import PetrelStore

struct AccountsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "accounts",
        abstract: "Make, list and delete accounts (each sees and changes only its own functions).",
        subcommands: [Create.self, List.self, Delete.self, UnknownRoles.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make an account; prints its id.")
        @OptionGroup var store: StoreOptions
        @Option(help: "A name for people (1 to 64 characters).") var name: String
        @Option(help: "The 12-digit id (default: drawn at random).") var id: String?

        func run() throws {
            do {
                let a = try store.open().accounts.createAccount(id: id, name: name)
                print(a.id)
                FileHandle.standardError.write(
                    Data("Account \(a.id) (\(a.name)) made. Give it a key: petreld keys create --account \(a.id)\n".utf8))
            } catch { throw operatorFailure(error) }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the accounts.")
        @OptionGroup var store: StoreOptions
        @Flag(help: "One JSON object per line.") var json = false

        func run() throws {
            do {
                let s = try store.open()
                let keys = try s.accounts.accessKeys()
                let accounts = try s.accounts.accounts()
                let active = accounts.map { a in keys.filter { $0.account == a.id && $0.status == "Active" }.count }
                if json {
                    for (a, n) in zip(accounts, active) {
                        printJSON(["id": a.id, "name": a.name, "admin": a.admin, "activeKeys": n, "created": iso(a.created)])
                    }
                } else {
                    printTable(
                        ["ACCOUNT", "NAME", "ROLE", "ACTIVE KEYS", "CREATED"],
                        zip(accounts, active).map { a, n in [a.id, a.name, a.admin ? "admin" : "", "\(n)", iso(a.created)] })
                }
            } catch { throw operatorFailure(error) }
        }
    }

    struct UnknownRoles: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "unknown-roles",
            abstract: "How an account treats a function Role that names no role Lambda can assume.",
            discussion: """
                refuse: CreateFunction and UpdateFunctionConfiguration refuse it, as Lambda does. accept: the function \
                runs with no credentials (and its mappings and destinations are not checked against a role). default: \
                the daemon's [iam] unknown_roles. Accounts made before roles existed accept.
                """)
        @OptionGroup var store: StoreOptions
        @Option(help: "The account id.") var account: String
        @Argument(help: "refuse, accept or default.") var choice: String

        func run() throws {
            do {
                let value: AccountStore.UnknownRoles?
                switch choice {
                case "default": value = nil
                default:
                    guard let v = AccountStore.UnknownRoles(rawValue: choice) else {
                        throw StoreError("the choice is refuse, accept or default, not \(choice)")
                    }
                    value = v
                }
                try store.open().accounts.setUnknownRoles(account: account, value)
                print(
                    "Account \(account): unknown role ARNs \(value.map { "are \($0 == .refuse ? "refused" : "accepted")" } ?? "follow the daemon's default")."
                )
            } catch { throw operatorFailure(error) }
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an account that owns no functions, and its keys.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "The account id.") var id: String

        func run() throws {
            do {
                let s = try store.open()
                if try s.accounts.account(id)?.admin == true {
                    throw StoreError("\(id) is the admin account; it is not deleted")
                }
                try s.accounts.deleteAccount(id)
                print("Account \(id) deleted.")
            } catch { throw operatorFailure(error) }
        }
    }
}

struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Access keys of accounts, and the master key that protects every secret at rest.",
        subcommands: [Create.self, List.self, Revoke.self, RotateMaster.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an access key; prints it once, as a section of an AWS shared-credentials file.")
        @OptionGroup var store: StoreOptions
        @Option(help: "The account the key signs for.") var account: String
        @Option(help: "The profile name of the printed section.") var profile = "default"

        func run() throws {
            do {
                let key = try store.open().accounts.createKey(account: account)
                print("[\(profile)]\naws_access_key_id = \(key.id)\naws_secret_access_key = \(key.secret)")
                FileHandle.standardError.write(Data("The secret is shown this once; petreld keeps it only encrypted.\n".utf8))
            } catch { throw operatorFailure(error) }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List access keys (never their secrets).")
        @OptionGroup var store: StoreOptions
        @Option(help: "Only this account's keys.") var account: String?
        @Flag(help: "One JSON object per line.") var json = false

        func run() throws {
            do {
                let keys = try store.open().accounts.accessKeys(account: account)
                if json {
                    for k in keys {
                        var o: [String: Any] = ["id": k.id, "account": k.account, "status": k.status, "created": iso(k.created)]
                        if let r = k.revoked { o["revoked"] = iso(r) }
                        printJSON(o)
                    }
                } else {
                    printTable(
                        ["ACCESS KEY", "ACCOUNT", "STATUS", "CREATED", "REVOKED"],
                        keys.map { [$0.id, $0.account, $0.status, iso($0.created), $0.revoked.map(iso) ?? ""] })
                }
            } catch { throw operatorFailure(error) }
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an access key: requests it signs are refused from now on.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "The access key id.") var id: String

        func run() throws {
            do {
                try store.open().accounts.revokeKey(id)
                print("Key \(id) revoked.")
            } catch { throw operatorFailure(error) }
        }
    }

    struct RotateMaster: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-master",
            abstract: "Replace the master key: every data key is rewrapped under a new one; no data is lost or re-encrypted.")
        @OptionGroup var store: StoreOptions

        func run() throws {
            do {
                let r = try store.open().keys.rotateMaster()
                print("Master key rotated: \(r.old) -> \(r.new).")
            } catch { throw operatorFailure(error) }
        }
    }
}

struct KMSCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kms",
        abstract: "Account keys a function may name as its KMSKeyArn (its environment variables are sealed under it).",
        subcommands: [Create.self, List.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a key for an account; prints its ARN.")
        @OptionGroup var store: StoreOptions
        @Option(help: "The account that owns the key.") var account: String
        @Option(help: "What the key is for.") var description = ""

        func run() throws {
            do {
                let s = try store.open()
                guard try s.accounts.account(account) != nil else { throw StoreError("there is no account \(account)") }
                let k = try s.keys.createAccountKey(account: account, description: description)
                print("arn:aws:kms:\(s.configuration.region):\(account):key/\(k.id)")
            } catch { throw operatorFailure(error) }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List account keys.")
        @OptionGroup var store: StoreOptions
        @Option(help: "Only this account's keys.") var account: String?

        func run() throws {
            do {
                let s = try store.open()
                printTable(
                    ["KEY ARN", "DESCRIPTION", "CREATED"],
                    try s.keys.accountKeys(account: account).map {
                        ["arn:aws:kms:\(s.configuration.region):\($0.account):key/\($0.id)", $0.description, iso($0.created)]
                    })
            } catch { throw operatorFailure(error) }
        }
    }
}

func iso(_ d: Date) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return f.string(from: d)
}

func printJSON(_ o: [String: Any]) {
    let data = (try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    print(String(decoding: data, as: UTF8.self))
}

func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }
    print(line(header))
    for r in rows { print(line(r)) }
}
