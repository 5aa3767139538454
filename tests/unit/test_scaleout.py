"""Scale-out over Redis (adapter/scaleout.py, adapter/pubsub.py): two whole sidecars on real uvicorn
ports sharing a real redis-server, real python-socketio clients; Strapi is mocked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
import socketio
from pydantic import ValidationError
from redis.asyncio import Redis

from adapter.app import build_sidecar
from adapter.metrics import Metrics
from adapter.pubsub import PubSubWatchdog, WatchedRedisManager
from adapter.scaleout import build_cluster, display_url
from adapter.settings import Settings, describe_validation_error
from adapter.shared import MemoryLedger, RedisLedger
from adapter.sockets import create_socket_server
from tests.conftest import API_TOKEN, JWT_SECRET, STRAPI_URL, WEBHOOK_SECRET, legacy_token, make_settings
from tests.redis_server import RedisServer
from tests.serving import eventually, serve

DOC = "adjutl3unow7mrzedbqgrovl"
NOTIFICATION_UID = "api::notification.notification"


def _published(users: list[int]) -> dict[str, Any]:
    return {
        "id": 8,
        "documentId": DOC,
        "message": "Release notes are out",
        "url": "/news/1",
        "date": "2026-11-25",
        "allUsers": False,
        "document": None,
        "publishedAt": "2026-11-25T18:42:12.665Z",
        "updatedAt": "2026-11-25T18:42:12.665Z",
        "notification_users": [{"id": uid} for uid in users],
    }


def _strapi() -> respx.MockRouter:
    """Users 5, 6 and 7; one notification for 5 and 6; empty lists (no unread, no reads)."""
    router = respx.MockRouter(assert_all_mocked=True, assert_all_called=False)
    empty = {"data": [], "meta": {"pagination": {"page": 1, "pageSize": 25, "pageCount": 0, "total": 0}}}
    router.get(url__regex=rf"{STRAPI_URL}/api/users/(?P<user_id>\d+)$").mock(
        side_effect=lambda request, user_id: httpx.Response(200, json={"id": int(user_id), "blocked": False})
    )
    router.get(f"{STRAPI_URL}/api/users/count").respond(json=3)
    router.get(f"{STRAPI_URL}/api/notifications/{DOC}").respond(json={"data": _published([5, 6]), "meta": {}})
    router.get(f"{STRAPI_URL}/api/notifications").respond(json=empty)
    router.get(f"{STRAPI_URL}/api/read-notifications").respond(json=empty)
    router.get(f"{STRAPI_URL}/_health").respond(204)
    return router


def _settings(redis: RedisServer | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"reconcile_interval": 0, "pubsub_check_seconds": 0.2}
    if redis is not None:
        values["redis_url"] = redis.url
    values.update(overrides)
    return make_settings(**values)


class Client:
    """A python-socketio client recording every event."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.sio.on("*", lambda event, data: self.events.append((event, data)))

    def got(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def connect(self, url: str, user_id: int) -> Client:
        await self.sio.connect(url, transports=["websocket"], auth={"token": legacy_token(user_id)})
        await eventually(lambda: self.got("notification:sync"))
        return self


@pytest.fixture
async def two(redis_server: RedisServer) -> AsyncIterator[tuple[str, str, respx.MockRouter]]:
    """Sidecars A and B sharing one Redis."""
    router = _strapi()
    transport = httpx.MockTransport(router.async_handler)
    a = build_sidecar(_settings(redis_server), transport=transport)
    b = build_sidecar(_settings(redis_server), transport=transport)
    async with serve(a.asgi) as url_a, serve(b.asgi) as url_b:
        async with asyncio.timeout(5):
            while not (await _ready(url_a) and await _ready(url_b)):
                await asyncio.sleep(0.05)
        yield url_a, url_b, router


async def _ready(url: str) -> bool:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{url}/readyz")).status_code == 200


async def _webhook(url: str, event: str = "entry.publish") -> None:
    body = {"event": event, "uid": NOTIFICATION_UID, "entry": _published([5, 6])}
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{url}/webhooks/strapi", json=body, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"}
        )
    assert response.status_code == 202


async def _metric(url: str, name: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


# -- across processes ------------------------------------------------------------------------


async def test_scaleout_a_webhook_to_one_process_reaches_sockets_on_the_other(
    two: tuple[str, str, respx.MockRouter],
) -> None:
    url_a, url_b, _ = two
    alice = await Client().connect(url_b, 5)
    bob = await Client().connect(url_a, 6)
    try:
        await _webhook(url_a)
        await eventually(lambda: alice.got("notificacion") and bob.got("notificacion"))
        # Each process keeps the unread count of its own sockets, whoever emitted.
        await eventually(lambda: alice.got("notification:unread") and bob.got("notification:unread"))
        await asyncio.sleep(0.3)
        assert [n["documentId"] for n in alice.got("notificacion")] == [DOC]
        assert [n["documentId"] for n in bob.got("notificacion")] == [DOC]
        assert alice.got("notification:unread") == [{"unread": 1}]
        assert bob.got("notification:unread") == [{"unread": 1}]
    finally:
        await alice.sio.disconnect()
        await bob.sio.disconnect()


async def test_scaleout_the_same_webhook_at_both_processes_tells_nobody_twice(
    two: tuple[str, str, respx.MockRouter],
) -> None:
    url_a, url_b, _ = two
    alice = await Client().connect(url_b, 5)
    bob = await Client().connect(url_a, 6)
    try:
        await asyncio.gather(_webhook(url_a), _webhook(url_b))
        await eventually(lambda: alice.got("notificacion") and bob.got("notificacion"))
        await _until_dedupe_hits(1, url_a, url_b)  # the second process told nobody
        await _webhook(url_b)  # and once more, later
        await _until_dedupe_hits(2, url_a, url_b)
        await asyncio.sleep(0.3)
        assert len(alice.got("notificacion")) == 1
        assert len(bob.got("notificacion")) == 1
    finally:
        await alice.sio.disconnect()
        await bob.sio.disconnect()


async def _until_dedupe_hits(count: int, *urls: str) -> None:
    async with asyncio.timeout(5):
        while sum([await _metric(url, "sidecar_webhook_dedupe_hits_total") for url in urls]) < count:
            await asyncio.sleep(0.05)


async def test_scaleout_readyz_reports_redis_and_pubsub(
    two: tuple[str, str, respx.MockRouter], redis_server: RedisServer
) -> None:
    url_a, _, _ = two
    async with httpx.AsyncClient() as http:
        ready = await http.get(f"{url_a}/readyz")
        redis_server.kill()
        unready = await http.get(f"{url_a}/readyz")

    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"strapi": {"ok": True}, "redis": {"ok": True}, "pubsub": {"ok": True}},
    }
    assert unready.status_code == 503
    body = unready.json()
    assert body["status"] == "unready"
    assert body["checks"]["strapi"] == {"ok": True}
    assert body["checks"]["redis"]["ok"] is False
    assert "Redis does not answer" in body["checks"]["redis"]["error"]


# -- the watched manager ---------------------------------------------------------------------


@pytest.fixture
async def watched(
    redis_server: RedisServer,
) -> AsyncIterator[tuple[WatchedRedisManager, PubSubWatchdog, Metrics]]:
    metrics = Metrics()
    publisher = Redis.from_url(redis_server.url, socket_connect_timeout=1)
    manager = WatchedRedisManager(redis_server.url, "t", publisher, on_publish_error=lambda: None)
    socketio.AsyncServer(async_mode="asgi", client_manager=manager)
    watchdog = PubSubWatchdog(manager, publisher, 0.5, metrics)
    manager.start()
    try:
        yield manager, watchdog, metrics
    finally:
        await manager.close()
        await publisher.aclose()


def _count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_pubsub_watchdog_sees_its_probe_come_back(
    watched: tuple[WatchedRedisManager, PubSubWatchdog, Metrics],
) -> None:
    _, watchdog, metrics = watched

    outcome = await _until_ok(watchdog)

    assert outcome == "ok"
    assert watchdog.healthy
    assert _count(metrics, "sidecar_pubsub_healthy") == 1
    assert _count(metrics, "sidecar_pubsub_probe_seconds_count") >= 1


async def _until_ok(watchdog: PubSubWatchdog, tries: int = 20) -> str:
    outcome = ""
    for _ in range(tries):
        outcome = await watchdog.check()
        if outcome == "ok":
            break
    return outcome


async def test_pubsub_watchdog_restarts_a_listener_that_stopped_receiving_silently(
    watched: tuple[WatchedRedisManager, PubSubWatchdog, Metrics], caplog: pytest.LogCaptureFixture
) -> None:
    manager, watchdog, metrics = watched
    assert await _until_ok(watchdog) == "ok"

    # The reported failure: the listener task is alive, no error anywhere, nothing arrives (as
    # on a half-open connection: the read never returns).
    async def never(*args: Any, **kwargs: Any) -> None:
        await asyncio.Event().wait()

    manager.pubsub.parse_response = never
    await manager._publisher.publish(manager.channel, b"flush")  # the read under way gets this one
    await asyncio.sleep(0.1)

    outcomes = [await watchdog.check() for _ in range(2)]
    recovered = await _until_ok(watchdog)

    assert outcomes == ["no_echo", "no_echo"]
    assert recovered == "ok"
    assert _count(metrics, "sidecar_pubsub_recoveries_total", reason="no_echo") == 1
    assert "pub/sub listener restarted (no echo)" in caplog.text


async def test_pubsub_watchdog_restarts_a_listener_task_that_ended(
    watched: tuple[WatchedRedisManager, PubSubWatchdog, Metrics],
) -> None:
    manager, watchdog, metrics = watched
    manager.thread.cancel()
    await asyncio.sleep(0.05)
    assert not manager.listening

    outcome = await _until_ok(watchdog)

    assert outcome == "ok"
    assert manager.listening
    assert _count(metrics, "sidecar_pubsub_recoveries_total", reason="listener_stopped") == 1


async def test_pubsub_watchdog_heals_after_redis_comes_back(
    watched: tuple[WatchedRedisManager, PubSubWatchdog, Metrics], redis_server: RedisServer
) -> None:
    manager, watchdog, metrics = watched
    assert await _until_ok(watchdog) == "ok"
    received: list[Any] = []
    manager.on_remote_emit = lambda event, room, data: received.append(event)

    redis_server.kill()
    down = await watchdog.check()
    await asyncio.sleep(2.5)  # python-socketio's own retries back off meanwhile
    redis_server.start()
    healed = await _until_ok(watchdog)
    # Another process's emit reaches this one again.
    async with Redis.from_url(redis_server.url) as other:
        await other.publish(
            "t", manager.json.dumps({"method": "emit", "event": "ping", "data": [1], "host_id": "x"})
        )
    await eventually(lambda: received == ["ping"])

    assert down == "redis_down"
    assert healed == "ok"
    assert watchdog.healthy
    assert _count(metrics, "sidecar_pubsub_probes_total", outcome="redis_down") >= 1


async def test_pubsub_publish_failure_is_logged_and_counted_not_raised(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[int] = []
    async with Redis.from_url(redis_server.url, socket_connect_timeout=1) as publisher:
        manager = WatchedRedisManager(
            redis_server.url, "t", publisher, on_publish_error=lambda: failures.append(1)
        )
        socketio.AsyncServer(async_mode="asgi", client_manager=manager)
        redis_server.kill()
        with caplog.at_level(logging.ERROR):
            await manager.emit("notificacion", {"x": 1}, namespace="/", room="user-5")

    assert failures == [1]
    assert "cannot publish emit to Redis" in caplog.text


# -- configuration ---------------------------------------------------------------------------


def test_scaleout_without_redis_url_everything_stays_in_process() -> None:
    metrics = Metrics()
    cluster = build_cluster(_settings(None), metrics)

    assert not cluster.scaled_out
    assert cluster.manager is None
    assert isinstance(cluster.told, MemoryLedger)
    assert _count(metrics, "sidecar_pubsub_healthy") == 1


async def test_scaleout_with_redis_url_shares_ledgers_under_the_channel_prefix(
    redis_server: RedisServer,
) -> None:
    settings = _settings(redis_server, redis_channel="site-a")
    cluster = build_cluster(settings, Metrics())
    create_socket_server(settings, client_manager=cluster.manager)
    async with cluster:
        assert cluster.scaled_out
        assert isinstance(cluster.told, RedisLedger)
        assert cluster.told.key(DOC) == f"site-a:told:{DOC}"
        assert cluster.manager is not None
        assert cluster.manager.channel == "site-a"
        assert await cluster.ping() is None


def test_scaleout_redis_url_must_be_a_redis_url_and_never_echoes() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(  # the same as `python -m adapter` shows
            _env_file=None,
            strapi_api_token=API_TOKEN,
            strapi_jwt_secret=JWT_SECRET,
            webhook_secret=WEBHOOK_SECRET,
            redis_url="http://:hunter2@example.com",
        )
    line = describe_validation_error(caught.value)
    assert line.startswith("invalid configuration: REDIS_URL value error, must start with redis://")
    assert "hunter2" not in line
    assert "hunter2" not in str(caught.value)


def test_scaleout_display_url_hides_the_password() -> None:
    assert display_url("redis://:s3cret@cache:6380/1") == "redis://:***@cache:6380/1"
    assert display_url("rediss://app:s3cret@cache/0") == "rediss://app:***@cache/0"
    assert display_url("redis://cache:6379/0") == "redis://cache:6379/0"
