"""The inbox over Socket.IO, end to end: a real uvicorn port, python-socketio clients, a fake Strapi."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx
import socketio

from adapter.app import Sidecar, build_sidecar
from adapter.fanout import _idle_websocket
from adapter.notifications import wire_payload
from adapter.settings import Settings
from tests.conftest import WEBHOOK_SECRET, legacy_token, make_settings
from tests.serving import eventually, serve
from tests.unit.test_inbox import OTHER_USER, USER, FakeStrapi, at, doc, error, notification_pages

SYNC = "notification:sync"
UNREAD = "notification:unread"
READ = "notification:read"
READ_ALL = "notification:read-all"
REMOVED = "notification:removed"
NOTIFICATION = "notificacion"
# How long to wait before saying an event did not come: unread counts a notification changed
# are sent UNREAD_DELAY after it.
QUIET = 0.2 + Settings.model_fields["unread_delay"].default
NOTIFICATION_UID = "api::notification.notification"
READ_UID = "api::read-notification.read-notification"


class Client:
    """A python-socketio client that records every event it receives."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.sio.on("*", self._record)

    async def _record(self, event: str, *data: Any) -> None:
        self.events.append((event, data[0] if data else None))

    def got(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def connect(self, user_id: int) -> None:
        await self.sio.connect(
            self.url, auth={"token": legacy_token(user_id)}, transports=["websocket"], wait_timeout=5
        )

    async def call(self, event: str, data: Any = None) -> Any:
        return await self.sio.call(event, data, timeout=10)


@dataclass
class Running:
    url: str
    sidecar: Sidecar
    fake: FakeStrapi
    clients: list[Client]

    async def connect(self, user_id: int, *, synced: bool = True) -> Client:
        """A socket of the user; by default, once its catch-up has arrived."""
        client = Client(self.url)
        self.clients.append(client)
        await client.connect(user_id)
        if synced:
            await eventually(lambda: client.got(SYNC))
        return client


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings for the sidecar under test (tests parametrize this)."""
    return {}


@pytest.fixture
def fake() -> FakeStrapi:
    return FakeStrapi()


@pytest.fixture
async def running(fake: FakeStrapi, overrides: dict[str, Any]) -> AsyncIterator[Running]:
    router = respx.MockRouter(assert_all_mocked=True, assert_all_called=False)
    router.route(host="strapi.test").mock(side_effect=fake.handle)
    sidecar = build_sidecar(make_settings(**overrides), transport=httpx.MockTransport(router.async_handler))
    async with serve(sidecar.asgi) as url:
        state = Running(url, sidecar, fake, [])
        try:
            yield state
        finally:
            for client in state.clients:
                if client.sio.connected:
                    await client.sio.disconnect()


def wire(row: dict[str, Any]) -> dict[str, Any]:
    """What a client receives for a notification row."""
    return wire_payload({key: value for key, value in row.items() if key != "notification_users"})


def inbox_of_three(fake: FakeStrapi) -> list[dict[str, Any]]:
    """User 5: notifications 1, 2 (read) and 3; user 6: notification 4."""
    rows = [fake.publish(number, minute=number) for number in (1, 2, 3)]
    fake.publish(4, minute=4, users=(OTHER_USER,))
    fake.read(doc(2), USER)
    return rows


# -- catch-up on connect ---------------------------------------------------------------------


async def test_gateway_sends_unread_items_and_count_right_after_connecting(running: Running) -> None:
    first, _, third = inbox_of_three(running.fake)

    client = await running.connect(USER)

    assert client.events[0] == (
        SYNC,
        {"items": [wire(third), wire(first)], "unread": 2, "hasMore": False, "cursor": None},
    )
    assert wire(third) == {
        "mensaje": "Notification 3",
        "id": third["id"],
        "url": "/news/3",
        "document": None,
        "title": "2026-11-25",
        "documentId": doc(3),
    }


@pytest.mark.parametrize("overrides", [{"catchup_limit": 1}])
async def test_gateway_catch_up_sends_at_most_catchup_limit_items(running: Running) -> None:
    inbox_of_three(running.fake)

    client = await running.connect(USER)

    [sync] = client.got(SYNC)
    assert [item["documentId"] for item in sync["items"]] == [doc(3)]
    assert (sync["unread"], sync["hasMore"], sync["cursor"]) == (2, True, f"{at(3)}~{doc(3)}")


@pytest.mark.parametrize("overrides", [{"catchup_limit": 0}])
async def test_gateway_catch_up_limit_zero_sends_only_the_count(running: Running) -> None:
    inbox_of_three(running.fake)

    client = await running.connect(USER)

    assert client.got(SYNC) == [{"items": [], "unread": 2, "hasMore": False, "cursor": None}]
    assert notification_pages(running.fake) == []


async def test_gateway_catch_up_of_another_user_holds_only_their_notifications(running: Running) -> None:
    inbox_of_three(running.fake)

    client = await running.connect(OTHER_USER)

    [sync] = client.got(SYNC)
    assert [item["documentId"] for item in sync["items"]] == [doc(4)]
    assert sync["unread"] == 1


# -- sync on request -------------------------------------------------------------------------


async def test_gateway_sync_on_request_pages_with_limit_and_cursor(running: Running) -> None:
    first, _, third = inbox_of_three(running.fake)
    client = await running.connect(USER)

    newest = await client.call(SYNC, {"limit": 1})
    older = await client.call(SYNC, {"limit": 1, "cursor": newest["cursor"]})

    assert newest == {
        "ok": True,
        "items": [wire(third)],
        "unread": 2,
        "hasMore": True,
        "cursor": newest["cursor"],
    }
    assert newest["cursor"] is not None
    assert older == {"ok": True, "items": [wire(first)], "unread": 2, "hasMore": False, "cursor": None}


async def test_gateway_sync_without_a_payload_answers_the_first_page(running: Running) -> None:
    first, _, third = inbox_of_three(running.fake)
    client = await running.connect(USER)

    ack = await client.call(SYNC)

    assert ack == {
        "ok": True,
        "items": [wire(third), wire(first)],
        "unread": 2,
        "hasMore": False,
        "cursor": None,
    }


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"limit": 0}, id="limit-zero"),
        pytest.param({"limit": 101}, id="limit-too-big"),
        pytest.param({"limit": -1}, id="limit-negative"),
        pytest.param({"limit": "5"}, id="limit-string"),
        pytest.param({"limit": 2.5}, id="limit-fraction"),
        pytest.param({"limit": True}, id="limit-boolean"),
        pytest.param({"limit": None}, id="limit-null"),
        pytest.param({"cursor": "junk"}, id="cursor-junk"),
        pytest.param({"cursor": 5}, id="cursor-number"),
        pytest.param({"cursor": "----------~abc"}, id="cursor-not-a-date"),
        pytest.param({"cursor": "2026-11-25T18:03:00.000Z~a b"}, id="cursor-bad-document"),
        pytest.param("limit=5", id="string"),
        pytest.param([5], id="list"),
    ],
)
async def test_gateway_sync_refuses_bad_limits_and_cursors(running: Running, payload: Any) -> None:
    inbox_of_three(running.fake)
    client = await running.connect(USER)
    asked = len(running.fake.requests)

    ack = await client.call(SYNC, payload)

    assert ack["ok"] is False
    assert ack["error"]["code"] == "invalid_payload"
    assert isinstance(ack["error"]["message"], str)
    assert len(running.fake.requests) == asked  # Strapi is not asked
    assert client.sio.connected


async def test_gateway_sync_failure_in_strapi_acks_upstream_error(running: Running) -> None:
    inbox_of_three(running.fake)
    client = await running.connect(USER)

    async def down(request: httpx.Request) -> httpx.Response | None:
        return error(503, "Service Unavailable")

    running.fake.hooks.append(down)
    ack = await client.call(SYNC, {"limit": 5})

    assert ack["ok"] is False
    assert ack["error"]["code"] == "upstream_error"


# -- reads and their echoes ------------------------------------------------------------------


async def test_gateway_read_echoes_to_the_users_other_sockets_only(running: Running) -> None:
    inbox_of_three(running.fake)
    running.fake.publish(5, minute=5, users=(OTHER_USER,))
    a = await running.connect(USER)
    b = await running.connect(USER)
    other = await running.connect(OTHER_USER)

    ack = await a.call(READ, {"notificationId": doc(3)})

    assert ack == {"ok": True, "notificationId": doc(3), "alreadyRead": False}
    await eventually(lambda: b.got(READ) and b.got(UNREAD) and a.got(UNREAD))
    await asyncio.sleep(QUIET)
    assert b.got(READ) == [{"notificationId": doc(3), "documentId": doc(3)}]
    assert a.got(READ) == []
    assert a.got(UNREAD) == b.got(UNREAD) == [{"unread": 1}]
    assert other.got(READ) == other.got(UNREAD) == []
    assert running.fake.readers(doc(3)) == {USER}


async def test_gateway_read_by_the_numeric_id_from_the_catch_up_is_recorded(running: Running) -> None:
    _, _, third = inbox_of_three(running.fake)
    a = await running.connect(USER)
    b = await running.connect(USER)

    ack = await a.call(READ, {"notificationId": str(third["id"])})

    assert ack == {"ok": True, "notificationId": doc(3), "alreadyRead": False}
    await eventually(lambda: b.got(READ))
    assert running.fake.readers(doc(3)) == {USER}


async def test_gateway_read_of_something_already_read_echoes_nothing(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    b = await running.connect(USER)

    ack = await a.call(READ, {"notificationId": doc(2)})

    assert ack == {"ok": True, "notificationId": doc(2), "alreadyRead": True}
    await asyncio.sleep(QUIET)
    assert b.got(READ) == b.got(UNREAD) == []


async def test_gateway_read_of_another_users_notification_is_not_found_and_echoes_nothing(
    running: Running,
) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    b = await running.connect(USER)

    ack = await a.call(READ, {"notificationId": doc(4)})

    assert ack["ok"] is False
    assert ack["error"]["code"] == "not_found"
    await asyncio.sleep(QUIET)
    assert b.got(READ) == []
    assert running.fake.writes == []


async def test_gateway_read_elsewhere_reaches_every_socket_of_the_user(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    b = await running.connect(USER)
    other = await running.connect(OTHER_USER)
    running.fake.read(doc(3), USER)  # an editor records it in Strapi

    await running.sidecar.gateway.read_elsewhere(doc(3), [USER])

    await eventually(lambda: a.got(UNREAD) and b.got(UNREAD))
    for client in (a, b):
        assert client.got(READ) == [{"notificationId": doc(3), "documentId": doc(3)}]
        assert client.got(UNREAD) == [{"unread": 1}]
    await asyncio.sleep(QUIET)
    assert other.got(READ) == []


# -- mark all read ---------------------------------------------------------------------------


async def test_gateway_read_all_acks_marked_and_echoes_to_the_other_sockets(running: Running) -> None:
    for number in range(1, 6):
        running.fake.publish(number, minute=number)
    running.fake.read(doc(2), USER)
    running.fake.read(doc(4), OTHER_USER)  # a receipt exists: the user joins it
    a = await running.connect(USER)
    b = await running.connect(USER)
    other = await running.connect(OTHER_USER)

    ack = await a.call(READ_ALL)

    assert ack == {"ok": True, "marked": 4}
    await eventually(lambda: b.got(READ_ALL) and a.got(UNREAD) and b.got(UNREAD))
    [echo] = b.got(READ_ALL)
    assert sorted(echo["documentIds"]) == [doc(1), doc(3), doc(4), doc(5)]
    assert echo["marked"] == 4
    await asyncio.sleep(QUIET)
    assert a.got(READ_ALL) == []
    assert a.got(UNREAD) == b.got(UNREAD) == [{"unread": 0}]
    assert other.got(READ_ALL) == other.got(UNREAD) == []
    assert all(USER in running.fake.readers(doc(n)) for n in range(1, 6))
    assert len(running.fake.receipts_of(doc(4))) == 1
    assert running.fake.readers(doc(4)) == {USER, OTHER_USER}


async def test_gateway_read_all_of_nothing_unread_marks_nothing(running: Running) -> None:
    inbox_of_three(running.fake)
    running.fake.read(doc(1), USER)
    running.fake.read(doc(3), USER)
    a = await running.connect(USER)
    b = await running.connect(USER)

    ack = await a.call(READ_ALL, {})

    assert ack == {"ok": True, "marked": 0}
    assert running.fake.writes == []
    await asyncio.sleep(QUIET)
    assert b.got(READ_ALL) == b.got(READ) == []


async def test_gateway_read_all_batches_its_lookups(running: Running) -> None:
    count = 120
    for number in range(1, count + 1):
        running.fake.publish(number, minute=number // 60, second=number % 60)
        if number % 3 == 0:
            running.fake.read(doc(number), OTHER_USER)
    a = await running.connect(USER)
    before = len(running.fake.requests)

    ack = await a.call(READ_ALL)

    assert ack == {"ok": True, "marked": count}
    made = running.fake.requests[before:]
    writes = [r for r in made if r.method != "GET"]
    lookups = [r for r in made if r.method == "GET"]
    assert len(writes) == count  # one per notification: Strapi has no bulk write
    assert len(lookups) <= 10  # pages, reads among them, receipts 100 at a time, the recount
    assert all(USER in running.fake.readers(doc(n)) for n in range(1, count + 1))


async def test_gateway_read_all_with_one_refused_write_marks_the_others(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    b = await running.connect(USER)

    async def refuse_notification_3(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and doc(3) in request.content.decode():
            return error(400, "Invalid relations")
        return None

    running.fake.hooks.append(refuse_notification_3)
    ack = await a.call(READ_ALL)

    assert ack == {"ok": True, "marked": 1}
    await eventually(lambda: b.got(READ) and b.got(UNREAD))
    assert b.got(READ) == [{"notificationId": doc(1), "documentId": doc(1)}]  # one: the read echo
    assert b.got(UNREAD) == [{"unread": 1}]
    assert running.fake.readers(doc(3)) == set()


async def test_gateway_read_all_strapi_failure_acks_upstream_error(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)

    async def down(request: httpx.Request) -> httpx.Response | None:
        return error(500, "Internal Server Error") if request.url.path == "/api/notifications" else None

    running.fake.hooks.append(down)
    ack = await a.call(READ_ALL)

    assert ack["ok"] is False
    assert ack["error"]["code"] == "upstream_error"
    assert running.fake.writes == []
    assert a.sio.connected


async def test_gateway_read_all_failing_halfway_echoes_what_it_marked(running: Running) -> None:
    for number in range(1, 151):
        running.fake.publish(number, minute=number // 60, second=number % 60)
    a = await running.connect(USER)
    b = await running.connect(USER)

    async def second_page_fails(request: httpx.Request) -> httpx.Response | None:
        older = "filters[$and][1][$or][0][publishedAt][$lt]" in request.url.params
        return error(503, "Service Unavailable") if older else None

    running.fake.hooks.append(second_page_fails)
    ack = await a.call(READ_ALL)

    assert ack["ok"] is False
    assert ack["error"]["code"] == "upstream_error"
    await eventually(lambda: b.got(READ_ALL))
    [echo] = b.got(READ_ALL)
    assert echo["marked"] == len(echo["documentIds"]) == 100
    assert {d for d in echo["documentIds"] if USER in running.fake.readers(d)} == set(echo["documentIds"])


# -- server-side events ----------------------------------------------------------------------


async def test_gateway_notify_bumps_the_unread_count_of_connected_users(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    other = await running.connect(OTHER_USER)
    row = running.fake.publish(9, minute=9, users=(USER, OTHER_USER, 7))
    payload = wire(row)

    rooms = await running.sidecar.gateway.notify([USER, OTHER_USER, 7], payload)

    assert rooms == 3
    await eventually(lambda: a.got(UNREAD) and other.got(UNREAD))
    assert a.got(NOTIFICATION) == other.got(NOTIFICATION) == [payload]
    assert a.got(UNREAD) == [{"unread": 3}]
    assert other.got(UNREAD) == [{"unread": 2}]


async def test_gateway_notify_of_users_not_connected_tells_nobody_here(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)

    rooms = await running.sidecar.gateway.notify([OTHER_USER], {"documentId": doc(9)})

    assert rooms == 1
    await asyncio.sleep(QUIET)
    assert a.got(NOTIFICATION) == a.got(UNREAD) == []


async def test_gateway_removed_without_an_audience_reaches_every_socket(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    other = await running.connect(OTHER_USER)
    running.fake.notifications = [n for n in running.fake.notifications if n["documentId"] != doc(3)]

    await running.sidecar.gateway.removed(doc(3), None)

    await eventually(lambda: a.got(UNREAD) and other.got(UNREAD))
    assert a.got(REMOVED) == other.got(REMOVED) == [{"documentId": doc(3)}]
    assert a.got(UNREAD) == [{"unread": 1}]
    assert other.got(UNREAD) == [{"unread": 1}]


async def test_gateway_removed_with_an_audience_reaches_only_them(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    b = await running.connect(USER)
    other = await running.connect(OTHER_USER)
    running.fake.notifications = [n for n in running.fake.notifications if n["documentId"] != doc(3)]

    await running.sidecar.gateway.removed(doc(3), [USER])

    await eventually(lambda: a.got(UNREAD) and b.got(UNREAD))
    for client in (a, b):
        assert client.got(REMOVED) == [{"documentId": doc(3)}]
        assert client.got(UNREAD) == [{"unread": 1}]
    await asyncio.sleep(QUIET)
    assert other.got(REMOVED) == other.got(UNREAD) == []


# -- through Strapi's webhooks ---------------------------------------------------------------


async def _webhook(url: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{url}/webhooks/strapi", json=body, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"}
        )


def read_webhook(event: str, receipt: str, document_id: str, readers: list[int]) -> dict[str, Any]:
    """A READNOTIFICATION delivery, relations populated one level as Strapi sends them."""
    entry = {
        "id": 3,
        "documentId": receipt,
        "publishedAt": None,
        "notification": {"id": 7, "documentId": document_id, "publishedAt": None},
        "users_permissions_users": [{"id": user_id, "username": f"user{user_id}"} for user_id in readers],
    }
    return {"event": event, "model": "read-notification", "uid": READ_UID, "entry": entry}


async def test_gateway_deleting_the_published_notification_tells_the_sockets(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    other = await running.connect(OTHER_USER)
    running.fake.notifications = [n for n in running.fake.notifications if n["documentId"] != doc(3)]
    entry = {"id": 9, "documentId": doc(3), "publishedAt": at(3)}  # the published row

    response = await _webhook(running.url, {"event": "entry.delete", "uid": NOTIFICATION_UID, "entry": entry})

    assert response.status_code == 202
    await eventually(lambda: a.got(REMOVED) and a.got(UNREAD) and other.got(REMOVED))
    assert a.got(REMOVED) == other.got(REMOVED) == [{"documentId": doc(3)}]  # who was told is unknown
    assert a.got(UNREAD) == [{"unread": 1}]


async def test_gateway_a_read_recorded_elsewhere_reaches_the_readers_sockets(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    b = await running.connect(USER)
    other = await running.connect(OTHER_USER)
    running.fake.read(doc(3), USER)  # in Strapi's admin, say

    await _webhook(running.url, read_webhook("entry.update", "r1", doc(3), [USER]))

    await eventually(lambda: a.got(READ) and b.got(READ) and a.got(UNREAD) and b.got(UNREAD))
    for client in (a, b):
        assert client.got(READ) == [{"notificationId": doc(3), "documentId": doc(3)}]
        assert client.got(UNREAD) == [{"unread": 1}]
    await asyncio.sleep(QUIET)
    assert other.got(READ) == []


async def test_gateway_the_webhook_of_the_sidecars_own_read_is_not_echoed_again(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    b = await running.connect(USER)
    await a.call(READ, {"notificationId": doc(3)})
    await eventually(lambda: b.got(READ))
    (receipt,) = running.fake.receipts_of(doc(3))

    response = await _webhook(
        running.url, read_webhook("entry.create", receipt["documentId"], doc(3), [USER])
    )

    assert response.status_code == 202
    await asyncio.sleep(QUIET * 2)
    assert a.got(READ) == []
    assert len(b.got(READ)) == 1


# -- metrics ---------------------------------------------------------------------------------


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample of the Prometheus text exposition, or None."""
    rendered = ",".join(f'{key}="{value}"' for key, value in labels.items())
    wanted = f"{name}{{{rendered}}}" if labels else name
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == wanted:
            return float(value)
    return None


async def _metrics(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(f"{url}/metrics")


async def test_gateway_metrics_count_the_strapi_requests_made(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    refused = Client(running.url)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(99)  # unknown to Strapi: a 404
    await a.call(READ, {"notificationId": doc(3)})

    response = await _metrics(running.url)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    gets = [r for r in running.fake.requests if r.method == "GET"]
    assert metric(text, "sidecar_strapi_requests_total", method="GET", status="200") == len(gets) - 1
    assert metric(text, "sidecar_strapi_requests_total", method="GET", status="404") == 1
    assert metric(text, "sidecar_strapi_requests_total", method="POST", status="200") == 1
    assert metric(text, "sidecar_sockets_connected") == 1
    assert metric(text, "sidecar_reads_total", outcome="read:ok") == 1


async def test_gateway_metrics_count_client_request_outcomes(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    await a.call(SYNC, {"limit": 0})
    await a.call(SYNC, {"limit": 2})
    await a.call(READ_ALL)

    text = (await _metrics(running.url)).text

    assert metric(text, "sidecar_reads_total", outcome="sync:invalid_payload") == 1
    assert metric(text, "sidecar_reads_total", outcome="sync:ok") == 1
    assert metric(text, "sidecar_reads_total", outcome="read_all:ok") == 1
    assert re.search(r'^sidecar_emits_total\{event="notification:sync"\} 1\.0$', text, re.MULTILINE)


async def test_gateway_metrics_time_each_emit_by_event(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    other = await running.connect(OTHER_USER)
    row = running.fake.publish(9, minute=9, users=(USER, OTHER_USER))

    await running.sidecar.gateway.notify([USER, OTHER_USER], wire(row))
    await eventually(lambda: a.got(UNREAD) and other.got(UNREAD))

    text = (await _metrics(running.url)).text
    # one notification to both users; their unread counts differ: one emit per count
    for event, emits in ((NOTIFICATION, 1), (UNREAD, 2)):
        assert metric(text, "sidecar_emit_seconds_count", event=event) == emits
        took = metric(text, "sidecar_emit_seconds_sum", event=event)
        assert took is not None
        assert 0 < took < 1
    assert metric(text, "sidecar_deliveries_total", event=NOTIFICATION) == 2


async def test_metrics_count_the_deliveries_written_straight_to_idle_websockets(running: Running) -> None:
    inbox_of_three(running.fake)
    a = await running.connect(USER)
    other = await running.connect(OTHER_USER)
    sockets = running.sidecar.sio.eio.sockets.values()
    await eventually(lambda: all(_idle_websocket(sock) is not None for sock in sockets))  # catch-ups written
    before = metric((await _metrics(running.url)).text, "sidecar_deliveries_direct_total")
    row = running.fake.publish(9, minute=9, users=(USER, OTHER_USER))
    await running.sidecar.gateway.notify([USER, OTHER_USER], wire(row))
    await eventually(lambda: a.got(NOTIFICATION) and other.got(NOTIFICATION))
    after = metric((await _metrics(running.url)).text, "sidecar_deliveries_direct_total")
    assert before is not None
    assert after is not None
    assert after >= before + 2  # the notification, to both, without a writer task
    assert after == running.sidecar.sio.manager.direct_writes


async def test_metrics_show_the_collector_s_pauses(running: Running) -> None:
    before = metric((await _metrics(running.url)).text, "sidecar_gc_pause_seconds_count", generation="2")
    gc.collect()
    text = (await _metrics(running.url)).text
    after = metric(text, "sidecar_gc_pause_seconds_count", generation="2")
    assert after is not None
    assert after >= (before or 0) + 1
    assert (metric(text, "sidecar_gc_pause_seconds_sum", generation="2") or 0) > 0


async def test_gateway_presence_gauges_follow_connects_and_disconnects(running: Running) -> None:
    async def gauges() -> tuple[float | None, float | None]:
        text = (await _metrics(running.url)).text
        return metric(text, "sidecar_sockets_connected"), metric(text, "sidecar_users_connected")

    first = await running.connect(USER)
    second = await running.connect(USER)
    other = await running.connect(OTHER_USER)
    assert await gauges() == (3, 2)

    await second.sio.disconnect()
    await eventually_async(lambda: gauges(), (2, 2))
    await first.sio.disconnect()
    await other.sio.disconnect()
    await eventually_async(lambda: gauges(), (0, 0))


async def eventually_async(probe: Any, wanted: object, within: float = 5.0) -> None:
    """Wait until the awaited `probe()` gives `wanted`."""
    deadline = asyncio.get_running_loop().time() + within
    while (got := await probe()) != wanted:
        assert asyncio.get_running_loop().time() < deadline, f"still {got}, wanted {wanted}"
        await asyncio.sleep(0.05)
