import Foundation
import Hummingbird
import Logging

/// The part of STS the AWS tools call before anything else: `GetCallerIdentity`, which
/// says whose keys these are (query protocol, as botocore's `sts` model describes it).
/// Roles and session credentials (`AssumeRole`, `GetSessionToken`) are not served yet.
public struct STSAPI: Sendable {
    let pipeline: RequestPipeline
    static let namespace = "https://sts.amazonaws.com/doc/2011-06-15/"

    public init(gate: Gatekeeper, logger: Logger) {
        pipeline = RequestPipeline(gate: gate, logger: logger)
    }

    func serve(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        var form: [String: String] = [:]
        return await pipeline.run(
            req, ctx, action: "STS", limit: 65536, service: "sts", style: .queryXML,
            tooLarge: { _ in .named("RequestEntityTooLarge", "The request is too large.", status: 413) },
            audit: { _ in .init(resource: nil, parameters: "{}") },
            actionInBody: { body in
                form = QueryXML.form(body)
                return form["Action"] ?? "STS"
            }
        ) { call in
            let action = form["Action"] ?? ""
            guard action == "GetCallerIdentity" else {
                throw LambdaError.named(
                    "InvalidAction",
                    "Petrel's STS serves GetCallerIdentity only; \(action.isEmpty ? "no Action was given" : action) is not served.")
            }
            return QueryXML.response(
                action, namespace: Self.namespace,
                [.text("Arn", call.caller.arn), .text("UserId", call.caller.account), .text("Account", call.caller.account)],
                requestID: call.id)
        }
    }
}
