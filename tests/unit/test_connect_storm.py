"""Many sockets connecting at once: batched user checks, catch-ups a few at a time, clients that
leave halfway. A real uvicorn port, python-socketio clients, the fake Strapi of test_inbox."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
import respx
import websockets

from adapter import inbox
from adapter.app import Sidecar, build_sidecar
from tests.conftest import legacy_token, make_settings
from tests.serving import eventually, serve
from tests.unit.test_gateway import SYNC, Client
from tests.unit.test_inbox import USER, FakeStrapi, doc

STORM = 40


@dataclass
class Running:
    url: str
    sidecar: Sidecar
    fake: FakeStrapi
    clients: list[Client] = field(default_factory=list)

    def client(self) -> Client:
        client = Client(self.url)
        self.clients.append(client)
        return client


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    fake = FakeStrapi(users=range(1, STORM + 1))
    router = respx.MockRouter(assert_all_mocked=True, assert_all_called=False)
    router.route(host="strapi.test").mock(side_effect=fake.handle)
    sidecar = build_sidecar(make_settings(), transport=httpx.MockTransport(router.async_handler))
    async with serve(sidecar.asgi) as url:
        state = Running(url, sidecar, fake)
        try:
            yield state
        finally:
            for client in state.clients:
                if client.sio.connected:
                    await client.sio.disconnect()


def user_requests(fake: FakeStrapi) -> list[httpx.Request]:
    return [r for r in fake.requests if r.url.path.startswith("/api/users")]


def users_asked(fake: FakeStrapi) -> list[int]:
    """Every user id the sidecar asked Strapi about, one entry per time asked."""
    asked: list[int] = []
    for request in user_requests(fake):
        if request.url.path == "/api/users":
            asked += [int(v) for k, v in request.url.params.multi_items() if k.startswith("filters[id][$in]")]
        else:
            asked.append(int(request.url.path.rsplit("/", 1)[1]))
    return asked


def catch_up_requests(fake: FakeStrapi, user_id: int) -> list[httpx.Request]:
    """Requests for notifications addressed to the user (alone, or in a batch)."""
    return [
        r
        for r in fake.requests
        if r.url.path.startswith("/api/notifications")
        and any(
            "[notification_users][id]" in key and key.startswith("filters") and value == str(user_id)
            for key, value in r.url.params.multi_items()
        )
    ]


def handshakes(sidecar: Sidecar, outcome: str) -> float:
    for line in sidecar.metrics.render().decode().splitlines():
        if line.startswith(f'sidecar_handshakes_total{{outcome="{outcome}"}}'):
            return float(line.split()[-1])
    return 0.0


async def test_a_storm_asks_strapi_about_each_user_once_and_in_few_requests(running: Running) -> None:
    running.fake.publish(1, minute=1, users=range(1, STORM + 1))
    clients = [running.client() for _ in range(STORM)]

    await asyncio.gather(*(client.connect(n) for n, client in enumerate(clients, 1)))
    await eventually(lambda: all(client.got(SYNC) for client in clients))

    assert sorted(users_asked(running.fake)) == list(range(1, STORM + 1))
    assert len(user_requests(running.fake)) <= 10
    inbox_requests = [r for r in running.fake.requests if "notifications" in r.url.path]
    assert len(inbox_requests) <= 10  # catch-ups batched too: two requests per batch
    assert all(client.got(SYNC)[0]["unread"] == 1 for client in clients)
    assert [item["documentId"] for item in clients[0].got(SYNC)[0]["items"]] == [doc(1)]


async def test_catch_ups_ask_strapi_a_few_at_a_time(running: Running) -> None:
    in_flight = 0
    most = 0

    async def slow_inbox(request: httpx.Request) -> None:
        nonlocal in_flight, most
        if "notifications" in request.url.path:
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1

    running.fake.hooks.append(slow_inbox)
    clients = [running.client() for _ in range(STORM)]

    await asyncio.gather(*(client.connect(n) for n, client in enumerate(clients, 1)))
    await eventually(lambda: all(client.got(SYNC) for client in clients))

    assert 1 <= most <= inbox.CATCH_UP_BATCHES_IN_FLIGHT


async def test_handshakes_and_healthz_are_not_held_up_by_slow_catch_ups(running: Running) -> None:
    released = asyncio.Event()

    async def stuck_inbox(request: httpx.Request) -> None:
        if "notifications" in request.url.path:
            await released.wait()

    running.fake.hooks.append(stuck_inbox)
    clients = [running.client() for _ in range(STORM)]
    started = time.monotonic()

    await asyncio.gather(*(client.connect(n) for n, client in enumerate(clients, 1)))
    connected_after = time.monotonic() - started
    async with httpx.AsyncClient(base_url=running.url) as http:
        health = await http.get("/healthz", timeout=2)
    released.set()
    await eventually(lambda: all(client.got(SYNC) for client in clients))

    assert connected_after < 3  # every catch-up is still stuck: only the user checks were waited for
    assert health.status_code == 200


async def test_a_socket_gone_before_its_catch_up_turn_costs_strapi_nothing(
    running: Running,
) -> None:
    running.sidecar.gateway._inbox._batches_in_flight = 1  # one batch of catch-ups at a time
    released = asyncio.Event()

    async def stuck_inbox(request: httpx.Request) -> None:
        if "notifications" in request.url.path:
            await released.wait()

    running.fake.hooks.append(stuck_inbox)
    first = running.client()
    await first.connect(1)
    await eventually(lambda: catch_up_requests(running.fake, 1))  # user 1's catch-up holds the turn
    gone = running.client()
    await gone.connect(2)
    await gone.sio.disconnect()
    await eventually(lambda: 2 not in running.sidecar.gateway._sockets)
    released.set()
    await eventually(lambda: first.got(SYNC))
    await asyncio.sleep(0.1)

    assert catch_up_requests(running.fake, 2) == []
    assert gone.got(SYNC) == []


async def test_a_client_dropped_while_its_user_is_checked_leaves_nothing_behind(running: Running) -> None:
    """Its transport closed meanwhile (a ping timeout in a busy storm, say): python-socketio sends
    no disconnect event for a socket still in its handshake, so the handshake must notice."""

    async def transport_drops_during_the_check(request: httpx.Request) -> None:
        if request.url.path.startswith("/api/users"):
            for eio_socket in list(running.sidecar.sio.eio.sockets.values()):
                await eio_socket.close(wait=False, abort=True)

    running.fake.hooks.append(transport_drops_during_the_check)
    ws_url = running.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(ws_url) as ws:
        assert (await ws.recv()).startswith("0")  # engine.io open
        await ws.send("40" + json.dumps({"token": legacy_token(USER)}))
        await eventually(lambda: handshakes(running.sidecar, "left") == 1)

    assert handshakes(running.sidecar, "ok") == 0
    assert running.sidecar.gateway._sockets == {}
    assert running.sidecar.gateway._expiry == {}
    assert catch_up_requests(running.fake, USER) == []
    # python-socketio forgot the socket too (a refused handshake is cleaned up)
    assert not running.sidecar.sio.manager.rooms.get("/", {}).get(None)
    # and the next socket gets in as usual
    running.fake.hooks.clear()
    client = running.client()
    await client.connect(USER)
    await eventually(lambda: client.got(SYNC))
