"""Scale-out against the real Strapi: three sidecar processes sharing a real redis-server.

    Strapi ──webhook──> tap ──> A ─┐
                                   ├── Redis (pub/sub + shared state) ── B ── clients
                                   └─────────────────────────────────── C ── clients

Strapi's webhooks reach process A only; clients connect to B and C (the official socket.io-client,
WebSocket transport as the README recommends behind a load balancer).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.harness import (
    ARTIFACTS,
    ROOT,
    JsClient,
    RedisServer,
    SidecarProcess,
    Stack,
    free_port,
    wait_for,
)

PASSWORD = "Passw0rd!"
PROBE_SECONDS = "0.5"
NOTIFICATION_UID = "api::notification.notification"


@dataclass
class Cluster:
    stack: Stack
    redis: RedisServer
    a: SidecarProcess
    b: SidecarProcess
    c: SidecarProcess

    @property
    def processes(self) -> list[SidecarProcess]:
        return [self.a, self.b, self.c]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Strapi, Redis, and sidecars A (webhook target), B and C, all on REDIS_URL."""
    redis = RedisServer(log_path=ARTIFACTS / "redis-scaleout.log").start()
    env = {"REDIS_URL": redis.url, "PUBSUB_CHECK_SECONDS": PROBE_SECONDS, "LOG_FORMAT": "json"}
    stack = Stack("legacy", "scaleout", sidecar_env=env)
    extras: list[SidecarProcess] = []
    try:
        stack.start()
        stack.create_user("bystander")  # so a notification for some users is never "every user"
        for name in ("b", "c"):
            extras.append(stack.extra_sidecar(name))
            extras[-1].start()
        running = Cluster(stack, redis, stack.sidecar, extras[0], extras[1])
        asyncio.run(_all_ready(running.processes))
        yield running
    finally:
        for process in extras:
            process.stop()
        stack.close()
        redis.stop()


async def _readyz(process: SidecarProcess) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(f"{process.url}/readyz")


async def _ready_status(process: SidecarProcess) -> int | None:
    try:
        return (await _readyz(process)).status_code
    except httpx.HTTPError:
        return None  # not listening (yet)


async def _all_ready(processes: list[SidecarProcess], within: float = 30) -> None:
    async def ready() -> bool:
        return all(status == 200 for status in await asyncio.gather(*(_ready_status(p) for p in processes)))

    await wait_for(ready, within=within, every=0.2)


async def _metric(process: SidecarProcess, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{process.url}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        sample, value = line.rsplit(" ", 1)
        metric = sample.split("{", 1)[0]
        if metric == name and all(f'{key}="{val}"' in sample for key, val in labels.items()):
            total += float(value)
    return total


@pytest.fixture
async def users(cluster: Cluster, unique: str) -> AsyncIterator[tuple[list[int], JsClient, JsClient]]:
    """Two users; one connected to B, the other to C, both caught up."""
    stack = cluster.stack
    ids = [stack.create_user(f"{unique}b"), stack.create_user(f"{unique}c")]
    on_b = await JsClient.start(
        stack.strapi.url, cluster.b.url, f"{unique}b", PASSWORD, "--transports", "websocket"
    )
    on_c = await JsClient.start(
        stack.strapi.url, cluster.c.url, f"{unique}c", PASSWORD, "--transports", "websocket"
    )
    try:
        for client in (on_b, on_c):
            await client.wait("connected")
            await wait_for(lambda client=client: client.events("notification:sync"))
        yield ids, on_b, on_c
    finally:
        await on_b.close()
        await on_c.close()


async def _emits(cluster: Cluster) -> float:
    return sum([await _metric(p, "sidecar_emits_total", event="notificacion") for p in cluster.processes])


def _publish(stack: Stack, user_ids: list[int], message: str) -> str:
    created = stack.create_notification(message=message, date="2026-11-25", notification_users=user_ids)
    return str(created["documentId"])


async def _told_once(clients: list[JsClient], document_id: str, quiet: float = 1.5) -> None:
    def got(client: JsClient) -> list[Any]:
        return [n for n in client.events("notificacion") if n["documentId"] == document_id]

    await wait_for(lambda: all(got(client) for client in clients), within=20)
    await asyncio.sleep(quiet)  # and nothing more comes
    assert [len(got(client)) for client in clients] == [1] * len(clients)


@pytest.mark.timeout(120)
async def test_scaleout_a_webhook_at_one_process_reaches_clients_on_the_others_once(
    cluster: Cluster, users: tuple[list[int], JsClient, JsClient]
) -> None:
    ids, on_b, on_c = users
    emitted_before = await _emits(cluster)

    document_id = _publish(cluster.stack, ids, "one process, every process")

    await _told_once([on_b, on_c], document_id)
    # One emit in the whole cluster: on A, where Strapi's webhook went, or on whichever process's
    # reconciler claimed the notification first. B's and C's clients are on two processes, so at
    # least one of them got it from another process, through Redis.
    assert await _emits(cluster) == emitted_before + 1
    assert cluster.stack.tap.count(uid=NOTIFICATION_UID, event="entry.publish", document_id=document_id) >= 1
    # B and C keep their own sockets' unread counts, though A did the emit.
    assert on_b.events("notification:unread")[-1] == {"unread": 1}
    assert on_c.events("notification:unread")[-1] == {"unread": 1}
    assert await _metric(cluster.b, "sidecar_sockets_connected") >= 1
    assert await _metric(cluster.c, "sidecar_sockets_connected") >= 1


@pytest.mark.timeout(120)
async def test_scaleout_a_duplicate_delivery_to_another_process_tells_nobody_twice(
    cluster: Cluster, users: tuple[list[int], JsClient, JsClient]
) -> None:
    ids, on_b, on_c = users
    stack = cluster.stack
    document_id = _publish(stack, ids, "delivered twice")
    await _told_once([on_b, on_c], document_id, quiet=0)
    hits_before = await _metric(cluster.b, "sidecar_webhook_dedupe_hits_total")
    accepted_before = await _metric(cluster.b, "sidecar_webhooks_total")

    # Strapi's publish webhook again, this time to B (as a load balancer might route it).
    entry = stack.notification(document_id)
    body = {"event": "entry.publish", "model": "notification", "uid": NOTIFICATION_UID, "entry": entry}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{cluster.b.url}/webhooks/strapi",
            content=json.dumps(body),
            headers={"Authorization": f"Bearer {stack.webhook_secret}", "Content-Type": "application/json"},
        )
    assert response.status_code == 202

    async def b_deduped() -> bool:
        return await _metric(cluster.b, "sidecar_webhook_dedupe_hits_total") > hits_before

    await wait_for(b_deduped, within=15)
    await _told_once([on_b, on_c], document_id)
    assert await _metric(cluster.b, "sidecar_webhooks_total") == accepted_before + 1


@pytest.mark.timeout(150)
async def test_scaleout_redis_restart_readyz_follows_and_delivery_resumes(
    cluster: Cluster, users: tuple[list[int], JsClient, JsClient]
) -> None:
    ids, on_b, on_c = users
    recoveries_before = [
        await _metric(p, "sidecar_pubsub_probes_total", outcome="redis_down") for p in cluster.processes
    ]

    cluster.redis.kill()

    async def all_unready() -> bool:
        answers = await asyncio.gather(*(_readyz(p) for p in cluster.processes))
        return all(answer.status_code == 503 for answer in answers)

    try:
        await wait_for(all_unready, within=15, every=0.2)
        body = (await _readyz(cluster.b)).json()
        assert body["status"] == "unready"
        assert body["checks"]["redis"]["ok"] is False
        assert "Redis does not answer" in body["checks"]["redis"]["error"]

        async def b_pubsub_unhealthy() -> bool:  # at the watchdog's next check
            return await _metric(cluster.b, "sidecar_pubsub_healthy") == 0

        await wait_for(b_pubsub_unhealthy, within=10, every=0.2)
        await asyncio.sleep(3)  # long enough for python-socketio's own reconnection to back off
    finally:
        if not cluster.redis.running:  # whatever happened, the next tests need it
            cluster.redis.start()
    await _all_ready(cluster.processes, within=20)

    document_id = _publish(cluster.stack, ids, "after Redis came back")
    await _told_once([on_b, on_c], document_id)
    for process, before in zip(cluster.processes, recoveries_before, strict=True):
        assert await _metric(process, "sidecar_pubsub_probes_total", outcome="redis_down") > before
        assert await _metric(process, "sidecar_pubsub_healthy") == 1
    assert "pub/sub over Redis is working" in cluster.b.log_text()
    for process in cluster.processes:
        assert "Traceback" not in process.log_text()


@pytest.mark.timeout(150)
async def test_scaleout_workers_flag_runs_processes_that_join_the_cluster(
    cluster: Cluster, unique: str
) -> None:
    stack = cluster.stack
    port = free_port()
    while any(_port_busy(p) for p in (port, port + 1)):
        port = free_port()
    supervisor = _start_workers(cluster, port, count=2)
    workers = [SidecarProcess(port + i, {}, ARTIFACTS / "unused.log") for i in range(2)]
    client = None
    try:
        await _all_ready(workers, within=30)
        user_id = stack.create_user(f"{unique}w")
        client = await JsClient.start(
            stack.strapi.url, workers[1].url, f"{unique}w", PASSWORD, "--transports", "websocket"
        )
        await client.wait("connected")
        document_id = _publish(stack, [user_id], "to a worker")
        await _told_once([client], document_id)
    finally:
        if client is not None:
            await client.close()
        supervisor.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(supervisor.wait, 30)
    assert code == 0
    text = (ARTIFACTS / "sidecar-scaleout-workers.log").read_text()
    assert "[worker 1]" in text
    assert "all workers stopped" in text


def _start_workers(cluster: Cluster, port: int, count: int) -> subprocess.Popen[bytes]:
    """`python -m adapter --workers N`, configured as A is (same Strapi, same Redis)."""
    env = {
        **os.environ,
        **cluster.a._env,
        "STRAPI_URL": cluster.stack.strapi.url,
        "SIDECAR_PORT": str(port),
        "LOG_FORMAT": "text",
    }
    with (ARTIFACTS / "sidecar-scaleout-workers.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "adapter", "--env-file", os.devnull, "--workers", str(count)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
