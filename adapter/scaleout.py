"""One process, or several sharing a Redis: the parts that differ, built from the settings.

Without `REDIS_URL` everything stays in this process: python-socketio's in-memory client
manager, in-memory ledgers, in-process locks. With it:
- the Socket.IO client manager is python-socketio's Redis manager (watched, see adapter/pubsub.py),
  so an emit from any process reaches the room's sockets on every process;
- "who was told" and "the selection last seen" of each notification live in Redis, so a webhook
  delivered twice, to two processes, still tells each user once;
- locks for read receipts and for notification work are held in Redis, one holder per
  notification across processes.
Every Redis key and the pub/sub channel start with `REDIS_CHANNEL`, so several sidecars (for
several Strapis) can share one Redis.

`async with cluster:` (the app's lifespan) starts the listener and its watchdog, and closes
everything on the way out.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from adapter.fanout import with_fanout
from adapter.locks import KeyedLock, LockFactory
from adapter.metrics import Metrics
from adapter.pubsub import PubSubWatchdog, WatchedRedisManager
from adapter.settings import Settings
from adapter.shared import MemoryLedger, RedisLedger, RedisLocks, SharedLedger, stop_task

__all__ = ["Cluster", "build_cluster", "display_url"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 2.0
COMMAND_TIMEOUT_SECONDS = 5.0
PING_TIMEOUT_SECONDS = 2.0


@dataclass
class Cluster:
    """What this process shares with the others (or keeps to itself, without Redis)."""

    told: SharedLedger
    seen: SharedLedger
    announced: SharedLedger
    read_locks: LockFactory
    work_locks: LockFactory
    redis: Redis | None = None
    manager: WatchedRedisManager | None = None
    watchdog: PubSubWatchdog | None = None
    url: str = ""
    _watching: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def scaled_out(self) -> bool:
        return self.redis is not None

    async def ping(self) -> str | None:
        """None when Redis answers PING (or is not configured); else what went wrong."""
        if self.redis is None:
            return None
        try:
            async with asyncio.timeout(PING_TIMEOUT_SECONDS):
                await self.redis.ping()  # type: ignore[misc]  # redis-py 7: sync|async union
        except (RedisError, OSError, TimeoutError) as exc:
            return f"Redis does not answer: {exc or type(exc).__name__}"
        return None

    def pubsub_problem(self) -> str | None:
        """None while events published through Redis reach this process; else why not."""
        if self.watchdog is None:
            return None
        if self.manager is not None and not self.manager.listening:
            return "the pub/sub listener is not running"
        return None if self.watchdog.healthy else self.watchdog.problem

    async def __aenter__(self) -> Cluster:
        if self.manager is not None and self.watchdog is not None:
            logger.info("scaling out over Redis at %s, channel %s", self.url, self.manager.channel)
            self.manager.start()
            self._watching = asyncio.create_task(self.watchdog.run(), name="pubsub-watchdog")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._watching is not None:
            await stop_task(self._watching)
        if self.manager is not None:
            await self.manager.close()
        if self.redis is not None:
            await self.redis.aclose()


def build_cluster(settings: Settings, metrics: Metrics) -> Cluster:
    """The single-process parts, or the Redis ones when `REDIS_URL` is set."""
    url = settings.redis_url.get_secret_value()
    if not url:
        metrics.pubsub_healthy.set(1)
        return Cluster(
            told=MemoryLedger(settings.emitted_ledger_size, on_claim=metrics.observe_dedupe),
            seen=MemoryLedger(settings.emitted_ledger_size),
            announced=MemoryLedger(settings.emitted_ledger_size),
            read_locks=KeyedLock(),
            work_locks=KeyedLock(),
        )
    prefix = settings.redis_channel
    redis = Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=COMMAND_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 1),  # one quick retry (a pooled connection Redis dropped), no more
    )

    def failed(operation: str) -> None:
        metrics.redis_errors.labels(operation).inc()

    # local deliveries (of this process's emits and of those from other processes) without a task
    # per recipient: adapter/fanout.py
    manager = with_fanout(WatchedRedisManager)(url, prefix, redis, on_publish_error=lambda: failed("publish"))
    return Cluster(
        told=RedisLedger(redis, f"{prefix}:told", on_claim=metrics.observe_dedupe, on_error=failed),
        seen=RedisLedger(redis, f"{prefix}:seen", on_error=failed),
        announced=RedisLedger(redis, f"{prefix}:announced", on_error=failed),
        read_locks=RedisLocks(redis, f"{prefix}:lock:read", on_error=failed),
        work_locks=RedisLocks(redis, f"{prefix}:lock:work", on_error=failed),
        redis=redis,
        manager=manager,
        watchdog=PubSubWatchdog(manager, redis, settings.pubsub_check_seconds, metrics),
        url=display_url(url),
    )


def display_url(url: str) -> str:
    """The URL with its password (if any) hidden, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
