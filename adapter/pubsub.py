"""Events between sidecar processes: python-socketio's Redis manager, watched and self-healing.

`WatchedRedisManager` is `socketio.AsyncRedisManager` (an emit to a room reaches that room's
sockets on every process) with three changes:
- it publishes through a client of its own (the shared one), so a failed publish never swaps the
  connection the listener is reading from;
- it can say whether its listener still receives: `probe()` publishes a message only this
  process looks for, and waits for it to come back through the listener;
- `restart_listener()` drops the listener's connection and starts it afresh.

`PubSubWatchdog` probes every `PUBSUB_CHECK_SECONDS`. The listener has been reported to stop
receiving without any error, and after a Redis outage python-socketio waits up to a minute
between reconnection attempts; so when Redis answers PING but a probe does not come back (twice
in a row, or once right after an outage), or the listener task has ended, the watchdog restarts
the listener. Changes of state are logged once each and counted in /metrics; `healthy` feeds
`/readyz`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import socketio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapter.collector import collector
from adapter.metrics import Metrics
from adapter.shared import stop_task

__all__ = ["PubSubWatchdog", "RemoteEmit", "WatchedRedisManager"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 2.0
PROBE_METHOD = "sidecar-probe"
PROBE_PREFIX = json.dumps({"method": PROBE_METHOD})[:-1].encode()  # b'{"method": "sidecar-probe"'

# Called with (event, room or rooms, data: the emit's arguments as a list) for each emit another
# process published: the gateway keeps per-process bookkeeping (unread counts) for the sockets it
# holds. Must not block.
RemoteEmit = Callable[[str, Any, Any], None]


class WatchedRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """The Redis client manager, plus a probe of its listener and a way to restart it."""

    redis: Any  # the listener's client and subscription (python-socketio's attributes)
    pubsub: Any

    def __init__(self, url: str, channel: str, publisher: Redis, *, on_publish_error: Callable[[], None]):
        super().__init__(
            url,
            channel=channel,
            logger=logger,
            redis_options={"socket_connect_timeout": CONNECT_TIMEOUT_SECONDS},
        )
        self.on_remote_emit: RemoteEmit | None = None
        self._publisher = publisher
        self._on_publish_error = on_publish_error
        self._probes: dict[int, asyncio.Future[None]] = {}
        self._sequence = 0
        self._retired: set[asyncio.Task[Any]] = set()
        self.last_received: float | None = None

    # -- lifetime --------------------------------------------------------------------------

    def start(self) -> None:
        """Start listening now, rather than at the first client connection as python-socketio does:
        a process nobody has connected to yet must be ready too."""
        if not self.server.manager_initialized:
            self.server.manager_initialized = True
            self.initialize()

    @property
    def listening(self) -> bool:
        thread = getattr(self, "thread", None)
        return thread is not None and not thread.done()

    async def restart_listener(self) -> None:
        await self._stop_listener()
        self.thread = self.server.start_background_task(self._thread)

    async def close(self) -> None:
        await self._stop_listener()
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)

    async def _stop_listener(self) -> None:
        thread = getattr(self, "thread", None)
        if thread is not None:
            await stop_task(thread)
        self._retire(self.pubsub, self.redis)
        self.pubsub = self.redis = None
        self.connected = False

    # -- probing ---------------------------------------------------------------------------

    async def probe(self, within: float) -> float | None:
        """Publish a probe; the seconds it took to come back, or None if it did not in time.

        Redis errors propagate: Redis itself is down.
        """
        self._sequence += 1
        number = self._sequence
        arrived = asyncio.get_running_loop().create_future()
        self._probes[number] = arrived
        started = time.monotonic()
        try:
            message = json.dumps({"method": PROBE_METHOD, "host_id": self.host_id, "n": number})
            async with asyncio.timeout(within):  # not wait_for: on 3.11 it can swallow a cancel
                await self._publisher.publish(self.channel, message)
                await arrived
        except TimeoutError:
            return None
        finally:
            self._probes.pop(number, None)
        return time.monotonic() - started

    # -- python-socketio hooks -------------------------------------------------------------

    async def _publish(self, data: Any) -> Any:
        try:
            return await self._publisher.publish(self.channel, self.json.dumps(data))
        except (RedisError, OSError) as exc:
            self._on_publish_error()
            logger.error("cannot publish %s to Redis: %s", data.get("method", "a message"), exc)
            return None

    def _redis_connect(self) -> None:
        # The listener reconnects by building new clients; close the ones it leaves behind.
        self._retire(self.pubsub, self.redis)
        super()._redis_connect()

    async def _listen(self) -> Any:
        async for data in super()._listen():
            self.last_received = time.monotonic()
            if isinstance(data, bytes) and data.startswith(PROBE_PREFIX):
                self._probe_arrived(data)
                continue
            yield data

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        with collector.holding():  # no collector pause in the middle of a delivery
            await super()._handle_emit(message)
            if message.get("host_id") != self.host_id and self.on_remote_emit is not None:
                try:
                    self.on_remote_emit(message["event"], message.get("room"), message.get("data"))
                except Exception:
                    logger.exception("handling an emit from another process failed")

    # -- helpers ---------------------------------------------------------------------------

    def _probe_arrived(self, data: bytes) -> None:
        try:
            probe = json.loads(data)
        except ValueError:
            return
        if probe.get("host_id") != self.host_id:
            return  # another process's probe
        arrived = self._probes.get(probe.get("n"))
        if arrived is not None and not arrived.done():
            arrived.set_result(None)

    def _retire(self, *clients: Any) -> None:
        for client in clients:
            if client is None:
                continue
            task = asyncio.ensure_future(_close_quietly(client))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)


async def _close_quietly(client: Any) -> None:
    with contextlib.suppress(Exception):
        await client.aclose()


class PubSubWatchdog:
    """Checks, every `interval` seconds, that published events reach this process; heals it."""

    def __init__(self, manager: WatchedRedisManager, redis: Redis, interval: float, metrics: Metrics):
        self._manager = manager
        self._redis = redis
        self._interval = interval
        self._metrics = metrics
        self._misses = 0
        self._after_outage = False
        self.healthy = False
        self.last_ok: float | None = None
        self.problem: str | None = "not checked yet"

    async def run(self) -> None:
        """Check forever (until cancelled), one check per interval."""
        while True:
            started = time.monotonic()
            try:
                await self.check()
            except Exception:  # the watchdog itself must not die
                logger.exception("pub/sub check failed")
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))

    async def check(self) -> str:
        """One check; returns its outcome: ok, no_echo or redis_down."""
        if not self._manager.listening:
            await self._recover("listener_stopped")
        try:
            async with asyncio.timeout(self._interval):
                await self._redis.ping()  # type: ignore[misc]  # redis-py 7: sync|async union
            seconds = await self._manager.probe(within=self._interval)
        except (RedisError, OSError, TimeoutError) as exc:
            self._after_outage = True
            return self._outcome("redis_down", f"Redis does not answer: {exc or type(exc).__name__}")
        if seconds is not None:
            self._misses, self._after_outage = 0, False
            self._metrics.pubsub_probe_seconds.observe(seconds)
            self.last_ok = time.monotonic()
            return self._outcome("ok", None)
        self._misses += 1
        if self._misses >= 2 or self._after_outage:
            self._misses, self._after_outage = 0, False
            await self._recover("no_echo")
        return self._outcome("no_echo", "Redis answers, but published events do not come back")

    async def _recover(self, reason: str) -> None:
        logger.warning("pub/sub listener restarted (%s)", reason.replace("_", " "))
        self._metrics.pubsub_recoveries.labels(reason).inc()
        await self._manager.restart_listener()

    def _outcome(self, outcome: str, problem: str | None) -> str:
        self._metrics.pubsub_probes.labels(outcome).inc()
        healthy = problem is None
        if healthy and not self.healthy:
            logger.info("pub/sub over Redis is working (channel %s)", self._manager.channel)
        elif not healthy and (self.healthy or problem != self.problem):
            logger.warning("pub/sub over Redis is not working: %s", problem)
        self.healthy, self.problem = healthy, problem
        self._metrics.pubsub_healthy.set(1 if healthy else 0)
        return outcome
