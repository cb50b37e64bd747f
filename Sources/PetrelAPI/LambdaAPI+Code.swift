import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PetrelCore
import PetrelRuntime
import PetrelSigV4
import PetrelStore

/// GetFunction's `Code.Location`: the ZIP behind a link the daemon signed.
extension LambdaAPI {
    /// `Code.Location`: the ZIP, behind a link GetFunction signed (the client fetches it unsigned, as from S3).
    func downloadCode(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        let account = ctx.parameters.get("account") ?? ""
        let name = ctx.parameters.get("name") ?? ""
        let audit = RequestPipeline.Audit(
            resource: name,
            parameters: AuditParameters.describe(
                query: [], path: ["Account": account, "FunctionName": name], body: nil, payloadIsData: false))
        return await pipeline.runUnsigned(req, ctx, action: "GetFunctionCode", style: .restJSON, audit: audit) { _ in
            let q = req.uri.queryParameters
            let hex = try codeLinks.check(
                account: account, name: name, hex: q["sha"].map(String.init), expires: q["expires"].map(String.init),
                signature: q["signature"].map(String.init))
            let zip = try catalog.code.zip(hex: hex)
            var h = HTTPFields()
            h[.contentType] = "application/zip"
            return Response(status: .ok, headers: h, body: ResponseBody(byteBuffer: ByteBuffer(bytes: zip)))
        }
    }
}
