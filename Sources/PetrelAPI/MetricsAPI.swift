import HTTPTypes
import Hummingbird
import NIOCore
import PetrelCore
import Prometheus

/// `GET /metrics`: everything recorded through swift-metrics, in Prometheus' text format.
/// Unsigned (Prometheus does not sign), so it answers loopback peers only: scrape
/// it from the host, or through a proxy there.
public struct MetricsAPI: Sendable {
    let registry: PrometheusCollectorRegistry

    public init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    public func register(on router: Router<PetrelRequestContext>) {
        router.get("/metrics") { _, ctx in
            guard ctx.fromLoopback else {
                return APIResponse.error(
                    LambdaError(
                        .accessDenied, "The metrics are served to the host itself only (a loopback address), not to \(ctx.remoteAddress)."),
                    requestID: FastIDs.uuid())
            }
            var h = HTTPFields()
            h[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: h, body: ResponseBody(byteBuffer: ByteBuffer(bytes: self.registry.emitToBuffer())))
        }
    }
}
