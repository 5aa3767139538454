"""Who gets in, against the real Strapi: both token styles, and every refusal a frontend can meet."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest
import socketio

from adapter.auth import UserDirectory
from adapter.errors import BlockedUser, UnknownUser
from adapter.strapi import StrapiClient, build_http_client
from tests.e2e.harness import JsClient, Stack, settled, wait_for

PASSWORD = "Passw0rd!"


async def _js_refusal(stack: Stack, *extra: str) -> dict[str, Any]:
    client = await JsClient.start(stack.strapi.url, stack.sidecar.url, "-", "-", *extra)
    try:
        refusal = await client.wait("connect_error")
        assert client.of_type("connected") == []
        return refusal
    finally:
        await client.close()


def _token(secret: str, **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + 600, **claims}, secret, algorithm="HS256")


async def test_refresh_mode_access_token_with_python_client_end_to_end(
    refresh_stack: Stack, unique: str
) -> None:
    stack = refresh_stack
    user_id = stack.create_user(f"{unique}fresh")
    session = stack.login(f"{unique}fresh")
    assert jwt.decode(session["jwt"], options={"verify_signature": False})["type"] == "access"
    received: list[Any] = []
    client = socketio.AsyncClient(reconnection=False)
    client.on("notificacion", received.append)
    await client.connect(
        f"{stack.sidecar.url}?userId={user_id}", auth={"token": session["jwt"]}, transports=["websocket"]
    )
    try:
        created = stack.create_notification(message="Fresh", notification_users=[user_id])
        document_id = created["documentId"]
        await wait_for(lambda: received)
        assert received[0]["documentId"] == document_id
        ack = await client.call("notification:read", {"notificationId": received[0]["id"]}, timeout=10)
        assert ack == {"ok": True, "notificationId": document_id, "alreadyRead": False}
        assert stack.readers_of(document_id) == [user_id]
    finally:
        await client.disconnect()


async def test_refresh_token_is_refused(refresh_stack: Stack, unique: str) -> None:
    stack = refresh_stack
    user_id = stack.create_user(f"{unique}refresh")
    session = stack.login(f"{unique}refresh")
    assert "refreshToken" in session, "refresh mode returns a refresh token in the body"
    refusal = await _js_refusal(stack, "--token", session["refreshToken"], "--user-id", str(user_id))
    assert refusal["message"] == "invalid token"
    assert refusal["data"] == {"code": "invalid_token"}


async def test_no_token_is_refused(stack: Stack) -> None:
    refusal = await _js_refusal(stack, "--no-token", "--user-id", "1")
    assert refusal["message"] == "missing token"
    assert refusal["data"] == {"code": "missing_token"}


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda s, uid: _token("forged-secret-" * 4, id=uid), "invalid_token"),
        (lambda s, uid: _token(s.jwt_secret, id=uid, exp=int(time.time()) - 5), "expired_token"),
    ],
    ids=["forged", "expired"],
)
async def test_bad_tokens_are_refused(stack: Stack, unique: str, make: Any, code: str) -> None:
    user_id = stack.create_user(f"{unique}bad")
    refusal = await _js_refusal(stack, "--token", make(stack, user_id), "--user-id", str(user_id))
    assert refusal["data"] == {"code": code}


async def test_deleted_user_is_refused(stack: Stack, unique: str) -> None:
    user_id = stack.create_user(f"{unique}deleted")
    token = stack.login(f"{unique}deleted")["jwt"]
    stack.api().delete(f"/api/users/{user_id}").raise_for_status()
    refusal = await _js_refusal(stack, "--token", token, "--user-id", str(user_id))
    assert refusal["data"] == {"code": "unknown_user"}


async def test_another_users_room_is_refused(stack: Stack, unique: str) -> None:
    mine = stack.create_user(f"{unique}me")
    theirs = stack.create_user(f"{unique}them")
    token = stack.login(f"{unique}me")["jwt"]
    refusal = await _js_refusal(stack, "--token", token, "--user-id", str(theirs))
    assert refusal == {"type": "connect_error", "message": "user mismatch", "data": {"code": "user_mismatch"}}
    assert mine != theirs


async def test_blocked_user_is_refused(stack: Stack, unique: str) -> None:
    user_id = stack.create_user(f"{unique}blocked")
    token = stack.login(f"{unique}blocked")["jwt"]
    stack.set_blocked(user_id, True)
    refusal = await _js_refusal(stack, "--token", token, "--user-id", str(user_id))
    assert refusal["data"] == {"code": "blocked_user"}


async def test_user_checks_asked_together_are_one_request_with_strapis_answers(
    stack: Stack, unique: str
) -> None:
    """The batched user check against Strapi's own `/api/users` filters: ids past the 20th of
    `$in` still count (qs' default array limit), `blocked` comes back, absent ids are unknown."""
    allowed = stack.create_user(f"{unique}batchok")
    blocked = stack.create_user(f"{unique}batchblocked")
    deleted = stack.create_user(f"{unique}batchgone")
    stack.set_blocked(blocked, True)
    stack.api().delete(f"/api/users/{deleted}").raise_for_status()
    strangers = [900_000 + n for n in range(30)]  # asked first: Strapi's users come 31st to 33rd
    requests: list[str] = []
    async with build_http_client(stack.strapi.url, stack.api_token, 30) as http:
        users = UserDirectory(
            StrapiClient(http, lambda method, status, seconds: requests.append(f"{method} {status}")), ttl=30
        )
        results = await asyncio.gather(
            *(users.check(user_id) for user_id in [*strangers, allowed, blocked, deleted]),
            return_exceptions=True,
        )

    assert requests == ["GET 200"]
    assert all(isinstance(result, UnknownUser) for result in results[:30])
    assert results[30] is None
    assert isinstance(results[31], BlockedUser)
    assert isinstance(results[32], UnknownUser)


async def test_a_burst_of_handshakes_gets_every_answer_right(stack: Stack, unique: str) -> None:
    allowed = stack.create_user(f"{unique}burstok")
    blocked = stack.create_user(f"{unique}burstblocked")
    stack.set_blocked(blocked, True)
    cases = [(allowed, True)] * 5 + [(blocked, False)] * 5 + [(910_000 + n, False) for n in range(20)]
    # A sidecar of its own: 25 refusals in a minute would trip the shared one's failure throttle.
    sidecar = stack.extra_sidecar(f"{unique}burst", {"HANDSHAKE_FAILURES_PER_MINUTE": "0"})
    await asyncio.to_thread(sidecar.start)
    clients = [socketio.AsyncClient(reconnection=False) for _ in cases]

    async def connect(client: socketio.AsyncClient, user_id: int) -> bool:
        try:
            await client.connect(
                f"{sidecar.url}?userId={user_id}",
                auth={"token": _token(stack.jwt_secret, id=user_id)},
                transports=["websocket"],
                wait_timeout=20,
            )
        except socketio.exceptions.ConnectionError:
            return False
        return True

    try:
        accepted = await asyncio.gather(
            *(connect(client, user_id) for client, (user_id, _) in zip(clients, cases, strict=True))
        )
    finally:
        await asyncio.gather(*(client.disconnect() for client in clients if client.connected))
        await asyncio.to_thread(sidecar.stop)

    assert accepted == [allowed_in for _, allowed_in in cases]


async def test_webhook_with_wrong_secret_is_refused_and_changes_nothing(stack: Stack, unique: str) -> None:
    user_id = stack.create_user(f"{unique}hook")
    created = stack.create_notification(status="draft", message="Quiet", allUsers=True)
    document_id = created["documentId"]
    await wait_for(lambda: stack.audience(document_id, "draft") == set(stack.user_ids()), within=20)
    await settled(lambda: len(stack.tap.deliveries), quiet=1.5)
    stack.update_notification(document_id, status="draft", notification_users={"disconnect": [user_id]})
    await settled(lambda: len(stack.tap.deliveries), quiet=2.0)
    before = stack.notification(document_id, "draft")
    forged = {
        "event": "entry.publish",
        "uid": "api::notification.notification",
        "entry": {"id": 1, "documentId": document_id},
    }
    async with httpx.AsyncClient() as http:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            response = await http.post(f"{stack.sidecar.url}/webhooks/strapi", json=forged, headers=headers)
            assert response.status_code == 401
    await settled(lambda: len(stack.tap.deliveries), quiet=1.5)
    assert stack.notification(document_id, "draft") == before
    assert stack.notification(document_id) is None
