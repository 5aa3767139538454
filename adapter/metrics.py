"""Prometheus metrics for one sidecar process (`GET /metrics`).

Each app gets its own registry, so several apps (tests, workers) never share counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from adapter.collector import pauses

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

STRAPI_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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
        self.emit_seconds = Histogram(
            "sidecar_emit_seconds",
            "Time an emit took, by event: encoded once and written (or queued) to every recipient in"
            " this process; with REDIS_URL, published to Redis",
            ["event"],
            buckets=PROBE_BUCKETS,
            registry=r,
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
        # Scale-out (REDIS_URL): the pub/sub self-check, Redis failures, and duplicate deliveries.
        self.pubsub_healthy = Gauge(
            "sidecar_pubsub_healthy",
            "1 while events published through Redis come back to this process (always 1 without Redis)",
            registry=r,
        )
        self.pubsub_probes = Counter(
            "sidecar_pubsub_probes_total",
            "Pub/sub self-checks by outcome: ok, no_echo (Redis answers, the listener does not), redis_down",
            ["outcome"],
            registry=r,
        )
        self.pubsub_probe_seconds = Histogram(
            "sidecar_pubsub_probe_seconds",
            "Round trip of a self-check message through Redis pub/sub",
            buckets=PROBE_BUCKETS,
            registry=r,
        )
        self.pubsub_recoveries = Counter(
            "sidecar_pubsub_recoveries_total",
            "Times the pub/sub listener was restarted, by reason",
            ["reason"],
            registry=r,
        )
        self.redis_errors = Counter(
            "sidecar_redis_errors_total",
            "Redis operations that failed, by operation",
            ["operation"],
            registry=r,
        )
        self.dedupe_hits = Counter(
            "sidecar_webhook_dedupe_hits_total",
            "Announcements that held back users told already (duplicate or repeated webhook deliveries)",
            registry=r,
        )
        self.dedupe_users = Counter(
            "sidecar_webhook_dedupe_users_total",
            "Users not told again about a notification they had been told of",
            registry=r,
        )

        pauses.install()
        r.register(_GcPauses())

    def count_direct_writes(self, written: Callable[[], int]) -> None:
        """Export `written()` (adapter/fanout.py `FanoutManager.direct_writes`) as
        `sidecar_deliveries_direct_total`: frames of every event written straight to an idle
        WebSocket, one per socket (`sidecar_deliveries_total` counts rooms); the other sockets
        reached got theirs through their writer task (busy, slow to read, or polling)."""
        self.registry.register(_DirectWrites(written))

    def observe_strapi(self, method: str, status: int | None, seconds: float) -> None:
        self.strapi_requests.labels(method, str(status) if status is not None else "error").inc()
        self.strapi_seconds.labels(method).observe(seconds)

    def observe_dedupe(self, held_back: int) -> None:
        if held_back > 0:
            self.dedupe_hits.inc()
            self.dedupe_users.inc(held_back)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _GcPauses(Collector):
    """`sidecar_gc_pause_seconds`: the process's collections (adapter/collector.py `pauses`)."""

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "sidecar_gc_pause_seconds",
            "Time the cyclic garbage collector stopped the process, by generation",
            labels=["generation"],
        )
        bounds = [str(bound) for bound in pauses.buckets] + ["+Inf"]
        for generation, (cumulative, seconds) in pauses.snapshot().items():
            family.add_metric([str(generation)], list(zip(bounds, cumulative, strict=True)), seconds)
        yield family


class _DirectWrites(Collector):
    def __init__(self, written: Callable[[], int]) -> None:
        self._written = written

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "sidecar_deliveries_direct",
            "Frames an emit wrote straight to an idle WebSocket (one per socket), without its writer task",
            value=self._written(),
        )
