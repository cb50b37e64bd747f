import ArgumentParser
import PetrelCore

@main
struct Petreld: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "petreld",
        abstract: "The Petrel controller daemon.",
        version: "petreld \(Build.version) (\(Build.configuration) build)",
        subcommands: [
            ServeCommand.self, SandboxCommand.self, AccountsCommand.self, KeysCommand.self, KMSCommand.self, AuditCommand.self,
            DLQCommand.self,
        ],
        defaultSubcommand: ServeCommand.self
    )
}

/// What this binary is: the operator sees it in `--version` and in the first lines of the log.
enum Build {
    static let version = PetrelVersion.version
    #if DEBUG
        static let configuration = "debug"
    #else
        static let configuration = "release"
    #endif
}
