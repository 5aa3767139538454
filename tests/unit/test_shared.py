"""adapter/shared.py: ledgers and locks shared between processes, against a real redis-server.

Two Redis clients stand for two sidecar processes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from adapter.errors import SharedStateUnavailable
from adapter.shared import SHARED_TTL_SECONDS, MemoryLedger, RedisLedger, RedisLocks
from tests.redis_server import RedisServer

DOC = "adjutl3unow7mrzedbqgrovl"


@pytest.fixture
async def clients(redis_server: RedisServer) -> AsyncIterator[tuple[Redis, Redis]]:
    first, second = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


# -- ledgers ---------------------------------------------------------------------------------


async def test_memory_ledger_claim_returns_only_users_not_there_before() -> None:
    held_back: list[int] = []
    ledger = MemoryLedger(10, on_claim=held_back.append)

    assert await ledger.claim(DOC, {5, 6}) == {5, 6}
    assert await ledger.claim(DOC, {5, 6, 7}) == {7}
    assert await ledger.claim(DOC, {5}) == set()
    assert await ledger.get(DOC) == {5, 6, 7}
    assert held_back == [0, 2, 1]


async def test_memory_ledger_pop_and_forget() -> None:
    ledger = MemoryLedger(10)
    await ledger.put(DOC, {5})

    assert await ledger.pop(DOC) == {5}
    assert await ledger.pop(DOC) is None
    await ledger.put(DOC, set())
    ledger.forget(DOC)
    assert await ledger.get(DOC) is None


async def test_redis_ledger_claim_is_shared_between_processes(clients: tuple[Redis, Redis]) -> None:
    held_back: list[int] = []
    a = RedisLedger(clients[0], "t:told", on_claim=held_back.append)
    b = RedisLedger(clients[1], "t:told", on_claim=held_back.append)

    assert await a.claim(DOC, {5, 6}) == {5, 6}
    assert await b.claim(DOC, {5, 6, 7}) == {7}
    assert await a.claim(DOC, {6}) == set()
    assert await b.get(DOC) == {5, 6, 7}
    assert held_back == [0, 2, 1]


async def test_redis_ledger_concurrent_claims_tell_each_user_once(clients: tuple[Redis, Redis]) -> None:
    ledgers = [RedisLedger(client, "t:told") for client in clients]
    audience = set(range(1, 201))
    claims = [ledgers[n % 2].claim(DOC, audience) for n in range(10)]

    results = await asyncio.gather(*claims)

    assert sorted(user for result in results for user in result) == sorted(audience)


async def test_redis_ledger_keeps_an_empty_selection_apart_from_none(clients: tuple[Redis, Redis]) -> None:
    ledger = RedisLedger(clients[0], "t:seen")

    assert await ledger.get(DOC) is None
    await ledger.put(DOC, set())
    assert await ledger.get(DOC) == set()
    await ledger.put(DOC, {3, 4})
    assert await ledger.get(DOC) == {3, 4}


async def test_redis_ledger_pop_removes_what_it_returns(clients: tuple[Redis, Redis]) -> None:
    a, b = (RedisLedger(client, "t:told") for client in clients)
    await a.claim(DOC, {5, 6})

    assert await b.pop(DOC) == {5, 6}
    assert await a.pop(DOC) is None


async def test_redis_ledger_keys_expire(clients: tuple[Redis, Redis]) -> None:
    ledger = RedisLedger(clients[0], "t:told")
    await ledger.claim(DOC, {5})

    ttl = await clients[0].ttl(ledger.key(DOC))

    assert 0 < ttl <= SHARED_TTL_SECONDS
    assert ledger.key(DOC) == f"t:told:{DOC}"


async def test_redis_ledger_says_when_redis_is_unreachable(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    failed: list[str] = []
    async with Redis.from_url(redis_server.url, socket_connect_timeout=1) as client:
        ledger = RedisLedger(client, "t:told", on_error=failed.append)
        redis_server.kill()

        with pytest.raises(SharedStateUnavailable):
            await ledger.claim(DOC, {5})
        with pytest.raises(SharedStateUnavailable):
            await ledger.get(DOC)
        assert await ledger.pop(DOC) is None  # unknown: the caller tells everyone instead

    assert failed == ["claim", "get", "pop"]
    assert "treating it as unknown" in caplog.text


# -- locks -----------------------------------------------------------------------------------


async def test_redis_locks_allow_one_holder_across_processes(clients: tuple[Redis, Redis]) -> None:
    a, b = RedisLocks(clients[0], "t:lock"), RedisLocks(clients[1], "t:lock")
    events: list[str] = []
    a_holds = asyncio.Event()

    async def first() -> None:
        async with a(DOC):
            a_holds.set()
            events.append("a in")
            await asyncio.sleep(0.3)
            events.append("a out")

    async def second() -> None:
        await a_holds.wait()
        async with b(DOC):
            events.append("b in")

    await asyncio.gather(first(), second())

    assert events == ["a in", "a out", "b in"]


async def test_redis_locks_of_other_keys_do_not_wait(clients: tuple[Redis, Redis]) -> None:
    a, b = RedisLocks(clients[0], "t:lock"), RedisLocks(clients[1], "t:lock")

    async with a(DOC), asyncio.timeout(1), b("another"):
        pass


async def test_redis_locks_renew_their_lease_while_held(clients: tuple[Redis, Redis]) -> None:
    locks = RedisLocks(clients[0], "t:lock", lease=0.3)

    async with locks(DOC):
        await asyncio.sleep(1.0)  # three leases
        assert await clients[1].exists(f"t:lock:{DOC}") == 1
    assert await clients[1].exists(f"t:lock:{DOC}") == 0


async def test_redis_locks_free_a_crashed_holders_lock_after_its_lease(clients: tuple[Redis, Redis]) -> None:
    crashed = clients[0].lock(f"t:lock:{DOC}", timeout=0.4)
    assert await crashed.acquire()  # and never released: its process died
    locks = RedisLocks(clients[1], "t:lock")
    loop = asyncio.get_running_loop()
    started = loop.time()

    async with locks(DOC):
        waited = loop.time() - started

    assert 0.2 < waited < 2


async def test_redis_locks_go_on_after_waiting_too_long(
    clients: tuple[Redis, Redis], caplog: pytest.LogCaptureFixture
) -> None:
    holder = clients[0].lock(f"t:lock:{DOC}", timeout=10)
    assert await holder.acquire()
    locks = RedisLocks(clients[1], "t:lock", wait=0.2)

    async with asyncio.timeout(2), locks(DOC):
        pass

    assert "going on without it" in caplog.text
    await holder.release()


async def test_redis_locks_go_on_in_this_process_when_redis_is_down(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    failed: list[str] = []
    async with Redis.from_url(redis_server.url, socket_connect_timeout=1) as client:
        locks = RedisLocks(client, "t:lock", on_error=failed.append)
        redis_server.kill()
        ran = False

        with caplog.at_level(logging.WARNING):
            async with asyncio.timeout(5), locks(DOC):
                ran = True

    assert ran
    assert failed == ["lock"]
    assert "going on in this process only" in caplog.text
