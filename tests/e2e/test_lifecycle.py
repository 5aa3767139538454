"""Notification lifecycles driven by Strapi's real webhooks: all users, drafts, no loops."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

from tests.e2e.harness import Stack, settled, wait_for

NOTIFICATION_UID = "api::notification.notification"


class Listener:
    """A python-socketio client logged in as one user, recording `notificacion` events."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received: list[dict[str, Any]] = []
        self.sio.on("notificacion", self.received.append)

    @classmethod
    async def connect(cls, stack: Stack, username: str) -> Listener:
        listener = cls()
        jwt = stack.login(username)["jwt"]
        await listener.sio.connect(
            stack.sidecar.url, auth={"token": jwt}, transports=["websocket"], wait_timeout=10
        )
        return listener

    def of(self, document_id: str) -> list[dict[str, Any]]:
        return [p for p in self.received if p["documentId"] == document_id]


async def _listeners(stack: Stack, names: list[str]) -> list[Listener]:
    return list(await asyncio.gather(*(Listener.connect(stack, name) for name in names)))


async def _close(listeners: list[Listener]) -> None:
    await asyncio.gather(*(listener.sio.disconnect() for listener in listeners))


async def test_all_users_selects_everyone_and_tells_each_once(stack: Stack, unique: str) -> None:
    names = [f"{unique}all{i}" for i in range(4)]
    for name in names:
        stack.create_user(name)
    listeners = await _listeners(stack, names)
    try:
        before = len(stack.tap.deliveries)
        created = stack.create_notification(message="To everyone", allUsers=True)
        document_id = created["documentId"]
        everyone = set(stack.user_ids())

        await wait_for(lambda: stack.audience(document_id) == everyone, within=20)
        assert stack.audience(document_id, "draft") == everyone
        published = stack.notification(document_id)
        assert published is not None
        assert published["allUsers"] is True

        await wait_for(lambda: all(listener.of(document_id) for listener in listeners))
        # No webhook loop: the deliveries stop, and the sidecar wrote once (+ its publish).
        total = await settled(lambda: stack.tap.count(document_id=document_id), quiet=2.5)
        writes = [
            d
            for d in stack.tap.deliveries[before:]
            if d["uid"] == NOTIFICATION_UID
            and d["documentId"] == document_id
            and d["event"] == "entry.update"
        ]
        assert 1 <= len(writes) <= 2, writes
        # create + publish, then the sidecar's own update + publish (and at most one more pair)
        assert total <= 6
        final = stack.notification(document_id)
        assert final is not None
        for listener in listeners:
            assert len(listener.of(document_id)) == 1
            assert listener.of(document_id)[0]["id"] in {published["id"], final["id"]}
    finally:
        await _close(listeners)


async def test_all_users_turns_off_when_someone_is_removed(stack: Stack, unique: str) -> None:
    removed = stack.create_user(f"{unique}gone")
    created = stack.create_notification(message="Everyone, then not", allUsers=True)
    document_id = created["documentId"]
    everyone = set(stack.user_ids())
    await wait_for(lambda: stack.audience(document_id) == everyone, within=20)
    await settled(lambda: len(stack.tap.deliveries), quiet=1.5)

    stack.update_notification(document_id, notification_users={"disconnect": [removed]})

    def flag_off() -> bool:
        found = stack.notification(document_id)
        return found is not None and found["allUsers"] is False

    await wait_for(flag_off, within=20)
    await settled(lambda: len(stack.tap.deliveries), quiet=2.0)
    # The removed user stays removed: turning the flag off is not re-adding them.
    assert removed not in stack.audience(document_id)
    assert stack.audience(document_id) == everyone - {removed}
    assert stack.notification(document_id)["allUsers"] is False  # type: ignore[index]


async def test_everyone_selected_by_hand_reads_all_users(stack: Stack, unique: str) -> None:
    stack.create_user(f"{unique}hand")
    everyone = stack.user_ids()
    created = stack.create_notification(message="Picked by hand", notification_users=everyone)
    document_id = created["documentId"]

    def flag_on() -> bool:
        found = stack.notification(document_id)
        return found is not None and found["allUsers"] is True

    await wait_for(flag_on, within=20)
    await settled(lambda: len(stack.tap.deliveries), quiet=2.0)
    assert stack.audience(document_id) == set(everyone)


async def test_a_draft_stays_a_draft_and_emits_nothing_until_published(stack: Stack, unique: str) -> None:
    user_id = stack.create_user(f"{unique}draft")
    [listener] = await _listeners(stack, [f"{unique}draft"])
    try:
        created = stack.create_notification(status="draft", message="Not yet", notification_users=[user_id])
        document_id = created["documentId"]
        await settled(lambda: len(stack.tap.deliveries), quiet=2.0)
        assert stack.notification(document_id) is None
        assert stack.notification(document_id, "draft") is not None
        assert listener.of(document_id) == []

        # An all-users draft is completed as a draft, never published by the sidecar.
        stack.update_notification(document_id, status="draft", allUsers=True)
        everyone = set(stack.user_ids())
        await wait_for(lambda: stack.audience(document_id, "draft") == everyone, within=20)
        await settled(lambda: len(stack.tap.deliveries), quiet=2.0)
        assert stack.notification(document_id) is None
        assert listener.of(document_id) == []

        # Publishing is the editor's act; then it arrives, once.
        stack.update_notification(document_id)
        await wait_for(lambda: listener.of(document_id))
        await settled(lambda: len(stack.tap.deliveries), quiet=2.0)
        assert len(listener.of(document_id)) == 1
        assert listener.of(document_id)[0]["mensaje"] == "Not yet"
    finally:
        await listener.sio.disconnect()


async def test_republishing_does_not_notify_again(stack: Stack, unique: str) -> None:
    user_id = stack.create_user(f"{unique}again")
    [listener] = await _listeners(stack, [f"{unique}again"])
    try:
        created = stack.create_notification(message="Once", notification_users=[user_id])
        document_id = created["documentId"]
        await wait_for(lambda: listener.of(document_id))
        stack.update_notification(document_id, message="Once, edited")
        await settled(lambda: stack.tap.count(document_id=document_id), quiet=2.0)
        assert len(listener.of(document_id)) == 1
    finally:
        await listener.sio.disconnect()


async def test_a_lost_webhook_is_delivered_by_the_reconciler(stack: Stack, unique: str) -> None:
    user_id = stack.create_user(f"{unique}lost")
    [listener] = await _listeners(stack, [f"{unique}lost"])
    try:
        await settled(lambda: len(stack.tap.deliveries), quiet=1.0)
        stack.tap.drop_next = 2  # the create and the publish webhooks never reach the sidecar
        created = stack.create_notification(message="Lost in transit", notification_users=[user_id])
        document_id = created["documentId"]
        await wait_for(lambda: listener.of(document_id), within=20)
        dropped = [d for d in stack.tap.deliveries if d.get("dropped")]
        assert {d["event"] for d in dropped if d["documentId"] == document_id} == {
            "entry.create",
            "entry.publish",
        }
        await settled(lambda: len(stack.tap.deliveries), quiet=3.0)
        assert len(listener.of(document_id)) == 1
    finally:
        await listener.sio.disconnect()


async def test_an_all_users_notification_published_while_webhooks_are_lost_is_completed(
    stack: Stack, unique: str
) -> None:
    stack.create_user(f"{unique}quiet")
    await settled(lambda: len(stack.tap.deliveries), quiet=1.0)
    stack.tap.drop_next = 2
    document_id = stack.create_notification(message="Nobody heard", allUsers=True)["documentId"]
    await wait_for(lambda: stack.audience(document_id) == set(stack.user_ids()), within=20)
