"""`python -m adapter check`: try a configuration against the live Strapi (and Redis), in plain words.

Each check prints one line - `ok`, `warn` or `FAIL`, then what it found - and a failure says what
to change. Nothing is written anywhere: the API token's write access and Strapi's webhook
settings (admin-only) cannot be seen from here, and the output says so. Exit status: 0 when
nothing failed, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TextIO

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapter.auth import short_secret_warning, verify_token
from adapter.errors import AuthError, StrapiError
from adapter.scaleout import display_url
from adapter.settings import Settings
from adapter.strapi import StrapiClient, build_http_client

__all__ = ["Finding", "check_configuration", "report", "run_check"]

NOTIFICATION_FIELDS = ("message", "url", "date", "allUsers")
MIN_WEBHOOK_SECRET = 16
REDIS_TIMEOUT_SECONDS = 3.0
INVALID_KEY = re.compile(r"Invalid key (\S+)")
Status = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True, slots=True)
class Finding:
    status: Status
    text: str

    def line(self) -> str:
        return f"{self.status:<5} {self.text}"


class _Checks:
    """The checks, in order; each appends what it found."""

    def __init__(self, settings: Settings, strapi: StrapiClient, token: str | None):
        self.settings = settings
        self.strapi = strapi
        self.token = token
        self.findings: list[Finding] = []

    def add(self, status: Status, text: str) -> None:
        self.findings.append(Finding(status, text))

    async def run(self) -> list[Finding]:
        if await self.strapi_answers():
            token = await self.token_reads()
            if token is None:
                await self.notification_fields()
                await self.read_fields()
            if token != 401:  # a refused token fails every request: said once is enough
                await self.users()
            if self.token is not None:
                await self.sample_token(self.token)
        self.secrets()
        await self.redis()
        return self.findings

    async def strapi_answers(self) -> bool:
        url = self.settings.strapi_url
        try:
            await self.strapi.ping()
        except StrapiError as exc:
            detail = f"{exc.status} {exc.message}" if exc.status is not None else exc.message
            self.add("FAIL", f"Strapi does not answer GET {url}/_health ({detail}): check STRAPI_URL")
            return False
        self.add("ok", f"Strapi answers at {url}")
        return True

    async def token_reads(self) -> int | None:
        """None when the token reads notifications; else the status Strapi answered (0: none)."""
        collection = self.settings.notification_collection
        try:
            await self.strapi.find(collection, page_size=1)
        except StrapiError as exc:
            self.add("FAIL", _token_problem(exc, collection, "NOTIFICATION_COLLECTION"))
            return exc.status or 0
        self.add("ok", f"the API token reads /api/{collection}")
        return None

    async def notification_fields(self) -> None:
        s = self.settings
        populate = {s.audience_field: {"fields": ["username"]}, "document": True}
        await self._fields(
            s.notification_collection,
            list(NOTIFICATION_FIELDS),
            populate,
            {s.audience_field: "AUDIENCE_FIELD", "username": "AUDIENCE_FIELD"},
            f"{', '.join(NOTIFICATION_FIELDS)}, document, {s.audience_field} (users)",
        )

    async def read_fields(self) -> None:
        s = self.settings
        collection = s.read_collection
        populate = {
            s.read_users_field: {"fields": ["username"]},
            s.read_notification_field: {"fields": ["allUsers"]},
        }
        try:
            await self.strapi.find(collection, page_size=1)
        except StrapiError as exc:
            self.add("FAIL", _token_problem(exc, collection, "READ_COLLECTION"))
            return
        await self._fields(
            collection,
            [],
            populate,
            {
                s.read_users_field: "READ_USERS_FIELD",
                "username": "READ_USERS_FIELD",
                s.read_notification_field: "READ_NOTIFICATION_FIELD",
                "allUsers": "READ_NOTIFICATION_FIELD",
            },
            f"{s.read_users_field} (users), {s.read_notification_field} (notifications)",
        )

    async def _fields(
        self, collection: str, fields: list[str], populate: object, settings_of: dict[str, str], listed: str
    ) -> None:
        try:
            await self.strapi.find(collection, fields=fields or None, populate=populate, page_size=1)
        except StrapiError as exc:
            match = INVALID_KEY.search(exc.message) if exc.status == 400 else None
            if match is None:
                self.add("FAIL", f"/api/{collection} refused the sidecar's query: {exc}")
                return
            key = match[1]
            setting = settings_of.get(key)
            hint = f": check {setting}" if setting else ""
            if key in ("username", "allUsers"):
                self.add("FAIL", f"a relation of {collection} points at the wrong content type{hint}")
            else:
                self.add("FAIL", f"{collection} has no field `{key}` (or it is not a relation){hint}")
            return
        self.add("ok", f"{collection} has {listed}")

    async def users(self) -> None:
        try:
            count = await self.strapi.count_users()
            await self.strapi.list_users(fields=["id"], limit=1)
        except StrapiError as exc:
            if exc.status in (401, 403):
                self.add(
                    "FAIL",
                    f"the API token may not list users ({exc.status}): give it find and count on "
                    "Users-permissions > User, or use a full-access token",
                )
            else:
                self.add("FAIL", f"listing users failed: {exc}")
            return
        self.add("ok", f"users can be listed and counted ({count} users)")

    async def sample_token(self, token: str) -> None:
        try:
            identity = verify_token(token, self.settings.strapi_jwt_secret.get_secret_value())
        except AuthError as exc:
            self.add(
                "FAIL",
                f"the sample token does not verify: {exc.detail or exc.message} "
                "(is STRAPI_JWT_SECRET Strapi's users-permissions JWT_SECRET?)",
            )
            return
        try:
            user = await self.strapi.get_user(identity.user_id)
        except StrapiError as exc:
            self.add("FAIL", f"the sample token's user {identity.user_id} cannot be looked up: {exc}")
            return
        if user is None:
            self.add("FAIL", f"the sample token names user {identity.user_id}, who does not exist")
            return
        name = user.get("username") or user.get("email") or "?"
        until = datetime.fromtimestamp(identity.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        if user.get("blocked"):
            self.add("FAIL", f"the sample token is user {identity.user_id} ({name}), who is blocked")
            return
        self.add("ok", f"the sample token verifies: user {identity.user_id} ({name}), valid until {until}")

    def secrets(self) -> None:
        webhook = self.settings.webhook_secret.get_secret_value()
        if len(webhook) < MIN_WEBHOOK_SECRET:
            self.add("warn", f"WEBHOOK_SECRET is short ({len(webhook)} characters): use 32 random characters")
        else:
            self.add("ok", f"WEBHOOK_SECRET is set ({len(webhook)} characters)")
        self.add(
            "warn",
            "not checked from here (admin-only): Strapi's webhook must call <sidecar>/webhooks/strapi "
            "with the header Authorization: Bearer <WEBHOOK_SECRET>, for Entry events",
        )
        if warning := short_secret_warning(self.settings.strapi_jwt_secret.get_secret_value()):
            self.add("warn", warning)

    async def redis(self) -> None:
        url = self.settings.redis_url.get_secret_value()
        if not url:
            self.add("ok", "REDIS_URL is not set: one process (set it to run several)")
            return
        shown = display_url(url)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                version, seconds = await _redis_round_trip(url, self.settings.redis_channel)
        except (RedisError, OSError, TimeoutError) as exc:
            problem = exc or type(exc).__name__
            self.add("FAIL", f"Redis does not answer at {shown}: {problem}: check REDIS_URL")
            return
        self.add("ok", f"Redis {version} answers at {shown}; pub/sub round trip {seconds * 1000:.0f} ms")


async def _redis_round_trip(url: str, channel: str) -> tuple[str, float]:
    redis = Redis.from_url(url)
    try:
        info = await redis.info("server")
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        name = f"{channel}:check:{time.monotonic_ns()}"
        try:
            await pubsub.subscribe(name)
            started = time.monotonic()
            await redis.publish(name, b"check")
            while await pubsub.get_message(timeout=1.0) is None:
                pass
            return str(info.get("redis_version", "?")), time.monotonic() - started
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
    finally:
        await redis.aclose()


def _token_problem(exc: StrapiError, collection: str, setting: str) -> str:
    if exc.status == 401:
        return "Strapi refused the API token (401): STRAPI_API_TOKEN is wrong, expired or revoked"
    if exc.status == 403:
        return (
            f"the API token may not read /api/{collection} (403): give it find, create and update "
            "on it, or use a full-access token"
        )
    if exc.status == 404:
        return f"no content type answers at /api/{collection} (404): check {setting}"
    return f"reading /api/{collection} failed: {exc}"


async def check_configuration(
    settings: Settings, *, token: str | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> list[Finding]:
    """Run every check; `transport` replaces the HTTP transport to Strapi (tests)."""
    http = build_http_client(
        settings.strapi_url,
        settings.strapi_api_token.get_secret_value(),
        settings.strapi_timeout,
        transport=transport,
    )
    async with http:
        return await _Checks(settings, StrapiClient(http), token).run()


def report(findings: list[Finding], out: TextIO) -> int:
    """Print each finding and a summary; 0 when nothing failed, else 1."""
    for finding in findings:
        print(finding.line(), file=out)
    failed = sum(1 for finding in findings if finding.status == "FAIL")
    if failed:
        print(f"\n{failed} problem{'s' if failed > 1 else ''} found.", file=out)
        return 1
    print("\nEverything checked works.", file=out)
    return 0


def run_check(settings: Settings, out: TextIO, *, token: str | None = None) -> int:
    """`python -m adapter check`: run the checks and report them."""
    return report(asyncio.run(check_configuration(settings, token=token)), out)
