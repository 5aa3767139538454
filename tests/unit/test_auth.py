"""adapter/auth.py: Strapi JWTs in both modes, the cached user check, and the handshake."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
import respx

from adapter.auth import Authenticator, Identity, UserDirectory, verify_token
from adapter.errors import (
    AuthUnavailable,
    BlockedUser,
    ExpiredToken,
    InvalidToken,
    MissingToken,
    UnknownUser,
    UserMismatch,
)
from adapter.strapi import StrapiClient, build_http_client
from tests.conftest import JWT_SECRET, access_token, legacy_token

BASE = "http://strapi.test"
USER_5 = f"{BASE}/api/users/5"
OTHER_SECRET = "another-jwt-secret-that-is-also-long-enough"
TTL = 30.0


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _signed(claims: dict[str, Any], secret: str = JWT_SECRET) -> str:
    """An HS256 token with `claims` and a valid `exp` unless `claims` sets its own."""
    return jwt.encode({"exp": int(time.time()) + 600, **claims}, secret, algorithm="HS256")


def _user(user_id: int = 5, *, blocked: bool = False) -> dict[str, Any]:
    return {"id": user_id, "documentId": f"u{user_id}", "username": "ana", "blocked": blocked}


@pytest.fixture
async def strapi() -> AsyncIterator[StrapiClient]:
    async with build_http_client(BASE, "tok", 5.0) as http:
        yield StrapiClient(http)


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def users(strapi: StrapiClient, clock: _Clock) -> UserDirectory:
    return UserDirectory(strapi, ttl=TTL, clock=clock)


@pytest.fixture
def authenticator(users: UserDirectory) -> Authenticator:
    return Authenticator(JWT_SECRET, users)


# -- verify_token ------------------------------------------------------------------------------


def test_verify_token_accepts_a_legacy_token() -> None:
    token = legacy_token(5)

    identity = verify_token(token, JWT_SECRET)

    exp = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])["exp"]
    assert identity == Identity(user_id=5, expires_at=float(exp))


def test_verify_token_accepts_a_refresh_mode_access_token() -> None:
    assert verify_token(access_token(5), JWT_SECRET).user_id == 5


def test_verify_token_refuses_a_refresh_token() -> None:
    with pytest.raises(InvalidToken):
        verify_token(access_token(5, kind="refresh"), JWT_SECRET)


@pytest.mark.parametrize(
    "claims",
    [
        {"userId": "5", "type": "id"},
        {"userId": "5", "type": "ACCESS"},
        {"userId": "5", "type": ""},
        {"userId": "5", "type": None},
        {"userId": "5"},
        {"id": 5, "type": "refresh"},
        {"id": 5, "type": "access"},
    ],
)
def test_verify_token_refuses_other_token_types(claims: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        verify_token(_signed(claims), JWT_SECRET)


@pytest.mark.parametrize(
    "token", [legacy_token(5, secret=OTHER_SECRET), access_token(5, secret=OTHER_SECRET)]
)
def test_verify_token_refuses_a_wrong_secret(token: str) -> None:
    with pytest.raises(InvalidToken):
        verify_token(token, JWT_SECRET)


def test_verify_token_refuses_alg_none() -> None:
    token = jwt.encode({"id": 5, "exp": int(time.time()) + 600}, None, algorithm="none")

    with pytest.raises(InvalidToken):
        verify_token(token, JWT_SECRET)


def test_verify_token_refuses_an_rs256_token() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"id": 5, "exp": int(time.time()) + 600}, key, algorithm="RS256")

    with pytest.raises(InvalidToken):
        verify_token(token, JWT_SECRET)


@pytest.mark.parametrize("claims", [{"id": 5}, {"userId": "5", "sessionId": "s-1", "type": "access"}])
def test_verify_token_refuses_a_token_without_exp(claims: dict[str, Any]) -> None:
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")

    with pytest.raises(InvalidToken):
        verify_token(token, JWT_SECRET)


@pytest.mark.parametrize("token", [legacy_token(5, ttl=-5), access_token(5, ttl=-5)])
def test_verify_token_expired_is_expired_token(token: str) -> None:
    with pytest.raises(ExpiredToken) as caught:
        verify_token(token, JWT_SECRET)

    assert caught.value.code == "expired_token"


def test_verify_token_leeway_accepts_a_just_expired_token() -> None:
    assert verify_token(legacy_token(5, ttl=-5), JWT_SECRET, leeway=60).user_id == 5


@pytest.mark.parametrize("user_id", [0, -1, "abc", True, False, None, 5.0, "", [5]])
def test_verify_token_refuses_a_legacy_id_that_is_not_a_positive_int(user_id: object) -> None:
    with pytest.raises(InvalidToken):
        verify_token(_signed({"id": user_id}), JWT_SECRET)


@pytest.mark.parametrize("user_id", ["0", "-1", "abc", "", "5.0", " 5", None, True])
def test_verify_token_refuses_an_access_user_id_that_is_not_a_positive_int(user_id: object) -> None:
    with pytest.raises(InvalidToken):
        verify_token(_signed({"userId": user_id, "type": "access"}), JWT_SECRET)


def test_verify_token_refuses_a_token_naming_no_user() -> None:
    with pytest.raises(InvalidToken):
        verify_token(_signed({"sub": "5"}), JWT_SECRET)


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", f"Bearer {legacy_token(5)}", legacy_token(5)[:-4]],
)
def test_verify_token_refuses_garbage(token: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        verify_token(token, JWT_SECRET)

    assert caught.value.code == "invalid_token"


# -- UserDirectory -----------------------------------------------------------------------------


async def test_user_directory_lets_an_existing_user_in(
    respx_mock: respx.MockRouter, users: UserDirectory
) -> None:
    route = respx_mock.get(USER_5).respond(json=_user(5))

    await users.check(5)

    assert route.call_count == 1


async def test_user_directory_refuses_a_blocked_user(
    respx_mock: respx.MockRouter, users: UserDirectory
) -> None:
    respx_mock.get(USER_5).respond(json=_user(5, blocked=True))

    with pytest.raises(BlockedUser):
        await users.check(5)


async def test_user_directory_refuses_an_unknown_user(
    respx_mock: respx.MockRouter, users: UserDirectory
) -> None:
    respx_mock.get(USER_5).respond(404, json={"data": None, "error": {"status": 404, "message": "Not Found"}})

    with pytest.raises(UnknownUser):
        await users.check(5)


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503, text="Service Unavailable"),
        httpx.ConnectError("connection refused"),
        httpx.Response(200, html="<!doctype html><title>not Strapi</title>"),
    ],
    ids=["503", "connect-error", "not-json"],
)
async def test_user_directory_strapi_failure_is_auth_unavailable(
    respx_mock: respx.MockRouter, users: UserDirectory, failure: httpx.Response | Exception
) -> None:
    if isinstance(failure, httpx.Response):
        respx_mock.get(USER_5).mock(return_value=failure)
    else:
        respx_mock.get(USER_5).mock(side_effect=failure)

    with pytest.raises(AuthUnavailable):
        await users.check(5)


async def test_user_directory_does_not_cache_a_failure(
    respx_mock: respx.MockRouter, users: UserDirectory
) -> None:
    route = respx_mock.get(USER_5).mock(side_effect=[httpx.Response(503), httpx.Response(200, json=_user(5))])

    with pytest.raises(AuthUnavailable):
        await users.check(5)
    await users.check(5)

    assert route.call_count == 2


async def test_user_directory_caches_answers_within_ttl(
    respx_mock: respx.MockRouter, users: UserDirectory, clock: _Clock
) -> None:
    route = respx_mock.get(USER_5).respond(json=_user(5))

    await users.check(5)
    clock.now += TTL - 1
    await users.check(5)

    assert route.call_count == 1


async def test_user_directory_caches_refusals_within_ttl(
    respx_mock: respx.MockRouter, users: UserDirectory, clock: _Clock
) -> None:
    route = respx_mock.get(USER_5).respond(json=_user(5, blocked=True))

    for _ in range(3):
        with pytest.raises(BlockedUser):
            await users.check(5)
        clock.now += 1

    assert route.call_count == 1


async def test_user_directory_asks_again_after_ttl(
    respx_mock: respx.MockRouter, users: UserDirectory, clock: _Clock
) -> None:
    route = respx_mock.get(USER_5).mock(
        side_effect=[httpx.Response(200, json=_user(5)), httpx.Response(200, json=_user(5, blocked=True))]
    )

    await users.check(5)
    clock.now += TTL + 1
    with pytest.raises(BlockedUser):
        await users.check(5)

    assert route.call_count == 2


async def test_user_directory_forget_drops_the_cached_answer(
    respx_mock: respx.MockRouter, users: UserDirectory
) -> None:
    route = respx_mock.get(USER_5).mock(
        side_effect=[httpx.Response(200, json=_user(5)), httpx.Response(200, json=_user(5, blocked=True))]
    )

    await users.check(5)
    users.forget(5)
    with pytest.raises(BlockedUser):
        await users.check(5)

    assert route.call_count == 2


async def test_user_directory_caches_each_user_separately(
    respx_mock: respx.MockRouter, users: UserDirectory
) -> None:
    respx_mock.get(USER_5).respond(json=_user(5))
    respx_mock.get(f"{BASE}/api/users/6").respond(json=_user(6, blocked=True))

    await users.check(5)
    with pytest.raises(BlockedUser):
        await users.check(6)
    await users.check(5)


async def _slow(response: httpx.Response) -> httpx.Response:
    await asyncio.sleep(0.05)
    return response


async def test_user_directory_concurrent_checks_share_one_request(
    respx_mock: respx.MockRouter, strapi: StrapiClient, clock: _Clock
) -> None:
    # ttl=0: nothing is cached, so only sharing the request in flight can save calls.
    users = UserDirectory(strapi, ttl=0, clock=clock)
    route = respx_mock.get(USER_5).mock(side_effect=lambda request: _slow(httpx.Response(200, json=_user(5))))

    results = await asyncio.gather(*(users.check(5) for _ in range(20)))

    assert results == [None] * 20
    assert route.call_count == 1


async def test_user_directory_concurrent_checks_share_one_failure(
    respx_mock: respx.MockRouter, users: UserDirectory
) -> None:
    route = respx_mock.get(USER_5).mock(side_effect=lambda request: _slow(httpx.Response(503)))

    results = await asyncio.gather(*(users.check(5) for _ in range(20)), return_exceptions=True)

    assert all(isinstance(result, AuthUnavailable) for result in results)
    assert route.call_count == 1


# -- Authenticator -----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, ""])
async def test_authenticator_missing_token_is_refused(
    authenticator: Authenticator, token: str | None
) -> None:
    with pytest.raises(MissingToken) as caught:
        await authenticator.authenticate(token, "5")

    assert caught.value.code == "missing_token"


async def test_authenticator_claimed_user_that_differs_is_refused_without_asking_strapi(
    respx_mock: respx.MockRouter, authenticator: Authenticator
) -> None:
    # No route: asking Strapi would fail the test (assert_all_mocked).
    with pytest.raises(UserMismatch):
        await authenticator.authenticate(legacy_token(5), "6")


@pytest.mark.parametrize("claimed", ["5", None, ""])
async def test_authenticator_matching_or_absent_claim_passes(
    respx_mock: respx.MockRouter, authenticator: Authenticator, claimed: str | None
) -> None:
    respx_mock.get(USER_5).respond(json=_user(5))

    identity = await authenticator.authenticate(access_token(5), claimed)

    assert identity.user_id == 5


async def test_authenticator_invalid_token_is_refused_without_asking_strapi(
    respx_mock: respx.MockRouter, authenticator: Authenticator
) -> None:
    with pytest.raises(InvalidToken):
        await authenticator.authenticate(access_token(5, kind="refresh"), "5")


async def test_authenticator_refuses_a_valid_token_of_a_blocked_user(
    respx_mock: respx.MockRouter, authenticator: Authenticator
) -> None:
    respx_mock.get(USER_5).respond(json=_user(5, blocked=True))

    with pytest.raises(BlockedUser):
        await authenticator.authenticate(legacy_token(5), "5")


# -- UserDirectory: batches --------------------------------------------------------------------

USERS = f"{BASE}/api/users"


def _ids_asked(request: httpx.Request) -> list[int]:
    """The ids of a batched lookup, in the order sent (`filters[id][$in][<n>]=<id>`)."""
    pairs = [(key, value) for key, value in request.url.params.multi_items() if key.startswith("filters[")]
    assert [key for key, _ in pairs] == [f"filters[id][$in][{n}]" for n in range(len(pairs))]
    return [int(value) for _, value in pairs]


class _Users:
    """`GET /api/users?filters[id][$in]...` over a set of users, after `delay` s."""

    def __init__(self, existing: dict[int, bool], delay: float = 0.02, failing: int | None = None):
        self.existing = existing  # id -> blocked
        self.delay = delay
        self.failing = failing  # a batch holding this id gets a 503
        self.batches: list[list[int]] = []

    async def answer(self, request: httpx.Request) -> httpx.Response:
        ids = _ids_asked(request)
        self.batches.append(ids)
        assert request.url.params["fields[0]"] == "id"
        assert request.url.params["fields[1]"] == "blocked"
        assert request.url.params["start"] == "0"
        assert int(request.url.params["limit"]) >= len(ids)
        await asyncio.sleep(self.delay)
        if self.failing in ids:
            return httpx.Response(503, json={"error": {"message": "busy"}})
        found = [{"id": n, "blocked": self.existing[n]} for n in sorted(ids) if n in self.existing]
        return httpx.Response(200, json=found)


async def _outcomes(users: UserDirectory, ids: list[int]) -> list[str]:
    results = await asyncio.gather(*(users.check(n) for n in ids), return_exceptions=True)
    return ["ok" if result is None else type(result).__name__ for result in results]


async def test_user_directory_checks_asked_together_are_one_request(
    respx_mock: respx.MockRouter, users: UserDirectory
) -> None:
    fake = _Users({1: False, 2: True, 4: False})
    respx_mock.get(USERS).mock(side_effect=fake.answer)
    by_id = respx_mock.get(url__regex=rf"{USERS}/\d+$")

    outcomes = await _outcomes(users, [1, 2, 3, 4])

    assert outcomes == ["ok", "BlockedUser", "UnknownUser", "ok"]
    assert fake.batches == [[1, 2, 3, 4]]
    assert by_id.call_count == 0


async def test_user_directory_batches_hold_at_most_batch_size_users(
    respx_mock: respx.MockRouter, strapi: StrapiClient, clock: _Clock
) -> None:
    fake = _Users({n: False for n in range(1, 251)})
    respx_mock.get(USERS).mock(side_effect=fake.answer)
    users = UserDirectory(strapi, ttl=TTL, clock=clock, batch_size=100)

    outcomes = await _outcomes(users, list(range(1, 251)))

    assert outcomes == ["ok"] * 250
    assert [len(batch) for batch in fake.batches] == [100, 100, 50]
    assert sorted(n for batch in fake.batches for n in batch) == list(range(1, 251))


async def test_user_directory_users_asked_during_a_lookup_go_together_in_the_next(
    respx_mock: respx.MockRouter, strapi: StrapiClient, clock: _Clock
) -> None:
    fake = _Users({n: False for n in range(1, 12)})
    respx_mock.get(USERS).mock(side_effect=fake.answer)
    lone = respx_mock.get(f"{USERS}/1").mock(
        side_effect=lambda request: _slow(httpx.Response(200, json=_user(1)))
    )
    users = UserDirectory(strapi, ttl=TTL, clock=clock, batches_in_flight=1)

    first = asyncio.create_task(users.check(1))
    await asyncio.sleep(0.01)  # user 1's lookup (alone: by id) is under way
    outcomes = await _outcomes(users, list(range(2, 12)))
    await first

    assert outcomes == ["ok"] * 10
    assert lone.call_count == 1
    assert fake.batches == [list(range(2, 12))]


async def test_user_directory_answers_of_a_batch_are_cached(
    respx_mock: respx.MockRouter, users: UserDirectory, clock: _Clock
) -> None:
    fake = _Users({1: False, 2: True})
    respx_mock.get(USERS).mock(side_effect=fake.answer)

    first = await _outcomes(users, [1, 2, 3])
    clock.now += TTL - 1
    again = await _outcomes(users, [1, 2, 3])

    assert first == again == ["ok", "BlockedUser", "UnknownUser"]
    assert len(fake.batches) == 1


async def test_user_directory_a_user_asked_again_while_batched_shares_that_lookup(
    respx_mock: respx.MockRouter, strapi: StrapiClient, clock: _Clock
) -> None:
    fake = _Users({1: False, 2: False, 3: False})
    respx_mock.get(USERS).mock(side_effect=fake.answer)
    users = UserDirectory(strapi, ttl=0, clock=clock)  # nothing cached: only sharing saves requests

    outcomes = await _outcomes(users, [1, 2, 3, 1, 2, 3, 1])

    assert outcomes == ["ok"] * 7
    assert fake.batches == [[1, 2, 3]]


async def test_user_directory_a_failed_batch_fails_only_its_own_users(
    respx_mock: respx.MockRouter, strapi: StrapiClient, clock: _Clock
) -> None:
    fake = _Users({n: False for n in range(1, 5)}, failing=1)
    respx_mock.get(USERS).mock(side_effect=fake.answer)
    users = UserDirectory(strapi, ttl=TTL, clock=clock, batch_size=2)

    outcomes = await _outcomes(users, [1, 2, 3, 4])

    assert outcomes == ["AuthUnavailable", "AuthUnavailable", "ok", "ok"]
    fake.failing = None
    assert await _outcomes(users, [1, 2]) == ["ok", "ok"]  # a failure is not cached
    assert fake.batches == [[1, 2], [3, 4], [1, 2]]


async def test_user_directory_a_batch_that_is_not_a_list_is_auth_unavailable(
    respx_mock: respx.MockRouter, users: UserDirectory
) -> None:
    respx_mock.get(USERS).respond(json={"data": []})

    assert await _outcomes(users, [1, 2]) == ["AuthUnavailable", "AuthUnavailable"]


async def test_user_directory_forget_during_a_batch_keeps_its_answer_out_of_the_cache(
    respx_mock: respx.MockRouter, users: UserDirectory
) -> None:
    fake = _Users({1: False, 2: False})
    respx_mock.get(USERS).mock(side_effect=fake.answer)
    alone = respx_mock.get(f"{USERS}/1").respond(json=_user(1, blocked=True))

    checks = asyncio.gather(users.check(1), users.check(2))
    await asyncio.sleep(0.005)  # the batch is under way
    users.forget(1)  # a webhook says user 1 changed (blocked meanwhile)
    await checks
    outcomes = await _outcomes(users, [1, 2])

    assert outcomes == ["BlockedUser", "ok"]
    assert fake.batches == [[1, 2]]
    assert alone.call_count == 1  # user 1 asked again (alone, so by id); user 2 from the cache


async def test_user_directory_a_handshake_that_gives_up_does_not_cancel_the_batch(
    respx_mock: respx.MockRouter, users: UserDirectory
) -> None:
    fake = _Users({1: False, 2: False}, delay=0.3)
    respx_mock.get(USERS).mock(side_effect=fake.answer)

    dropped = asyncio.create_task(users.check(1))
    kept = asyncio.create_task(users.check(2))
    await asyncio.sleep(0.005)
    dropped.cancel()
    await kept

    assert dropped.cancelled()
    assert fake.batches == [[1, 2]]
    await users.check(1)  # its answer came anyway and is cached
    assert len(fake.batches) == 1


async def test_user_directory_a_user_forgotten_and_asked_again_before_the_batch_went_gets_answers(
    respx_mock: respx.MockRouter, strapi: StrapiClient, clock: _Clock
) -> None:
    fake = _Users({1: False, 2: False, 3: False})
    respx_mock.get(USERS).mock(side_effect=fake.answer)
    respx_mock.get(url__regex=rf"{USERS}/\d+$").mock(
        side_effect=lambda request: _slow(httpx.Response(200, json=_user(9)))
    )
    users = UserDirectory(strapi, ttl=TTL, clock=clock, batches_in_flight=1)
    busy = asyncio.create_task(users.check(9))  # the one lookup allowed is under way
    await asyncio.sleep(0.01)

    first = asyncio.create_task(users.check(1))
    await asyncio.sleep(0)
    users.forget(1)  # still queued
    outcomes = await asyncio.wait_for(_outcomes(users, [1, 2, 3]), 2)

    assert outcomes == ["ok", "ok", "ok"]
    await asyncio.wait_for(first, 2)  # the first ask is answered too
    await busy
    assert fake.batches == [[1, 2, 3]]
