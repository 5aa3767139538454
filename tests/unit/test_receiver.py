"""The webhook endpoint: who may call it, what it accepts, and that it answers at once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from adapter.settings import Settings
from tests.conftest import WEBHOOK_SECRET, make_settings
from webhooks.models import WebhookPayload
from webhooks.receiver import WebhookReceiver

AUTH = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
NOTIFICATION_PUBLISH = {
    "event": "entry.publish",
    "createdAt": "2026-11-25T18:42:12.684Z",
    "model": "notification",
    "uid": "api::notification.notification",
    "entry": {"id": 8, "documentId": "adjutl3unow7mrzedbqgrovl", "message": "Hi", "publishedAt": "x"},
}


class RecordingDispatcher:
    def __init__(self) -> None:
        self.payloads: list[WebhookPayload] = []

    def dispatch(self, payload: WebhookPayload) -> str:
        self.payloads.append(payload)
        return "queued"


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture
async def client(dispatcher: RecordingDispatcher) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(make_settings(), dispatcher) as http:
        yield http


def _client(settings: Settings, dispatcher: Any) -> httpx.AsyncClient:
    receiver = WebhookReceiver(settings, dispatcher)
    app = Starlette(routes=[Route("/webhooks/strapi", receiver.handle, methods=["POST"])])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sidecar")


async def test_receiver_accepts_a_real_delivery_and_hands_it_over(
    client: httpx.AsyncClient, dispatcher: RecordingDispatcher
) -> None:
    response = await client.post("/webhooks/strapi", json=NOTIFICATION_PUBLISH, headers=AUTH)
    assert response.status_code == 202
    assert response.json() == {"accepted": True, "outcome": "queued"}
    [payload] = dispatcher.payloads
    assert payload.event == "entry.publish"
    assert payload.entry_ref() is not None
    assert payload.entry_ref().document_id == "adjutl3unow7mrzedbqgrovl"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": WEBHOOK_SECRET},
        {"Authorization": f"Bearer {WEBHOOK_SECRET}x"},
        {"Authorization": f"bearer  {WEBHOOK_SECRET}"},
    ],
)
async def test_receiver_refuses_missing_or_wrong_secret_with_401(
    client: httpx.AsyncClient, dispatcher: RecordingDispatcher, headers: dict[str, str]
) -> None:
    response = await client.post("/webhooks/strapi", json=NOTIFICATION_PUBLISH, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert dispatcher.payloads == []


async def test_receiver_never_echoes_the_secret(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/webhooks/strapi", json=NOTIFICATION_PUBLISH, headers={"Authorization": "x"}
    )
    assert WEBHOOK_SECRET not in response.text


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"uid": "api::notification.notification"}', "event"),
        (b'{"event": "nonsense", "uid": "x"}', "event"),
        (b'{"event": "entry.publish", "uid": "api::notification.notification", "entry": 5}', "entry"),
        (
            b'{"event": "entry.publish", "uid": "api::notification.notification", "entry": {"id": 1}}',
            "documentId",
        ),
        (b"\xff\xfe", "not JSON"),
    ],
)
async def test_receiver_refuses_malformed_bodies_with_400(
    client: httpx.AsyncClient, dispatcher: RecordingDispatcher, body: bytes, fragment: str
) -> None:
    response = await client.post("/webhooks/strapi", content=body, headers=AUTH)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_payload"
    assert fragment in error["message"]
    assert dispatcher.payloads == []


async def test_receiver_refuses_oversized_bodies_with_413(dispatcher: RecordingDispatcher) -> None:
    async with _client(make_settings(webhook_max_body_bytes=1000), dispatcher) as http:
        big = dict(NOTIFICATION_PUBLISH, entry={**NOTIFICATION_PUBLISH["entry"], "message": "x" * 2000})  # type: ignore[dict-item]
        response = await http.post("/webhooks/strapi", content=json.dumps(big), headers=AUTH)
    assert response.status_code == 413
    assert dispatcher.payloads == []


def _publish_for(users: int) -> dict[str, Any]:
    """A notification's publish delivery as Strapi 5.54 sends it: every selected user, populated."""
    user = {
        "documentId": "v79kmenqljdmd5rgtb86mh9r",
        "email": "alice@example.com",
        "provider": "local",
        "confirmed": True,
        "blocked": False,
        "createdAt": "2026-11-25T18:26:04.149Z",
        "updatedAt": "2026-11-25T18:26:04.149Z",
        "publishedAt": "2026-11-25T18:26:04.011Z",
    }
    selected = [{**user, "id": uid, "username": f"user{uid}"} for uid in range(1, users + 1)]
    return dict(NOTIFICATION_PUBLISH, entry={**NOTIFICATION_PUBLISH["entry"], "notification_users": selected})  # type: ignore[dict-item]


async def test_receiver_default_limit_takes_a_publish_to_ten_thousand_users(
    client: httpx.AsyncClient, dispatcher: RecordingDispatcher
) -> None:
    body = json.dumps(_publish_for(10_000))
    assert len(body) > 2_500_000  # over the old 1 MiB default

    response = await client.post("/webhooks/strapi", content=body, headers=AUTH)

    assert response.status_code == 202
    (delivered,) = dispatcher.payloads
    assert delivered.entry is not None
    assert len(delivered.entry["notification_users"]) == 10_000


async def test_receiver_default_limit_still_refuses_a_body_over_16_mib(
    client: httpx.AsyncClient, dispatcher: RecordingDispatcher
) -> None:
    body = json.dumps(
        dict(NOTIFICATION_PUBLISH, entry={**NOTIFICATION_PUBLISH["entry"], "message": "x" * 2**24})
    )  # type: ignore[dict-item]

    response = await client.post("/webhooks/strapi", content=body, headers=AUTH)

    assert response.status_code == 413
    assert dispatcher.payloads == []


async def test_receiver_accepts_other_content_types_and_null_entries(
    client: httpx.AsyncClient, dispatcher: RecordingDispatcher
) -> None:
    other = {"event": "entry.create", "uid": "api::article.article", "entry": {"id": 1}}
    null_entry = dict(NOTIFICATION_PUBLISH, entry=None)
    for body in (other, null_entry):
        response = await client.post("/webhooks/strapi", json=body, headers=AUTH)
        assert response.status_code == 202
    assert [p.uid for p in dispatcher.payloads] == ["api::article.article", "api::notification.notification"]


async def test_receiver_only_answers_post(client: httpx.AsyncClient) -> None:
    response = await client.get("/webhooks/strapi", headers=AUTH)
    assert response.status_code == 405
