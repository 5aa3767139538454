"""The whole sidecar on a real uvicorn port, with real python-socketio clients; Strapi is mocked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
import socketio

from adapter.app import create_app
from tests.conftest import (
    STRAPI_URL,
    WEBHOOK_SECRET,
    access_token,
    legacy_token,
    make_settings,
)
from tests.serving import eventually, serve

DOC = "adjutl3unow7mrzedbqgrovl"
USERS = {
    5: {"id": 5, "username": "alice", "blocked": False},
    6: {"id": 6, "username": "bob", "blocked": False},
}
BLOCKED = {"id": 7, "username": "mallory", "blocked": True}


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
        "notification_users": [{"id": uid} for uid in users],
    }


@pytest.fixture
def strapi() -> respx.MockRouter:
    """A Strapi with users 5, 6 (and blocked 7), one notification for user 5, no reads yet."""
    respx_mock = respx.MockRouter(assert_all_mocked=True, assert_all_called=False)

    def user(request: httpx.Request, user_id: str) -> httpx.Response:
        found = {**USERS, 7: BLOCKED}.get(int(user_id))
        return (
            httpx.Response(200, json=found)
            if found
            else httpx.Response(404, json={"error": {"message": "Not Found"}})
        )

    def notification(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": _published([5]), "meta": {}})

    respx_mock.get(url__regex=rf"{STRAPI_URL}/api/users/(?P<user_id>\d+)$", name="user").mock(
        side_effect=user
    )
    respx_mock.get(f"{STRAPI_URL}/api/users/count", name="count").respond(json=2)
    respx_mock.get(f"{STRAPI_URL}/api/notifications/{DOC}", name="notification").mock(
        side_effect=notification
    )
    return respx_mock


@pytest.fixture
async def sidecar(strapi: respx.MockRouter) -> AsyncIterator[str]:
    async with serve(_app(strapi)) as url:
        yield url


def _app(strapi: respx.MockRouter) -> Any:
    return create_app(make_settings(), transport=httpx.MockTransport(strapi.async_handler))


class Client:
    """A python-socketio client that records what it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received: list[Any] = []
        self.refusal: Any = None
        self.sio.on("notificacion", self.received.append)
        self.sio.on("connect_error", self._refused)

    async def _refused(self, data: Any) -> None:
        self.refusal = data

    async def connect(self, url: str, **kwargs: Any) -> None:
        await self.sio.connect(url, transports=["websocket"], wait_timeout=5, **kwargs)

    async def refused_with(self, url: str, **kwargs: Any) -> Any:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await self.connect(url, **kwargs)
        return self.refusal


async def _webhook(url: str, body: dict[str, Any], secret: str = WEBHOOK_SECRET) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{url}/webhooks/strapi", json=body, headers={"Authorization": f"Bearer {secret}"}
        )


async def test_app_healthz_answers(sidecar: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{sidecar}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_app_delivers_a_published_notification_to_its_user_only(
    sidecar: str, strapi: respx.MockRouter
) -> None:
    alice, bob = Client(), Client()
    await alice.connect(sidecar, auth={"token": legacy_token(5)}, headers={})
    await bob.connect(f"{sidecar}?userId=6", auth={"token": access_token(6)})
    try:
        body = {"event": "entry.publish", "uid": "api::notification.notification", "entry": _published([5])}
        response = await _webhook(sidecar, body)
        assert response.status_code == 202
        await eventually(lambda: alice.received)
        await asyncio.sleep(0.2)
        assert alice.received == [
            {
                "mensaje": "Release notes are out",
                "id": 8,
                "url": "/news/1",
                "document": None,
                "title": "2026-11-25",
                "documentId": DOC,
            }
        ]
        assert bob.received == []
        # A duplicate delivery tells nobody twice.
        await _webhook(sidecar, body)
        await asyncio.sleep(0.3)
        assert len(alice.received) == 1
    finally:
        await alice.sio.disconnect()
        await bob.sio.disconnect()


async def test_app_accepts_a_bearer_header_from_non_browser_clients(sidecar: str) -> None:
    client = Client()
    await client.connect(sidecar, headers={"Authorization": f"Bearer {legacy_token(5)}"})
    assert client.sio.connected
    await client.sio.disconnect()


@pytest.mark.parametrize(
    ("kwargs", "code", "message"),
    [
        ({}, "missing_token", "missing token"),
        ({"auth": {"token": ""}}, "missing_token", "missing token"),
        ({"auth": {"token": "not-a-jwt"}}, "invalid_token", "invalid token"),
        ({"auth": {"token": legacy_token(5, secret="forged" * 8)}}, "invalid_token", "invalid token"),
        ({"auth": {"token": legacy_token(5, ttl=-10)}}, "expired_token", "expired token"),
        ({"auth": {"token": access_token(5, kind="refresh")}}, "invalid_token", "invalid token"),
        ({"auth": {"token": legacy_token(7)}}, "blocked_user", "blocked user"),
        ({"auth": {"token": legacy_token(99)}}, "unknown_user", "unknown user"),
    ],
)
async def test_app_refuses_bad_handshakes_with_a_stable_error(
    sidecar: str, kwargs: dict[str, Any], code: str, message: str
) -> None:
    refusal = await Client().refused_with(sidecar, **kwargs)
    assert refusal == {"message": message, "data": {"code": code}}


async def test_app_refuses_a_user_id_query_that_is_not_the_token_user(sidecar: str) -> None:
    refusal = await Client().refused_with(f"{sidecar}?userId=6", auth={"token": legacy_token(5)})
    assert refusal == {"message": "user mismatch", "data": {"code": "user_mismatch"}}


async def test_app_refuses_when_strapi_cannot_confirm_the_user(strapi: respx.MockRouter) -> None:
    strapi.routes["user"].mock(side_effect=httpx.ConnectError("down"))
    async with serve(_app(strapi)) as url:
        refusal = await Client().refused_with(url, auth={"token": legacy_token(5)})
    assert refusal["data"] == {"code": "auth_unavailable"}


async def test_app_marks_a_notification_read_and_acks(sidecar: str, strapi: respx.MockRouter) -> None:
    strapi.get(f"{STRAPI_URL}/api/notifications").respond(
        json={
            "data": [{"id": 8, "documentId": DOC, "allUsers": False, "notification_users": [{"id": 5}]}],
            "meta": {"pagination": {"total": 1}},
        }
    )
    strapi.get(f"{STRAPI_URL}/api/read-notifications").respond(json={"data": [], "meta": {}})
    created = strapi.post(f"{STRAPI_URL}/api/read-notifications").respond(json={"data": {"documentId": "r1"}})
    client = Client()
    await client.connect(sidecar, auth={"token": legacy_token(5)})
    try:
        ack = await client.sio.call("notification:read", {"notificationId": "8"}, timeout=5)
        assert ack == {"ok": True, "notificationId": DOC, "alreadyRead": False}
        sent = json.loads(created.calls.last.request.content)
        assert sent == {
            "data": {
                "notification": {"connect": [{"documentId": DOC}]},
                "users_permissions_users": {"connect": [{"id": 5}]},
            }
        }
        # The seed's clients emit without an ack; the read is still recorded.
        await client.sio.emit("notification:read", {"notificationId": 8})
        await eventually(lambda: created.call_count == 2)
    finally:
        await client.sio.disconnect()


@pytest.mark.parametrize(
    "payload", [None, "8", [], {"id": 8}, {"notificationId": None}, {"notificationId": "a b"}]
)
async def test_app_answers_malformed_reads_with_an_error_ack(sidecar: str, payload: Any) -> None:
    client = Client()
    await client.connect(sidecar, auth={"token": legacy_token(5)})
    try:
        ack = await client.sio.call("notification:read", payload, timeout=5)
        assert ack["ok"] is False
        assert ack["error"]["code"] == "invalid_payload"
        assert client.sio.connected
    finally:
        await client.sio.disconnect()
