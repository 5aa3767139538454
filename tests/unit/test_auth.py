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
