"""`python -m adapter check` (adapter/check.py): each check's plain-words result, against a fake Strapi."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapter.__main__ import main
from adapter.check import Finding, check_configuration, report
from adapter.settings import Settings
from tests.conftest import JWT_SECRET, legacy_token, make_settings
from tests.redis_server import RedisServer

USERS = {
    5: {"id": 5, "username": "alice", "blocked": False},
    7: {"id": 7, "username": "mallory", "blocked": True},
}
EMPTY = {"data": [], "meta": {"pagination": {"page": 1, "pageSize": 1, "pageCount": 0, "total": 0}}}
LONG_WEBHOOK_SECRET = "a-webhook-secret-long-enough-for-the-check"


class FakeStrapi:
    """Answers the routes the check reads; `fail` maps a path to (status, message)."""

    def __init__(self, fail: dict[str, tuple[int, str]] | None = None) -> None:
        self.fail = fail or {}
        self.invalid_key: dict[str, str] = {}  # collection -> key Strapi calls invalid

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path in self.fail:
            status, message = self.fail[path]
            return httpx.Response(
                status, json={"data": None, "error": {"status": status, "message": message}}
            )
        collection = path.removeprefix("/api/")
        key = self.invalid_key.get(collection)
        if key is not None and key in str(request.url.params):
            return httpx.Response(400, json={"error": {"status": 400, "message": f"Invalid key {key}"}})
        if path == "/_health":
            return httpx.Response(204)
        if path in ("/api/notifications", "/api/read-notifications"):
            return httpx.Response(200, json=EMPTY)
        if path == "/api/users/count":
            return httpx.Response(200, json=2)
        if path == "/api/users":
            return httpx.Response(200, json=[{"id": 5}])
        if path.startswith("/api/users/"):
            user = USERS.get(int(path.rsplit("/", 1)[-1]))
            return httpx.Response(200, json=user) if user else httpx.Response(404, json={})
        return httpx.Response(404, json={"error": {"status": 404, "message": "Not Found"}})


async def _check(strapi: FakeStrapi, *, token: str | None = None, **settings: Any) -> list[Finding]:
    values: dict[str, Any] = {"webhook_secret": LONG_WEBHOOK_SECRET, **settings}
    return await check_configuration(
        make_settings(**values), token=token, transport=httpx.MockTransport(strapi)
    )


def _lines(findings: list[Finding]) -> list[str]:
    return [finding.line() for finding in findings]


def _failures(findings: list[Finding]) -> list[str]:
    return [finding.text for finding in findings if finding.status == "FAIL"]


async def test_check_everything_right_passes() -> None:
    findings = await _check(FakeStrapi(), token=legacy_token(5))

    assert _failures(findings) == []
    out = io.StringIO()
    assert report(findings, out) == 0
    text = out.getvalue()
    assert "ok    Strapi answers at http://strapi.test" in text
    assert "ok    the API token reads /api/notifications" in text
    assert (
        "ok    notifications has message, url, date, allUsers, document, notification_users (users)" in text
    )
    assert (
        "ok    read-notifications has users_permissions_users (users), notification (notifications)" in text
    )
    assert "ok    users can be listed and counted (2 users)" in text
    assert "ok    the sample token verifies: user 5 (alice), valid until" in text
    assert "ok    REDIS_URL is not set: one process" in text
    assert "warn  not checked from here (admin-only): Strapi's webhook must call" in text
    assert text.endswith("Everything checked works.\n")


async def test_check_says_when_strapi_does_not_answer() -> None:
    findings = await _check(FakeStrapi({"/_health": (502, "Bad Gateway")}))

    assert _failures(findings) == [
        "Strapi does not answer GET http://strapi.test/_health (502 Bad Gateway): check STRAPI_URL"
    ]
    out = io.StringIO()
    assert report(findings, out) == 1
    assert out.getvalue().endswith("1 problem found.\n")


async def test_check_says_the_token_was_refused() -> None:
    strapi = FakeStrapi({"/api/notifications": (401, "Missing or invalid credentials")})

    failures = _failures(await _check(strapi))

    assert failures == ["Strapi refused the API token (401): STRAPI_API_TOKEN is wrong, expired or revoked"]


async def test_check_names_the_setting_of_a_missing_collection() -> None:
    failures = _failures(await _check(FakeStrapi(), notification_collection="notificationz"))

    assert failures == ["no content type answers at /api/notificationz (404): check NOTIFICATION_COLLECTION"]


async def test_check_names_the_setting_of_a_missing_field() -> None:
    strapi = FakeStrapi()
    strapi.invalid_key["notifications"] = "notification_userz"

    failures = _failures(await _check(strapi, audience_field="notification_userz"))

    assert failures == [
        "notifications has no field `notification_userz` (or it is not a relation): check AUDIENCE_FIELD"
    ]


async def test_check_says_when_a_relation_points_at_the_wrong_type() -> None:
    strapi = FakeStrapi()
    strapi.invalid_key["read-notifications"] = "allUsers"

    failures = _failures(await _check(strapi))

    assert failures == [
        "a relation of read-notifications points at the wrong content type: check READ_NOTIFICATION_FIELD"
    ]


async def test_check_says_when_users_cannot_be_listed() -> None:
    strapi = FakeStrapi({"/api/users/count": (403, "Forbidden")})

    failures = _failures(await _check(strapi))

    assert failures == [
        "the API token may not list users (403): give it find and count on Users-permissions > User, "
        "or use a full-access token"
    ]


@pytest.mark.parametrize(
    ("token", "failure"),
    [
        (legacy_token(5, secret="another-secret-of-another-strapi-xx"), "the sample token does not verify"),
        (legacy_token(5, ttl=-60), "the sample token does not verify"),
        (legacy_token(9), "the sample token names user 9, who does not exist"),
        (legacy_token(7), "the sample token is user 7 (mallory), who is blocked"),
    ],
)
async def test_check_says_what_is_wrong_with_a_sample_token(token: str, failure: str) -> None:
    failures = _failures(await _check(FakeStrapi(), token=token))

    assert len(failures) == 1
    assert failures[0].startswith(failure)


async def test_check_warns_about_short_secrets() -> None:
    findings = await _check(
        FakeStrapi(), webhook_secret="short", strapi_jwt_secret="24-characters-long-jwtxx"
    )

    warnings = [finding.text for finding in findings if finding.status == "warn"]
    assert "WEBHOOK_SECRET is short (5 characters): use 32 random characters" in warnings
    assert any(text.startswith("STRAPI_JWT_SECRET is shorter than 32 bytes") for text in warnings)
    assert _failures(findings) == []


async def test_check_reaches_redis(redis_server: RedisServer) -> None:
    findings = await _check(FakeStrapi(), redis_url=redis_server.url)

    redis = [finding for finding in findings if "Redis" in finding.text]
    assert len(redis) == 1
    assert redis[0].status == "ok"
    assert redis[0].text.startswith("Redis 7.")
    assert f"answers at {redis_server.url}; pub/sub round trip" in redis[0].text


async def test_check_says_when_redis_is_unreachable(redis_server: RedisServer) -> None:
    url = f"redis://:s3cret-pass@127.0.0.1:{redis_server.port}/0"
    redis_server.stop()

    failures = _failures(await _check(FakeStrapi(), redis_url=url))

    assert len(failures) == 1
    assert failures[0].startswith(f"Redis does not answer at redis://:***@127.0.0.1:{redis_server.port}/0")
    assert failures[0].endswith("check REDIS_URL")
    assert "s3cret-pass" not in failures[0]


def test_check_command_prints_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    env = tmp_path / ".env"
    env.write_text(
        "STRAPI_URL=http://127.0.0.1:9\nSTRAPI_API_TOKEN=t0ken-value\n"
        f"STRAPI_JWT_SECRET={JWT_SECRET}\nWEBHOOK_SECRET={LONG_WEBHOOK_SECRET}\n"
    )

    code = main(["check", "--env-file", str(env)])

    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith(
        "FAIL  Strapi does not answer GET http://127.0.0.1:9/_health (unreachable: ConnectError)"
    )
    assert "t0ken-value" not in out
