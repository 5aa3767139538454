"""The Strapi test fixture (strapi-fixtures/) behaves like the Strapi the sidecar is built for.

These tests start a real Strapi 5 (node) per JWT mode; run ``strapi-fixtures/install.sh`` first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

LAUNCHER_PATH = Path(__file__).resolve().parents[2] / "strapi-fixtures" / "launcher.py"
NOTIFICATION_UID = "api::notification.notification"
WEBHOOK_WAIT = 10.0
# Long enough for a duplicate delivery to arrive: Strapi posts all of an entry's webhooks at once.
DUPLICATE_GRACE = 1.5
PASSWORD = "Fixture-Passw0rd!"


def _load_launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("strapi_fixture_launcher", LAUNCHER_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


launcher = _load_launcher()


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: dict[str, Any]


def _document_id(delivery: Delivery) -> str | None:
    entry = delivery.body.get("entry") or {}
    document_id: str | None = entry.get("documentId")
    return document_id


class WebhookReceiver:
    """A stdlib HTTP server on a free loopback port that records every POST it gets."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver._changed:
                    receiver.deliveries.append(Delivery(dict(self.headers.items()), body))
                    receiver._changed.notify_all()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhooks/strapi"

    def for_document(self, document_id: str) -> list[Delivery]:
        with self._changed:
            return [d for d in self.deliveries if _document_id(d) == document_id]

    def wait_for(self, done: Callable[[], bool], timeout: float = WEBHOOK_WAIT) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"webhooks not received in {timeout} s: {self.deliveries}")
                self._changed.wait(remaining)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@dataclass
class Stack:
    strapi: Any  # launcher.StrapiFixture, loaded by path
    receiver: WebhookReceiver
    client: httpx.Client
    api_token: str
    jwt_secret: str
    webhook_secret: str

    @property
    def token_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token}"}


def _stack(jwt_mode: str) -> Iterator[Stack]:
    receiver = WebhookReceiver()
    api_token = secrets.token_hex(32)
    jwt_secret = secrets.token_urlsafe(32)
    webhook_secret = secrets.token_urlsafe(24)
    strapi = launcher.StrapiFixture(
        api_token=api_token,
        webhook_url=receiver.url,
        webhook_secret=webhook_secret,
        jwt_secret=jwt_secret,
        jwt_mode=jwt_mode,
        seed_users=[{"username": "seeded", "email": "Seeded@Example.com", "password": PASSWORD}],
    )
    try:
        strapi.start()
        with httpx.Client(base_url=strapi.url, timeout=15.0) as client:
            yield Stack(strapi, receiver, client, api_token, jwt_secret, webhook_secret)
    finally:
        strapi.close()
        receiver.close()


@pytest.fixture(scope="module")
def legacy() -> Iterator[Stack]:
    yield from _stack("legacy")


@pytest.fixture(scope="module")
def refresh() -> Iterator[Stack]:
    yield from _stack("refresh")


def _b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _jwt_claims(token: str, secret: str) -> dict[str, Any]:
    """Decode a JWT, checking that it is HS256-signed with ``secret``."""
    header, payload, signature = token.split(".")
    assert json.loads(_b64url_decode(header))["alg"] == "HS256"
    expected = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(expected, _b64url_decode(signature))
    claims: dict[str, Any] = json.loads(_b64url_decode(payload))
    return claims


def _create_user(stack: Stack) -> dict[str, Any]:
    roles = stack.client.get("/api/users-permissions/roles", headers=stack.token_headers)
    assert roles.status_code == HTTPStatus.OK, roles.text
    role_id = next(r["id"] for r in roles.json()["roles"] if r["type"] == "authenticated")
    name = f"user{secrets.token_hex(4)}"
    created = stack.client.post(
        "/api/users",
        headers=stack.token_headers,
        # POST /api/users answers 400 "role is a required field" without a role.
        json={
            "username": name,
            "email": f"{name}@example.com",
            "password": PASSWORD,
            "confirmed": True,
            "role": role_id,
        },
    )
    assert created.status_code == HTTPStatus.CREATED, created.text
    user: dict[str, Any] = created.json()
    return user


def _login(stack: Stack, identifier: str) -> dict[str, Any]:
    credentials = {"identifier": identifier, "password": PASSWORD}
    response = stack.client.post("/api/auth/local", json=credentials)
    assert response.status_code == HTTPStatus.OK, response.text
    body: dict[str, Any] = response.json()
    return body


def _me(stack: Stack, jwt: str) -> dict[str, Any]:
    response = stack.client.get("/api/users/me", headers={"Authorization": f"Bearer {jwt}"})
    assert response.status_code == HTTPStatus.OK, response.text
    me: dict[str, Any] = response.json()
    return me


def _create_notification(stack: Stack, message: str) -> dict[str, Any]:
    response = stack.client.post(
        "/api/notifications",
        headers=stack.token_headers,
        json={"data": {"message": message, "url": "/inbox", "date": "2026-11-25"}},
    )
    assert response.status_code == HTTPStatus.CREATED, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _events(deliveries: list[Delivery]) -> list[str]:
    """Events in the order Strapi dispatched them (arrival order is not guaranteed)."""
    return [d.body["event"] for d in sorted(deliveries, key=lambda d: d.body["createdAt"])]


def test_fixture_health_answers_204(legacy: Stack) -> None:
    response = legacy.client.get("/_health")

    assert response.status_code == HTTPStatus.NO_CONTENT
    assert legacy.strapi.url.startswith("http://127.0.0.1:")


def test_fixture_api_token_lists_notifications(legacy: Stack) -> None:
    response = legacy.client.get("/api/notifications", headers=legacy.token_headers)
    anonymous = legacy.client.get("/api/notifications")

    assert response.status_code == HTTPStatus.OK, response.text
    assert isinstance(response.json()["data"], list)
    assert set(response.json()["meta"]["pagination"]) == {"page", "pageSize", "pageCount", "total"}
    assert anonymous.status_code == HTTPStatus.FORBIDDEN


def test_fixture_wrong_api_token_is_rejected(legacy: Stack) -> None:
    response = legacy.client.get(
        "/api/notifications", headers={"Authorization": f"Bearer {secrets.token_hex(32)}"}
    )

    assert response.status_code == HTTPStatus.UNAUTHORIZED


def test_fixture_legacy_login_issues_id_jwt_and_me_works(legacy: Stack) -> None:
    user = _create_user(legacy)

    login = _login(legacy, user["email"])
    claims = _jwt_claims(login["jwt"], legacy.jwt_secret)

    assert claims["id"] == user["id"]
    assert {"iat", "exp"} <= set(claims)
    assert "userId" not in claims
    assert login["user"]["id"] == user["id"]
    assert _me(legacy, login["jwt"])["username"] == user["username"]


def test_fixture_api_token_cannot_read_me(legacy: Stack) -> None:
    response = legacy.client.get("/api/users/me", headers=legacy.token_headers)

    assert response.status_code == HTTPStatus.UNAUTHORIZED


def test_fixture_seed_user_can_log_in(legacy: Stack) -> None:
    login = _login(legacy, "seeded")

    assert login["user"]["email"] == "seeded@example.com"
    assert login["user"]["confirmed"] is True
    assert login["user"]["blocked"] is False
    assert _me(legacy, login["jwt"])["username"] == "seeded"


def test_fixture_webhook_delivers_create_then_publish(legacy: Stack) -> None:
    created = _create_notification(legacy, "hello from the fixture test")
    document_id = created["documentId"]

    legacy.receiver.wait_for(lambda: len(legacy.receiver.for_document(document_id)) >= 2)
    deliveries = legacy.receiver.for_document(document_id)
    by_event = {d.body["event"]: d for d in deliveries}

    assert _events(deliveries) == ["entry.create", "entry.publish"]
    for event, delivery in by_event.items():
        assert delivery.headers["Authorization"] == f"Bearer {legacy.webhook_secret}"
        assert delivery.headers["X-Strapi-Event"] == event
        assert delivery.body["uid"] == NOTIFICATION_UID
        assert delivery.body["model"] == "notification"
        assert delivery.body["entry"]["message"] == "hello from the fixture test"
    assert by_event["entry.create"].body["entry"]["publishedAt"] is None
    assert by_event["entry.publish"].body["entry"]["publishedAt"] is not None
    assert by_event["entry.publish"].body["entry"]["id"] == created["id"]


def test_fixture_restart_keeps_data_and_one_webhook(legacy: Stack) -> None:
    before = _create_notification(legacy, "written before the restart")

    legacy.strapi.restart()
    after = _create_notification(legacy, "written after the restart")
    legacy.receiver.wait_for(lambda: len(legacy.receiver.for_document(after["documentId"])) >= 2)
    time.sleep(DUPLICATE_GRACE)
    listed = legacy.client.get(
        "/api/notifications",
        headers=legacy.token_headers,
        params={"filters[documentId][$eq]": before["documentId"]},
    )

    assert _events(legacy.receiver.for_document(after["documentId"])) == [
        "entry.create",
        "entry.publish",
    ]
    assert listed.json()["meta"]["pagination"]["total"] == 1
    assert _login(legacy, "seeded")["user"]["username"] == "seeded"


def test_fixture_restart_with_new_webhook_secret_updates_the_webhook(legacy: Stack) -> None:
    new_secret = secrets.token_urlsafe(24)
    legacy.strapi.webhook_secret = new_secret

    legacy.strapi.restart()
    created = _create_notification(legacy, "after a secret rotation")
    legacy.receiver.wait_for(lambda: len(legacy.receiver.for_document(created["documentId"])) >= 2)
    time.sleep(DUPLICATE_GRACE)
    deliveries = legacy.receiver.for_document(created["documentId"])

    assert _events(deliveries) == ["entry.create", "entry.publish"]
    assert {d.headers["Authorization"] for d in deliveries} == {f"Bearer {new_secret}"}


def test_fixture_restart_without_webhook_url_removes_the_webhook(legacy: Stack) -> None:
    legacy.strapi.webhook_url = ""

    legacy.strapi.restart()
    created = _create_notification(legacy, "nobody is told about this one")
    time.sleep(DUPLICATE_GRACE)

    assert legacy.receiver.for_document(created["documentId"]) == []


def test_fixture_refresh_login_issues_access_jwt_and_me_works(refresh: Stack) -> None:
    user = _create_user(refresh)

    login = _login(refresh, user["username"])
    claims = _jwt_claims(login["jwt"], refresh.jwt_secret)
    refresh_claims = _jwt_claims(login["refreshToken"], refresh.jwt_secret)

    assert claims["userId"] == str(user["id"])
    assert claims["type"] == "access"
    assert claims["sessionId"]
    assert "id" not in claims
    assert refresh_claims["type"] == "refresh"
    assert _me(refresh, login["jwt"])["id"] == user["id"]


def test_fixture_refresh_token_is_not_accepted_as_access_token(refresh: Stack) -> None:
    user = _create_user(refresh)
    login = _login(refresh, user["email"])

    response = refresh.client.get(
        "/api/users/me", headers={"Authorization": f"Bearer {login['refreshToken']}"}
    )

    assert response.status_code == HTTPStatus.UNAUTHORIZED
