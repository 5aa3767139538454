"""Prometheus metrics for one sidecar process (`GET /metrics`).

Each app gets its own registry, so several apps (tests, workers) never share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

STRAPI_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric the sidecar exports, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sockets = Gauge("sidecar_sockets_connected", "Authenticated sockets connected", registry=r)
        self.users = Gauge("sidecar_users_connected", "Distinct users with at least one socket", registry=r)
        self.handshakes = Counter(
            "sidecar_handshakes_total", "Socket handshakes by outcome", ["outcome"], registry=r
        )
        self.emits = Counter("sidecar_emits_total", "Emit calls by event", ["event"], registry=r)
        self.deliveries = Counter(
            "sidecar_deliveries_total", "User rooms addressed by emits, by event", ["event"], registry=r
        )
        self.webhooks = Counter(
            "sidecar_webhooks_total", "Webhook deliveries received, by outcome", ["outcome"], registry=r
        )
        self.strapi_requests = Counter(
            "sidecar_strapi_requests_total",
            "Requests to Strapi by method and status (`error` when nothing came back)",
            ["method", "status"],
            registry=r,
        )
        self.strapi_seconds = Histogram(
            "sidecar_strapi_request_seconds",
            "Strapi request latency",
            ["method"],
            buckets=STRAPI_BUCKETS,
            registry=r,
        )
        self.reads = Counter(
            "sidecar_reads_total", "notification:read requests by outcome", ["outcome"], registry=r
        )

    def observe_strapi(self, method: str, status: int | None, seconds: float) -> None:
        self.strapi_requests.labels(method, str(status) if status is not None else "error").inc()
        self.strapi_seconds.labels(method).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
