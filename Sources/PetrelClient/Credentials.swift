import Foundation

/// Credentials the way the AWS tools find them: the environment, then the
/// shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or ~/.aws/credentials).
public struct Credentials: Sendable {
    public var accessKey: String
    public var secretKey: String
    public var sessionToken: String?

    public init(accessKey: String, secretKey: String, sessionToken: String? = nil) {
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.sessionToken = sessionToken
    }

    public static func find(profile: String? = nil, file: String? = nil) -> Credentials? {
        let env = ProcessInfo.processInfo.environment
        if profile == nil, file == nil, let a = env["AWS_ACCESS_KEY_ID"], let s = env["AWS_SECRET_ACCESS_KEY"], !a.isEmpty {
            return Credentials(accessKey: a, secretKey: s, sessionToken: env["AWS_SESSION_TOKEN"])
        }
        let name = profile ?? env["AWS_PROFILE"] ?? "default"
        let path = file ?? env["AWS_SHARED_CREDENTIALS_FILE"] ?? (NSHomeDirectory() + "/.aws/credentials")
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        var section = ""
        var values: [String: String] = [:]
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("[") && line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces)
            } else if section == name, let eq = line.firstIndex(of: "=") {
                values[line[..<eq].trimmingCharacters(in: .whitespaces)] = line[line.index(after: eq)...].trimmingCharacters(
                    in: .whitespaces)
            }
        }
        guard let a = values["aws_access_key_id"], let s = values["aws_secret_access_key"] else { return nil }
        return Credentials(accessKey: a, secretKey: s, sessionToken: values["aws_session_token"])
    }
}
