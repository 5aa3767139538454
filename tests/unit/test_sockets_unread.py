"""The live unread count: exact from Strapi at catch-up, then kept by deltas, so a read costs no
count queries; in one process and across processes (REDIS_URL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from adapter.app import Sidecar, build_sidecar
from tests.conftest import make_settings
from tests.redis_server import RedisServer
from tests.serving import eventually, serve
from tests.unit import test_gateway
from tests.unit.test_gateway import (
    NOTIFICATION,
    QUIET,
    READ,
    READ_ALL,
    SYNC,
    UNREAD,
    Client,
    Running,
    inbox_of_three,
    wire,
)
from tests.unit.test_inbox import OTHER_USER, USER, FakeStrapi, doc

# The gateway suite's sidecar on a real port, over this module's fake Strapi.
running = test_gateway.running
overrides = test_gateway.overrides

READERS = 40


@pytest.fixture
def fake() -> FakeStrapi:
    return FakeStrapi(users=range(1, READERS + 1))


def requests_since(fake: FakeStrapi, start: int) -> list[str]:
    return [f"{r.method} {r.url.path}" for r in fake.requests[start:]]


async def test_a_read_costs_three_strapi_requests_and_no_recount(running: Running) -> None:
    inbox_of_three(running.fake)  # user 5: 1 and 3 unread
    a = await running.connect(USER)
    b = await running.connect(USER)
    assert a.got(SYNC)[0]["unread"] == b.got(SYNC)[0]["unread"] == 2
    start = len(running.fake.requests)

    ack = await a.call(READ, {"notificationId": doc(3)})

    assert ack == {"ok": True, "notificationId": doc(3), "alreadyRead": False}
    await eventually(lambda: a.got(UNREAD) and b.got(UNREAD))
    await asyncio.sleep(QUIET)
    assert a.got(UNREAD) == b.got(UNREAD) == [{"unread": 1}]
    # find the notification, find its READNOTIFICATION, create it: nothing else
    assert requests_since(running.fake, start) == [
        "GET /api/notifications",
        "GET /api/read-notifications",
        "POST /api/read-notifications",
    ]


async def test_a_read_of_a_notification_announced_here_costs_two_requests(running: Running) -> None:
    a = await running.connect(USER)
    row = running.fake.publish(1, minute=1, users=(USER, OTHER_USER))
    await running.sidecar.gateway.notify([USER, OTHER_USER], wire(row))
    await eventually(lambda: a.got(UNREAD))
    start = len(running.fake.requests)

    ack = await a.call(READ, {"notificationId": row["id"]})  # the id the notificacion carried

    assert ack == {"ok": True, "notificationId": doc(1), "alreadyRead": False}
    await eventually(lambda: len(a.got(UNREAD)) == 2)
    assert a.got(UNREAD) == [{"unread": 1}, {"unread": 0}]
    assert requests_since(running.fake, start) == [
        "GET /api/read-notifications",
        "POST /api/read-notifications",
    ]


async def test_reads_then_read_all_keep_the_count_exact_without_asking_strapi(running: Running) -> None:
    for number in range(1, 5):
        running.fake.publish(number, minute=number)
    a = await running.connect(USER)
    b = await running.connect(USER)
    assert b.got(SYNC)[0]["unread"] == 4

    await a.call(READ, {"notificationId": doc(1)})
    await a.call(READ, {"notificationId": doc(1)})  # again: already read, no change
    await eventually(lambda: len(b.got(UNREAD)) == 1)
    ack = await a.call(READ_ALL)

    assert ack == {"ok": True, "marked": 3}
    await eventually(lambda: len(b.got(UNREAD)) == 2)
    await asyncio.sleep(QUIET)
    assert b.got(UNREAD) == [{"unread": 3}, {"unread": 0}]
    assert a.got(UNREAD) == [{"unread": 3}, {"unread": 0}]
    # ...and it is what Strapi says
    assert (await a.call(SYNC))["unread"] == 0


async def test_a_burst_of_readers_costs_a_handful_of_requests_and_each_count_drops_by_one(
    running: Running,
) -> None:
    users = range(1, READERS + 1)
    running.fake.publish(1, minute=1, users=users)
    running.fake.publish(2, minute=2, users=users)
    clients = [await running.connect(user_id) for user_id in users]
    assert {c.got(SYNC)[0]["unread"] for c in clients} == {2}
    start = len(running.fake.requests)

    acks = await asyncio.gather(*(c.call(READ, {"notificationId": doc(2)}) for c in clients))

    assert all(ack == {"ok": True, "notificationId": doc(2), "alreadyRead": False} for ack in acks)
    await eventually(lambda: all(c.got(UNREAD) for c in clients))
    await asyncio.sleep(QUIET)
    assert all(c.got(UNREAD) == [{"unread": 1}] for c in clients)
    assert len(requests_since(running.fake, start)) <= 8
    assert [r["users"] for r in running.fake.receipts_of(doc(2))] == [set(users)]


async def test_an_echo_seen_twice_counts_once(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    start = len(running.fake.requests)

    # The webhook of a read another process recorded arrives after that process's own echo.
    await running.sidecar.gateway.read_elsewhere(doc(3), [USER])
    await running.sidecar.gateway.read_elsewhere(doc(3), [USER])

    await eventually(lambda: len(a.got(READ)) == 2)
    await asyncio.sleep(QUIET)
    assert a.got(UNREAD) == [{"unread": 1}]
    assert requests_since(running.fake, start) == []


async def test_the_count_never_goes_below_zero(running: Running) -> None:
    running.fake.publish(1, minute=1)
    running.fake.read(doc(1), USER)
    a = await running.connect(USER)
    assert a.got(SYNC)[0]["unread"] == 0
    gateway = running.sidecar.gateway

    # A read the count did not know of (recorded while nothing was addressed, say).
    await gateway.read_elsewhere(doc(7), [USER])
    row = running.fake.publish(2, minute=2)
    await gateway.notify([USER], {"documentId": row["documentId"]})

    await eventually(lambda: a.got(UNREAD))
    await asyncio.sleep(QUIET)
    assert a.got(UNREAD) == [{"unread": 1}]


async def test_echoes_from_another_process_adjust_the_count_here(running: Running) -> None:
    inbox_of_three(running.fake)  # user 5: 1 and 3 unread
    a = await running.connect(USER)
    other = await running.connect(OTHER_USER)
    gateway = running.sidecar.gateway
    start = len(running.fake.requests)
    echo = [{"notificationId": doc(3), "documentId": doc(3)}]

    gateway.emitted_elsewhere(READ, ["user-5"], echo)
    gateway.emitted_elsewhere(READ, ["user-5"], echo)  # the same read again: once
    await eventually(lambda: a.got(UNREAD))
    gateway.emitted_elsewhere(READ_ALL, ["user-5"], [{"documentIds": [doc(1), doc(3)], "marked": 2}])
    await eventually(lambda: len(a.got(UNREAD)) == 2)

    await asyncio.sleep(QUIET)
    assert a.got(UNREAD) == [{"unread": 1}, {"unread": 0}]
    assert other.got(UNREAD) == []
    assert requests_since(running.fake, start) == []


async def test_an_echo_from_elsewhere_without_its_payload_is_recounted(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    running.fake.read(doc(3), USER)

    running.sidecar.gateway.emitted_elsewhere(READ, ["user-5"])

    await eventually(lambda: a.got(UNREAD))
    assert a.got(UNREAD) == [{"unread": 1}]


# -- two processes ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def two_processes(
    fake: FakeStrapi, redis_server: RedisServer
) -> AsyncIterator[list[tuple[Sidecar, str]]]:
    """Two sidecars sharing a real Redis, each on a real port: `[(sidecar, url), ...]`."""
    router = respx.MockRouter(assert_all_mocked=True, assert_all_called=False)
    router.get(path="/_health").respond(204)
    router.route(host="strapi.test").mock(side_effect=fake.handle)
    transport = httpx.MockTransport(router.async_handler)
    settings: dict[str, Any] = {"redis_url": redis_server.url, "reconcile_interval": 0}
    a = build_sidecar(make_settings(**settings), transport=transport)
    b = build_sidecar(make_settings(**settings), transport=transport)
    async with serve(a.asgi) as url_a, serve(b.asgi) as url_b:
        async with asyncio.timeout(5):
            while not (await _ready(url_a) and await _ready(url_b)):
                await asyncio.sleep(0.05)
        yield [(a, url_a), (b, url_b)]


@pytest.fixture
async def pair(fake: FakeStrapi, redis_server: RedisServer) -> AsyncIterator[tuple[str, str]]:
    async with two_processes(fake, redis_server) as [(_, url_a), (_, url_b)]:
        yield url_a, url_b


async def _ready(url: str) -> bool:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{url}/readyz")).status_code == 200


async def _client(url: str, user_id: int) -> Client:
    client = Client(url)
    await client.connect(user_id)
    await eventually(lambda: client.got(SYNC))
    return client


async def test_a_read_on_one_process_updates_the_count_on_the_other_without_strapi(
    pair: tuple[str, str], fake: FakeStrapi
) -> None:
    url_a, url_b = pair
    inbox_of_three(fake)
    phone = await _client(url_a, USER)
    laptop = await _client(url_b, USER)
    try:
        start = len(fake.requests)
        ack = await phone.call(READ, {"notificationId": doc(3)})
        assert ack["alreadyRead"] is False
        await eventually(lambda: laptop.got(READ) and laptop.got(UNREAD) and phone.got(UNREAD))
        ack = await laptop.call(READ_ALL)
        assert ack == {"ok": True, "marked": 1}
        await eventually(lambda: len(phone.got(UNREAD)) == 2 and len(laptop.got(UNREAD)) == 2)
        await asyncio.sleep(QUIET)
        assert phone.got(UNREAD) == laptop.got(UNREAD) == [{"unread": 1}, {"unread": 0}]
        counts = [r for r in requests_since(fake, start) if r == "GET /api/notifications"]
        assert len(counts) <= 3  # the read's lookup, read-all's pages: no recount
    finally:
        await phone.sio.disconnect()
        await laptop.sio.disconnect()


async def test_a_notification_announced_while_the_catch_up_is_under_way_is_counted(running: Running) -> None:
    inbox_of_three(running.fake)  # user 5: 1 and 3 unread
    gateway = running.sidecar.gateway
    catch_up = gateway._inbox.catch_up

    async def overtaken(*args: Any, **kwargs: Any) -> Any:
        page = await catch_up(*args, **kwargs)  # Strapi answered: 2 unread
        row = running.fake.publish(9, minute=9, users=(USER,))
        await gateway.notify([USER], wire(row))  # announced before that answer is taken in
        return page

    gateway._inbox.catch_up = overtaken  # type: ignore[method-assign]
    a = await running.connect(USER)

    assert a.got(SYNC)[0]["unread"] == 3
    assert (await a.call(READ, {"notificationId": doc(3)}))["ok"]
    await eventually(lambda: a.got(UNREAD) and a.got(UNREAD)[-1] == {"unread": 2})
    await asyncio.sleep(QUIET)
    assert a.got(UNREAD)[-1] == {"unread": 2}


async def test_a_notification_emitted_by_another_process_is_written_straight_to_idle_websockets(
    fake: FakeStrapi, redis_server: RedisServer
) -> None:
    async with two_processes(fake, redis_server) as [(a, url_a), (b, url_b)]:
        here, there = await _client(url_a, USER), await _client(url_b, OTHER_USER)
        try:
            before_a, before_b = a.sio.manager.direct_writes, b.sio.manager.direct_writes
            row = fake.publish(1, minute=1, users=(USER, OTHER_USER))
            await a.gateway.notify([USER, OTHER_USER], wire(row))
            await eventually(lambda: here.got("notificacion") and there.got("notificacion"))
            assert a.sio.manager.direct_writes > before_a
            assert b.sio.manager.direct_writes > before_b  # through Redis, the same fast path
        finally:
            await here.sio.disconnect()
            await there.sio.disconnect()


async def test_a_count_overtaken_at_every_try_is_corrected_once_the_burst_is_over(running: Running) -> None:
    inbox_of_three(running.fake)  # user 5: 1 and 3 unread
    gateway = running.sidecar.gateway
    catch_up, unread_count = gateway._inbox.catch_up, gateway._inbox.unread_count
    burst = iter(range(10, 15))  # five announcements, each landing while Strapi answers a count

    async def announce_next() -> None:
        number = next(burst, None)
        if number is not None:
            row = running.fake.publish(number, minute=number, users=(USER,))
            await gateway.notify([USER], wire(row))

    async def overtaken_catch_up(*args: Any, **kwargs: Any) -> Any:
        page = await catch_up(*args, **kwargs)
        await announce_next()
        return page

    async def overtaken_count(user_id: int) -> int:
        count = await unread_count(user_id)
        await announce_next()
        return count

    gateway._inbox.catch_up = overtaken_catch_up  # type: ignore[method-assign]
    gateway._inbox.unread_count = overtaken_count  # type: ignore[method-assign]
    a = await running.connect(USER)

    # 2 unread, then 5 more: the last count the client gets says 7
    await eventually(lambda: a.got(UNREAD) and a.got(UNREAD)[-1] == {"unread": 7}, within=5)
    await asyncio.sleep(QUIET)
    assert a.got(UNREAD)[-1] == {"unread": 7}


async def test_a_notification_the_catch_up_counted_before_its_announcement_is_not_counted_twice(
    running: Running,
) -> None:
    inbox_of_three(running.fake)  # user 5: 1 and 3 unread
    row = running.fake.publish(9, minute=9, users=(USER,))  # published as the user connects...
    a = await running.connect(USER)
    b = await running.connect(USER)
    assert a.got(SYNC)[0]["unread"] == b.got(SYNC)[0]["unread"] == 3  # ...so the catch-ups hold it
    assert a.got(SYNC)[0]["items"][0]["documentId"] == doc(9)  # the newest

    await running.sidecar.gateway.notify([USER], wire(row))  # ...and its webhook comes after
    newer = running.fake.publish(10, minute=10, users=(USER,))
    await running.sidecar.gateway.notify([USER], wire(newer))  # a new one still counts
    await eventually(lambda: a.got(UNREAD) and b.got(UNREAD))
    await asyncio.sleep(QUIET)
    assert a.got(UNREAD) == b.got(UNREAD) == [{"unread": 4}]

    assert (await a.call(READ, {"notificationId": doc(9)}))["ok"]
    await eventually(lambda: len(b.got(UNREAD)) == 2)
    await asyncio.sleep(QUIET)
    assert a.got(UNREAD)[-1] == b.got(UNREAD)[-1] == {"unread": 3}


# -- when the counts a new notification changed are sent (UNREAD_DELAY) ------------------------


@pytest.mark.parametrize("overrides", [{"unread_delay": 0.5}])
async def test_a_new_notification_goes_out_alone_and_its_unread_count_follows_after_the_delay(
    running: Running,
) -> None:
    inbox_of_three(running.fake)  # user 5: 2 unread
    a = await running.connect(USER)
    row = running.fake.publish(9, minute=9, users=(USER,))
    loop = asyncio.get_running_loop()

    started = loop.time()
    await running.sidecar.gateway.notify([USER], wire(row))
    await eventually(lambda: a.got(NOTIFICATION))
    assert a.got(UNREAD) == []  # not with it
    await eventually(lambda: a.got(UNREAD), within=5)
    assert loop.time() - started >= 0.5
    assert a.got(UNREAD) == [{"unread": 3}]
    assert [name for name, _ in a.events][-2:] == [NOTIFICATION, UNREAD]


@pytest.mark.parametrize("overrides", [{"unread_delay": 0.3}])
async def test_a_burst_of_notifications_sends_each_user_one_count_the_latest(running: Running) -> None:
    inbox_of_three(running.fake)  # user 5: 2 unread; user 6: 1
    a = await running.connect(USER)
    b = await running.connect(USER)
    other = await running.connect(OTHER_USER)
    rows = [running.fake.publish(n, minute=n, users=(USER, OTHER_USER)) for n in range(10, 15)]

    for row in rows:
        await running.sidecar.gateway.notify([USER, OTHER_USER], wire(row))

    await eventually(lambda: a.got(UNREAD) and b.got(UNREAD) and other.got(UNREAD), within=5)
    await asyncio.sleep(QUIET)
    assert len(a.got(NOTIFICATION)) == len(other.got(NOTIFICATION)) == 5
    assert a.got(UNREAD) == b.got(UNREAD) == [{"unread": 7}]
    assert other.got(UNREAD) == [{"unread": 6}]
    assert (await a.call(SYNC))["unread"] == 7  # and it is what Strapi says


@pytest.mark.parametrize("overrides", [{"unread_delay": 0.3}])
async def test_a_read_before_the_delay_is_over_sends_the_exact_count_once(running: Running) -> None:
    inbox_of_three(running.fake)  # user 5: 2 unread
    a = await running.connect(USER)
    b = await running.connect(USER)
    row = running.fake.publish(9, minute=9, users=(USER,))
    await running.sidecar.gateway.notify([USER], wire(row))
    await eventually(lambda: a.got(NOTIFICATION))

    ack = await a.call(READ, {"notificationId": doc(9)})  # before its count went out

    assert ack["ok"] is True
    await eventually(lambda: b.got(UNREAD))
    await asyncio.sleep(QUIET + 0.3)
    assert a.got(UNREAD) == b.got(UNREAD) == [{"unread": 2}]  # the read's; the due +1 is not sent


@pytest.mark.parametrize("overrides", [{"unread_delay": 0}])
async def test_with_no_delay_each_notification_brings_its_count_at_once(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    rows = [running.fake.publish(n, minute=n, users=(USER,)) for n in range(10, 13)]

    for row in rows:
        await running.sidecar.gateway.notify([USER], wire(row))
        assert running.sidecar.gateway._unread_due == set()

    await eventually(lambda: len(a.got(UNREAD)) == 3)
    assert a.got(UNREAD) == [{"unread": 3}, {"unread": 4}, {"unread": 5}]
    names = [name for name, _ in a.events if name in (NOTIFICATION, UNREAD)]
    assert names == [NOTIFICATION, UNREAD] * 3
