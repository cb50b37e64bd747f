import ArgumentParser
import Foundation
import PetrelClient
import ZIPFoundation

struct Deploy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Zip a folder and create the function, or update its code (and the settings given); or apply an AWS SAM template.",
        discussion: """
            petrel deploy DIR --name F [--runtime R --handler H …]   one function from a folder
            petrel deploy --sam template.yaml [--stack S] [--parameter K=V] [--dry-run]
                applies an AWS SAM template: shows the plan, then creates or changes only what differs.
                Needs python3 with aws-sam-translator and boto3 (PyPI).
            """)

    @Argument(help: "The folder to deploy (its contents become /var/task).")
    var directory: String?

    @Option(help: "Function name.") var name: String?
    @Option(help: "An AWS SAM template to apply instead of a folder.") var sam: String?
    @Option(help: "The SAM stack's name (default: the template's folder name).") var stack: String?
    @Option(help: "Name=Value for a SAM template parameter (repeatable).") var parameter: [String] = []
    @Flag(help: "With --sam: show the plan and change nothing.") var dryRun = false
    @Option(help: "python3.11, nodejs20.x, ruby3.1 or provided.al2023 (needed to create).") var runtime: String?
    @Option(help: "module.function or file.export (needed to create, except for provided.*).") var handler: String?
    @Option(help: "Memory in MB (128–10240).") var memory: Int?
    @Option(help: "Timeout in seconds (1–900).") var timeout: Int?
    @Option(name: .customLong("env"), help: "KEY=VALUE environment variable (repeatable; replaces all of them).") var env: [String] = []
    @Option(
        help: "The execution role's ARN (default: the account's role petrel-function, made with no permissions when it is missing).")
    var role: String?
    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        if sam != nil {
            guard directory == nil, name == nil else { throw ValidationError("--sam takes a template; give no folder or --name with it") }
        } else {
            guard directory != nil, name != nil else { throw ValidationError("give a folder and --name, or --sam TEMPLATE") }
            guard stack == nil, parameter.isEmpty, !dryRun else {
                throw ValidationError("--stack, --parameter and --dry-run go with --sam")
            }
        }
    }

    func run() async throws {
        let client = try connection.client()
        if let sam {
            try SAMDeploy(template: sam, stack: stack, parameters: parameter, dryRun: dryRun).run(client)
            return
        }
        guard let directory, let name else { return }
        var variables: [String: String]?
        if !env.isEmpty {
            variables = [:]
            for kv in env {
                guard let eq = kv.firstIndex(of: "="), eq != kv.startIndex else {
                    throw ValidationError("--env takes KEY=VALUE, not \(kv)")
                }
                variables![String(kv[..<eq])] = String(kv[kv.index(after: eq)...])
            }
        }
        let zip = try zipFolder(directory)
        try await reporting {
            let exists: Bool
            do {
                _ = try await client.send("GET", "/2015-03-31/functions/\(name)/configuration")
                exists = true
            } catch let e as LambdaClient.APIError where e.code == "ResourceNotFoundException" {
                exists = false
            }
            let result: [String: Any]
            if exists {
                stderr("updating \(name)…\n")
                var out =
                    try await client.send(
                        "PUT", "/2015-03-31/functions/\(name)/code",
                        body: json(["ZipFile": zip.base64EncodedString()])
                    ).json ?? [:]
                var settings: [String: Any] = [:]
                if let runtime { settings["Runtime"] = runtime }
                if let handler { settings["Handler"] = handler }
                if let memory { settings["MemorySize"] = memory }
                if let timeout { settings["Timeout"] = timeout }
                if let variables { settings["Environment"] = ["Variables": variables] }
                if !settings.isEmpty {
                    out = try await client.send("PUT", "/2015-03-31/functions/\(name)/configuration", body: json(settings)).json ?? [:]
                }
                result = out
            } else {
                guard let runtime else { throw ValidationError("\(name) does not exist yet: give --runtime (and --handler) to create it") }
                stderr("creating \(name)…\n")
                var role = self.role ?? ""
                if self.role == nil { role = try await defaultRole(client) }
                var input: [String: Any] = [
                    "FunctionName": name, "Runtime": runtime, "Role": role,
                    "Code": ["ZipFile": zip.base64EncodedString()],
                ]
                if let handler { input["Handler"] = handler }
                if let memory { input["MemorySize"] = memory }
                if let timeout { input["Timeout"] = timeout }
                if let variables { input["Environment"] = ["Variables": variables] }
                result = try await client.send("POST", "/2015-03-31/functions", body: json(input)).json ?? [:]
            }
            print(
                "\(result["FunctionName"] ?? name)  \(result["Runtime"] ?? "")  \(result["MemorySize"] ?? "") MB  code \(result["CodeSize"] ?? 0) bytes  sha256 \(result["CodeSha256"] ?? "")"
            )
        }
    }

    static let defaultRoleName = "petrel-function"

    /// The account's `petrel-function` role, made when it is missing: Lambda may assume it, and
    /// it allows nothing (give it policies with `aws iam put-role-policy`).
    func defaultRole(_ client: LambdaClient) async throws -> String {
        do {
            let got = try await client.query("iam", "GetRole", ["RoleName": Self.defaultRoleName])
            if let arn = LambdaClient.element("Arn", in: got) { return arn }
        } catch let e as LambdaClient.APIError where e.code == "NoSuchEntity" {}
        let trust =
            #"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#
        let made = try await client.query(
            "iam", "CreateRole",
            ["RoleName": Self.defaultRoleName, "AssumeRolePolicyDocument": trust, "Description": "Made by petrel deploy: allows nothing."])
        guard let arn = LambdaClient.element("Arn", in: made) else {
            throw ValidationError("petreld's CreateRole answer has no Arn")
        }
        stderr("made the execution role \(Self.defaultRoleName) (it allows nothing; give it policies with aws iam put-role-policy)\n")
        return arn
    }

    /// Zips the folder's contents (paths relative to it), with a progress line.
    func zipFolder(_ dir: String) throws -> Data {
        let base = URL(fileURLWithPath: dir).standardizedFileURL
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: base.path, isDirectory: &isDir), isDir.boolValue else {
            throw ValidationError("\(dir) is not a folder")
        }
        var files: [String] = []
        let e = FileManager.default.enumerator(atPath: base.path)
        while let rel = e?.nextObject() as? String { files.append(rel) }
        files.sort()
        let archive = try Archive(accessMode: .create)
        let tty = isatty(2) == 1
        var bytes = 0
        for (i, rel) in files.enumerated() {
            try archive.addEntry(with: rel, relativeTo: base, compressionMethod: .deflate)
            bytes += (try? FileManager.default.attributesOfItem(atPath: base.appendingPathComponent(rel).path)[.size] as? Int) ?? 0
            if tty || i == files.count - 1 {
                stderr("\rzipping \(i + 1)/\(files.count) files (\(bytes / 1024) KiB)" + (i == files.count - 1 ? "\n" : ""))
            }
        }
        guard let data = archive.data else { throw ValidationError("could not zip \(dir)") }
        stderr("zipped to \(data.count / 1024) KiB\n")
        return data
    }
}

func json(_ object: [String: Any]) -> [UInt8] {
    Array((try? JSONSerialization.data(withJSONObject: object)) ?? Data("{}".utf8))
}
