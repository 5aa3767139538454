"""The inbox beyond the seed, against the real Strapi: catch-up, unread count, read-all, sync."""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import socketio

from tests.e2e.harness import Stack, settled, wait_for


class Device:
    """One socket of a user (python-socketio), recording every event it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.sio.on("*", self._record)

    async def _record(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))

    @classmethod
    async def connect(cls, stack: Stack, jwt: str) -> Device:
        device = cls()
        await device.sio.connect(
            stack.sidecar.url, auth={"token": jwt}, transports=["websocket"], wait_timeout=10
        )
        return device

    def of(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    def last_unread(self) -> int | None:
        counts = self.of("notification:unread")
        return counts[-1]["unread"] if counts else None


def strapi_requests(stack: Stack) -> int:
    text = httpx.get(f"{stack.sidecar.url}/metrics").text
    return int(
        sum(float(v) for v in re.findall(r"^sidecar_strapi_requests_total\{[^}]*\} (\S+)$", text, re.M))
    )


@pytest.fixture
def reader(stack: Stack, unique: str) -> tuple[int, str]:
    # All-users notifications left by earlier tests are in every new user's inbox: start clean.
    leftovers = stack.api().get(
        Stack.NOTIFICATIONS, params={"filters[allUsers][$eq]": "true", "fields[0]": "documentId"}
    )
    for item in leftovers.json()["data"]:
        stack.api().delete(f"{Stack.NOTIFICATIONS}/{item['documentId']}")
    name = f"{unique}inbox"
    user_id = stack.create_user(name)
    return user_id, stack.login(name)["jwt"]


async def test_catch_up_after_being_offline(stack: Stack, reader: tuple[int, str]) -> None:
    user_id, jwt = reader
    docs = []
    for n in range(3):
        docs.append(
            stack.create_notification(message=f"While away {n}", notification_users=[user_id])["documentId"]
        )
        await asyncio.sleep(0.05)  # distinct publish times: "newest first" is then well defined
    await settled(lambda: len(stack.tap.deliveries), quiet=1.5)
    # One of them was read on another device before this one connects.
    device = await Device.connect(stack, jwt)
    try:
        await wait_for(lambda: device.of("notification:sync"))
        ack = await device.sio.call("notification:read", {"notificationId": docs[0]}, timeout=10)
        assert ack["ok"] is True
        await device.sio.disconnect()

        later = await Device.connect(stack, jwt)
        await wait_for(lambda: later.of("notification:sync"))
        [sync] = later.of("notification:sync")
        assert [item["documentId"] for item in sync["items"]] == [docs[2], docs[1]]
        assert sync["items"][0]["mensaje"] == "While away 2"
        assert set(sync["items"][0]) >= {"mensaje", "id", "url", "document", "title", "documentId"}
        assert sync["unread"] == 2
        assert sync["hasMore"] is False

        # Asking again, one at a time, pages back with the cursor.
        first = await later.sio.call("notification:sync", {"limit": 1}, timeout=10)
        assert [i["documentId"] for i in first["items"]] == [docs[2]]
        assert first["hasMore"] is True
        second = await later.sio.call(
            "notification:sync", {"limit": 1, "cursor": first["cursor"]}, timeout=10
        )
        assert [i["documentId"] for i in second["items"]] == [docs[1]]
        bad = await later.sio.call("notification:sync", {"cursor": "forged"}, timeout=10)
        assert bad["error"]["code"] == "invalid_payload"
        await later.sio.disconnect()
    finally:
        if device.sio.connected:
            await device.sio.disconnect()


async def test_unread_count_is_live(stack: Stack, reader: tuple[int, str]) -> None:
    user_id, jwt = reader
    device = await Device.connect(stack, jwt)
    try:
        await wait_for(lambda: device.of("notification:sync"))
        start = device.of("notification:sync")[0]["unread"]
        created = stack.create_notification(message="Count me", notification_users=[user_id])
        await wait_for(lambda: device.last_unread() == start + 1)
        [payload] = [p for p in device.of("notificacion") if p["documentId"] == created["documentId"]]
        ack = await device.sio.call("notification:read", {"notificationId": payload["id"]}, timeout=10)
        assert ack["ok"] is True
        await wait_for(lambda: device.last_unread() == start)
    finally:
        await device.sio.disconnect()


async def test_two_sockets_of_one_user_stay_in_sync(stack: Stack, reader: tuple[int, str]) -> None:
    user_id, jwt = reader
    phone, laptop = await Device.connect(stack, jwt), await Device.connect(stack, jwt)
    try:
        docs = [
            stack.create_notification(message=f"Both {n}", notification_users=[user_id])["documentId"]
            for n in range(3)
        ]
        await wait_for(lambda: len(phone.of("notificacion")) == 3 and len(laptop.of("notificacion")) == 3)

        assert (await phone.sio.call("notification:read", {"notificationId": docs[0]}, timeout=10))["ok"]
        await wait_for(lambda: laptop.of("notification:read"))
        assert laptop.of("notification:read") == [{"notificationId": docs[0], "documentId": docs[0]}]
        assert phone.of("notification:read") == []  # the socket that read it has its ack
        await wait_for(lambda: laptop.last_unread() == phone.last_unread() == 2)

        ack = await laptop.sio.call("notification:read-all", None, timeout=30)
        assert ack == {"ok": True, "marked": 2}
        await wait_for(lambda: phone.of("notification:read-all"))
        assert sorted(phone.of("notification:read-all")[0]["documentIds"]) == sorted(docs[1:])
        await wait_for(lambda: laptop.last_unread() == phone.last_unread() == 0)
        assert stack.readers_of(docs[1]) == [user_id]
    finally:
        await asyncio.gather(phone.sio.disconnect(), laptop.sio.disconnect())


async def test_a_read_recorded_elsewhere_reaches_the_user(stack: Stack, reader: tuple[int, str]) -> None:
    user_id, jwt = reader
    device = await Device.connect(stack, jwt)
    try:
        document_id = stack.create_notification(message="Editor reads it", notification_users=[user_id])[
            "documentId"
        ]
        await wait_for(lambda: device.of("notificacion"))
        response = stack.api().post(
            Stack.READS,
            json={"data": {"notification": {"connect": [document_id]}, "users_permissions_users": [user_id]}},
        )
        response.raise_for_status()
        await wait_for(lambda: device.of("notification:read"))
        assert device.of("notification:read")[0]["documentId"] == document_id
    finally:
        await device.sio.disconnect()


async def test_deleting_a_notification_tells_its_audience(stack: Stack, reader: tuple[int, str]) -> None:
    user_id, jwt = reader
    device = await Device.connect(stack, jwt)
    try:
        document_id = stack.create_notification(message="Oops", notification_users=[user_id])["documentId"]
        await wait_for(lambda: device.of("notificacion"))
        stack.api().delete(f"{Stack.NOTIFICATIONS}/{document_id}").raise_for_status()
        await wait_for(lambda: device.of("notification:removed"))
        assert device.of("notification:removed") == [{"documentId": document_id}]
        await settled(lambda: len(stack.tap.deliveries), quiet=1.0)
        later = await Device.connect(stack, jwt)
        await wait_for(lambda: later.of("notification:sync"))
        assert document_id not in [i["documentId"] for i in later.of("notification:sync")[0]["items"]]
        await later.sio.disconnect()
    finally:
        await device.sio.disconnect()


async def test_adding_a_user_to_a_published_notification_tells_only_them(stack: Stack, unique: str) -> None:
    first, second = stack.create_user(f"{unique}first"), stack.create_user(f"{unique}second")
    devices = [
        await Device.connect(stack, stack.login(f"{unique}first")["jwt"]),
        await Device.connect(stack, stack.login(f"{unique}second")["jwt"]),
    ]
    try:
        document_id = stack.create_notification(message="Grow", notification_users=[first])["documentId"]
        await wait_for(lambda: devices[0].of("notificacion"))
        stack.update_notification(document_id, notification_users={"connect": [second]})
        await wait_for(lambda: devices[1].of("notificacion"))
        await settled(lambda: stack.tap.count(document_id=document_id), quiet=1.5)
        assert len(devices[0].of("notificacion")) == 1
        assert len(devices[1].of("notificacion")) == 1
        # The id the first user got is stale now (the republish made a new row); it still works.
        stale = devices[0].of("notificacion")[0]["id"]
        assert stale != stack.notification(document_id)["id"]  # type: ignore[index]
        ack = await devices[0].sio.call("notification:read", {"notificationId": str(stale)}, timeout=10)
        assert ack == {"ok": True, "notificationId": document_id, "alreadyRead": False}
    finally:
        await asyncio.gather(*(d.sio.disconnect() for d in devices))


@pytest.mark.timeout(600)
async def test_mark_all_read_of_a_thousand_notifications(
    stack: Stack, reader: tuple[int, str], capsys: pytest.CaptureFixture[str]
) -> None:
    user_id, jwt = reader
    total = 1000

    def create(n: int) -> str:
        return stack.create_notification(message=f"Bulk {n}", notification_users=[user_id])["documentId"]

    with ThreadPoolExecutor(8) as pool:
        docs = list(pool.map(create, range(total)))
    await settled(lambda: len(stack.tap.deliveries), quiet=3.0, within=300)

    device = await Device.connect(stack, jwt)
    try:
        await wait_for(lambda: device.of("notification:sync"), within=30)
        assert device.of("notification:sync")[0]["unread"] >= total
        before = strapi_requests(stack)
        started = time.monotonic()
        ack = await device.sio.call("notification:read-all", {}, timeout=300)
        elapsed = time.monotonic() - started
        assert ack["ok"] is True
        assert ack["marked"] >= total
        requests = strapi_requests(stack) - before
        await wait_for(lambda: device.last_unread() == 0, within=30)
        reads = [stack.readers_of(doc) for doc in docs[:: total // 20]]
        assert all(readers == [user_id] for readers in reads)
        # 1,000 READNOTIFICATIONs make 2,000 webhooks: let them pass before the next test.
        await settled(lambda: len(stack.tap.deliveries), quiet=3.0, within=300)
        with capsys.disabled():
            print(
                f"\n[read-all] {ack['marked']} notifications marked in {elapsed:.1f} s "
                f"with {requests} Strapi requests ({requests / ack['marked']:.2f} per notification)"
            )
    finally:
        await device.sio.disconnect()
