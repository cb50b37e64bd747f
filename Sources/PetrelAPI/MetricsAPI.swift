import Hummingbird
import HTTPTypes
import NIOCore
import Prometheus

/// `GET /metrics`: everything recorded through swift-metrics, in Prometheus' text format.
public struct MetricsAPI: Sendable {
    let registry: PrometheusCollectorRegistry

    public init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    public func register(on router: Router<BasicRequestContext>) {
        router.get("/metrics") { _, _ in
            var h = HTTPFields()
            h[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: h, body: ResponseBody(byteBuffer: ByteBuffer(bytes: self.registry.emitToBuffer())))
        }
    }
}
