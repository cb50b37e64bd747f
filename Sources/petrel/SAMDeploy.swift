import ArgumentParser
import Foundation
import PetrelClient

/// `petrel deploy --sam`: the work is done by SAM/petrel_sam.py, with the AWS SAM
/// translator (Python) and boto3; this finds it and hands it the connection.
struct SAMDeploy {
    var template: String
    var stack: String?
    var parameters: [String]
    var dryRun: Bool

    /// Where the program is: `$PETREL_SAM_PROGRAM`, the package's place beside the binary
    /// (`/usr/bin/petrel` → `/usr/lib/petrel/`), else the checkout the binary was built from.
    static func program() -> String? {
        let env = ProcessInfo.processInfo.environment
        var candidates: [String] = []
        if let p = env["PETREL_SAM_PROGRAM"] { candidates.append(p) }
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        candidates.append(exe.deletingLastPathComponent().appendingPathComponent("../lib/petrel/petrel_sam.py").standardized.path)
        candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("SAM/petrel_sam.py").path)
        return candidates.first { FileManager.default.isReadableFile(atPath: $0) }
    }

    func run(_ client: LambdaClient) throws {
        guard let program = Self.program() else {
            throw ValidationError("petrel_sam.py is not installed next to petrel (/usr/lib/petrel/); set PETREL_SAM_PROGRAM to its path")
        }
        var args = [program, template]
        if let stack { args += ["--stack", stack] }
        for p in parameters { args += ["--parameter", p] }
        if dryRun { args.append("--dry-run") }
        var env = ProcessInfo.processInfo.environment
        env["PETREL_ENDPOINT"] = client.endpoint.absoluteString
        env["AWS_ACCESS_KEY_ID"] = client.signer.accessKey
        env["AWS_SECRET_ACCESS_KEY"] = client.signer.secretKey
        env["AWS_SESSION_TOKEN"] = client.signer.sessionToken
        env["AWS_REGION"] = client.signer.region
        // The keys are in the environment: a profile or config file must not override them.
        for k in ["AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"] { env[k] = nil }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [env["PETREL_PYTHON"] ?? "python3"] + args
        p.environment = env
        do { try p.run() } catch { throw ValidationError("cannot run python3 for --sam: \(error)") }
        p.waitUntilExit()
        if p.terminationStatus != 0 { throw ExitCode(p.terminationStatus) }
    }
}
