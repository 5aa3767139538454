"""adapter/strapi.py's request gate: a bounded number of requests in flight, urgent ones first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from adapter.errors import StrapiUnavailable
from adapter.strapi import MAX_IN_FLIGHT, RequestGate, StrapiClient, build_http_client
from tests.serving import eventually

BASE = "http://strapi.test"


class _Strapi:
    """Answers `/api/users/:id` after `delay` s, counting what is in flight and the order of arrival."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.held = asyncio.Event()  # user 1 is answered once this is set
        self.held.set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.arrived: list[str] = []

    async def answer(self, request: httpx.Request) -> httpx.Response:
        self.arrived.append(request.url.path)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if request.url.path == "/api/users/1":
                await self.held.wait()
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        user_id = int(request.url.path.rsplit("/", 1)[1])
        return httpx.Response(200, json={"id": user_id, "blocked": False})


@pytest.fixture
def fake(respx_mock: respx.MockRouter) -> _Strapi:
    fake = _Strapi()
    respx_mock.get(url__regex=rf"{BASE}/api/users/\d+$").mock(side_effect=fake.answer)
    return fake


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with build_http_client(BASE, "tok", 5.0) as client:
        yield client


async def test_the_default_gate_is_no_wider_than_the_connections_kept_alive(
    fake: _Strapi, http: httpx.AsyncClient
) -> None:
    strapi = StrapiClient(http)

    users = await asyncio.gather(*(strapi.get_user(n) for n in range(1, 101)))

    assert [user["id"] for user in users if user] == list(range(1, 101))
    assert fake.most_in_flight == MAX_IN_FLIGHT
    assert http._transport._pool._max_keepalive_connections >= MAX_IN_FLIGHT  # type: ignore[attr-defined]


async def test_requests_beyond_the_gate_wait_their_turn_in_order(
    fake: _Strapi, http: httpx.AsyncClient
) -> None:
    strapi = StrapiClient(http, max_in_flight=3)

    await asyncio.gather(*(strapi.get_user(n) for n in range(1, 31)))

    assert fake.most_in_flight == 3
    assert fake.arrived == [f"/api/users/{n}" for n in range(1, 31)]


async def test_urgent_requests_go_before_the_others_waiting(fake: _Strapi, http: httpx.AsyncClient) -> None:
    strapi = StrapiClient(http, max_in_flight=1)
    fake.held.clear()
    first = asyncio.create_task(strapi.get_user(1))
    await eventually(lambda: fake.arrived)  # user 1 in flight, held: the rest wait
    normal = [asyncio.create_task(strapi.get_user(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    urgent = asyncio.create_task(strapi.get_user(99, urgent=True))
    await asyncio.sleep(0)
    fake.held.set()

    await asyncio.gather(first, *normal, urgent)

    assert fake.arrived == ["/api/users/1", "/api/users/99", "/api/users/2", "/api/users/3", "/api/users/4"]


async def test_a_request_waiting_longer_than_the_timeout_is_strapi_unavailable(
    respx_mock: respx.MockRouter,
) -> None:
    fake = _Strapi(delay=0.3)
    respx_mock.get(url__regex=rf"{BASE}/api/users/\d+$").mock(side_effect=fake.answer)
    async with build_http_client(BASE, "tok", 0.05) as http:
        strapi = StrapiClient(http, max_in_flight=1)

        first, second = await asyncio.gather(strapi.get_user(1), strapi.get_user(2), return_exceptions=True)

    assert first == {"id": 1, "blocked": False}
    assert isinstance(second, StrapiUnavailable)
    assert "waiting" in second.message
    assert fake.arrived == ["/api/users/1"]


async def test_a_waiter_given_up_on_leaves_its_place_to_the_next(
    fake: _Strapi, http: httpx.AsyncClient
) -> None:
    strapi = StrapiClient(http, max_in_flight=1)
    fake.held.clear()
    first = asyncio.create_task(strapi.get_user(1))
    await eventually(lambda: fake.arrived)  # user 1 in flight, held: the rest wait
    dropped = asyncio.create_task(strapi.get_user(2))
    kept = asyncio.create_task(strapi.get_user(3))
    await asyncio.sleep(0)
    dropped.cancel()
    fake.held.set()

    await asyncio.gather(first, kept)

    assert dropped.cancelled()
    assert fake.arrived == ["/api/users/1", "/api/users/3"]
    # and the place is free again: two more go through one after the other
    await asyncio.gather(strapi.get_user(4), strapi.get_user(5))
    assert fake.most_in_flight == 1


async def test_gate_cancelled_right_after_its_turn_came_passes_the_place_on() -> None:
    gate = RequestGate(1)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    follower = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # the waiter's turn, but it is cancelled before it runs
    waiter.cancel()
    await asyncio.wait_for(follower, 1)

    assert gate.waiting == 0
    gate.release()
    await asyncio.wait_for(gate.acquire(), 1)  # exactly one place, free again


def test_a_gate_without_room_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        RequestGate(0)
