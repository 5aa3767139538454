"""Abuse limits and token lifetime: rate limits, connection caps, handshake throttling, expiry."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import respx

from adapter.app import create_app
from adapter.limits import FailureThrottle, RateLimiter
from tests.conftest import legacy_token, make_settings
from tests.serving import eventually, serve
from tests.unit.test_app import Client, strapi  # noqa: F401 - the mocked Strapi fixture


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_a_burst_then_the_average_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    assert [limiter.allow("s") for _ in range(4)] == [True, True, True, False]
    clock.now += 1.0  # one token a second
    assert limiter.allow("s") is True
    assert limiter.allow("s") is False
    assert limiter.allow("other") is True  # each key has its own bucket


def test_rate_limiter_zero_means_no_limit() -> None:
    limiter = RateLimiter(per_minute=0, burst=1)
    assert all(limiter.allow("s") for _ in range(1000))


def test_failure_throttle_blocks_after_the_limit_for_a_minute() -> None:
    clock = Clock()
    throttle = FailureThrottle(per_minute=3, clock=clock)
    for _ in range(3):
        assert throttle.blocked("1.2.3.4") is False
        throttle.failed("1.2.3.4")
    assert throttle.blocked("1.2.3.4") is True
    assert throttle.blocked("5.6.7.8") is False
    clock.now += 61
    assert throttle.blocked("1.2.3.4") is False


def _app(router: respx.MockRouter, **overrides: Any) -> Any:
    settings = make_settings(**overrides)
    return create_app(settings, transport=httpx.MockTransport(router.async_handler))


async def test_limits_over_rate_requests_get_an_error_ack_and_reach_no_strapi(
    strapi: respx.MockRouter,  # noqa: F811
) -> None:
    async with serve(_app(strapi, socket_events_per_minute=1, event_burst=2)) as url:
        client = Client()
        await client.connect(url, auth={"token": legacy_token(5)})
        try:
            before = strapi.calls.call_count
            acks = [await client.sio.call("notification:read", {"notificationId": "x y"}) for _ in range(4)]
            codes = [ack["error"]["code"] for ack in acks]
            assert codes == ["invalid_payload", "invalid_payload", "rate_limited", "rate_limited"]
            assert strapi.calls.call_count == before
        finally:
            await client.sio.disconnect()


async def test_limits_cap_sockets_per_user(strapi: respx.MockRouter) -> None:  # noqa: F811
    async with serve(_app(strapi, max_sockets_per_user=2)) as url:
        first, second = Client(), Client()
        await first.connect(url, auth={"token": legacy_token(5)})
        await second.connect(url, auth={"token": legacy_token(5)})
        try:
            refusal = await Client().refused_with(url, auth={"token": legacy_token(5)})
            assert refusal == {"message": "too many connections", "data": {"code": "too_many_connections"}}
            other = Client()
            await other.connect(url, auth={"token": legacy_token(6)})  # another user is not capped
            await other.sio.disconnect()
        finally:
            await first.sio.disconnect()
            await second.sio.disconnect()


async def test_limits_throttle_an_address_that_keeps_failing(strapi: respx.MockRouter) -> None:  # noqa: F811
    async with serve(_app(strapi, handshake_failures_per_minute=3)) as url:
        for _ in range(3):
            assert (await Client().refused_with(url, auth={"token": "junk"}))["data"][
                "code"
            ] == "invalid_token"
        refusal = await Client().refused_with(url, auth={"token": legacy_token(5)})
        assert refusal["data"] == {"code": "rate_limited"}


async def test_token_expiry_tells_the_socket_and_closes_it(strapi: respx.MockRouter) -> None:  # noqa: F811
    async with serve(_app(strapi)) as url:
        client = Client()
        expired: list[Any] = []
        client.sio.on("auth:expired", expired.append)
        await client.connect(url, auth={"token": legacy_token(5, ttl=2)})
        await eventually(lambda: not client.sio.connected, within=6)
        assert expired == [
            {"code": "expired_token", "message": "token expired: reconnect with a fresh token"}
        ]


async def test_token_refresh_keeps_the_socket_open(strapi: respx.MockRouter) -> None:  # noqa: F811
    async with serve(_app(strapi)) as url:
        client = Client()
        await client.connect(url, auth={"token": legacy_token(5, ttl=2)})
        try:
            ack = await client.sio.call("auth:refresh", {"token": legacy_token(5, ttl=600)}, timeout=5)
            assert ack["ok"] is True
            assert ack["expiresAt"] > 0
            refused = await client.sio.call("auth:refresh", {"token": legacy_token(6)}, timeout=5)
            assert refused == {"ok": False, "error": {"code": "user_mismatch", "message": "user mismatch"}}
            await asyncio.sleep(3)
            assert client.sio.connected
        finally:
            await client.sio.disconnect()


async def test_oversized_messages_close_the_connection(strapi: respx.MockRouter) -> None:  # noqa: F811
    async with serve(_app(strapi, max_payload_bytes=2048)) as url:
        client = Client()
        await client.connect(url, auth={"token": legacy_token(5)})
        await client.sio.emit("notification:read", {"notificationId": "x" * 10_000})
        await eventually(lambda: not client.sio.connected, within=5)
