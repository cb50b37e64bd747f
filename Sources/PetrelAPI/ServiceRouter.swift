import Foundation
import Hummingbird
import PetrelSigV4

/// `POST /` is where every AWS protocol but Lambda's REST one sends its calls: the JSON
/// protocols name their operation in `X-Amz-Target` (CloudWatch Logs `Logs_20140328.`,
/// SQS `AmazonSQS.`, Secrets Manager `secretsmanager.`), the query protocols (SNS, STS, IAM) in their form body, and every signed request
/// names its service in the credential scope. This picks the API from those.
public struct ServiceRouter: Sendable {
    let logs: LogsAPI
    let sqs: SQSAPI
    let sns: SNSAPI
    let secrets: SecretsAPI
    let sts: STSAPI
    let iam: IAMAPI

    public init(logs: LogsAPI, sqs: SQSAPI, sns: SNSAPI, secrets: SecretsAPI, sts: STSAPI, iam: IAMAPI) {
        self.sts = sts
        self.iam = iam
        self.logs = logs
        self.sqs = sqs
        self.sns = sns
        self.secrets = secrets
    }

    public func register(on router: Router<PetrelRequestContext>) {
        router.post("/") { req, ctx in
            // These APIs read and write SQLite: off the event loops (see LambdaAPI.handle).
            await withTaskExecutorPreference(globalConcurrentExecutor) { await self.route(req, ctx) }
        }
        // An SNS SubscribeURL, fetched by the subscriber (unsigned); any other GET / is unknown.
        router.get("/") { req, ctx in
            guard req.uri.queryParameters["Action"] == "ConfirmSubscription" else { throw HTTPError(.notFound) }
            return await withTaskExecutorPreference(globalConcurrentExecutor) { await self.sns.confirmUnsigned(req, ctx) }
        }
    }

    func route(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        let target = req.headers[.amzTarget] ?? ""
        if target.hasPrefix("AmazonSQS.") { return await sqs.serve(req, ctx) }
        if target.hasPrefix("secretsmanager.") { return await secrets.serve(req, ctx) }
        if target.isEmpty {
            switch Self.scopeService(req) {
            case "sns": return await sns.serve(req, ctx)
            case "sts": return await sts.serve(req, ctx)
            case "iam": return await iam.serve(req, ctx)
            default: break
            }
        }
        return await logs.serve(req, ctx)
    }

    /// The service of the request's credential scope (`Credential=KEY/DAY/REGION/SERVICE/aws4_request`).
    static func scopeService(_ req: Request) -> String? {
        guard let auth = req.headers[.authorization], let r = auth.range(of: "Credential=") else {
            return req.uri.queryParameters["X-Amz-Credential"].flatMap {
                SigV4.percentDecoded(String($0)).split(separator: "/").dropFirst(3).first
            }
            .map(String.init)
        }
        let scope = auth[r.upperBound...].prefix { $0 != "," && $0 != " " }
        let parts = scope.split(separator: "/")
        return parts.count >= 5 ? String(parts[3]) : nil
    }
}
