import ArgumentParser

@main
struct Petreld: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "petreld",
        abstract: "The Petrel controller daemon.",
        subcommands: [ServeCommand.self, SandboxCommand.self, AccountsCommand.self, KeysCommand.self, KMSCommand.self, AuditCommand.self,
                      DLQCommand.self],
        defaultSubcommand: ServeCommand.self
    )
}
