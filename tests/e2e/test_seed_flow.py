"""The seed's frontend flow, unchanged, against a real Strapi and the real sidecar process."""

from __future__ import annotations

import asyncio

from tests.e2e.harness import JsClient, Stack, settled, wait_for

PASSWORD = "Passw0rd!"


async def test_seed_flow_with_the_official_js_client(stack: Stack, unique: str) -> None:
    alice_id = stack.create_user(f"{unique}alice")
    bob_id = stack.create_user(f"{unique}bob")
    alice = await JsClient.start(stack.strapi.url, stack.sidecar.url, f"{unique}alice", PASSWORD)
    bob = await JsClient.start(stack.strapi.url, stack.sidecar.url, f"{unique}bob", PASSWORD)
    try:
        assert (await alice.wait("login"))["userId"] == alice_id
        await alice.wait("connected")
        await bob.wait("connected")

        created = stack.create_notification(
            message="Hola", url="/inbox", date="2026-11-25", notification_users=[alice_id, bob_id]
        )
        document_id = created["documentId"]
        await wait_for(lambda: alice.events("notificacion") and bob.events("notificacion"))
        [payload] = alice.events("notificacion")
        published = stack.notification(document_id)
        assert published is not None
        assert payload == {
            "mensaje": "Hola",
            "id": published["id"],
            "url": "/inbox",
            "document": None,
            "title": "2026-11-25",
            "documentId": document_id,
        }

        # The seed's page sends the id it put in data-id: a string.
        await alice.send({"emit": "notification:read", "data": {"notificationId": str(payload["id"])}})
        await wait_for(lambda: stack.readers_of(document_id) == [alice_id])
        first = stack.reads_of(document_id)
        assert len(first) == 1

        # A second user reading the same notification joins the same READNOTIFICATION.
        ack = await bob.call("notification:read", {"notificationId": str(payload["id"])})
        assert ack == {"ok": True, "notificationId": document_id, "alreadyRead": False}
        reads = stack.reads_of(document_id)
        assert [r["documentId"] for r in reads] == [first[0]["documentId"]]
        assert stack.readers_of(document_id) == sorted([alice_id, bob_id])

        # Reading twice changes nothing.
        ack = await bob.call("notification:read", {"notificationId": str(payload["id"])})
        assert ack == {"ok": True, "notificationId": document_id, "alreadyRead": True}
        assert stack.readers_of(document_id) == sorted([alice_id, bob_id])
        assert len(stack.reads_of(document_id)) == 1

        # Each was told exactly once, though Strapi sent create + publish.
        await asyncio.sleep(1)
        assert len(alice.events("notificacion")) == 1
        assert len(bob.events("notificacion")) == 1
    finally:
        await alice.close()
        await bob.close()


async def test_seed_flow_webhooks_settle(stack: Stack) -> None:
    # Whatever the previous tests did, Strapi and the sidecar stop talking: no webhook loop.
    await settled(lambda: len(stack.tap.deliveries), quiet=2.0)
