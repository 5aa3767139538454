"""Socket handshake authentication with the JWTs Strapi's users-permissions plugin issues.

Two token styles exist in Strapi 5 and both are accepted:
- legacy (`jwtManagement` unset): HS256 `{id: <int>, iat, exp}`;
- refresh mode: HS256 access tokens `{userId: "<str>", sessionId, type: "access", iat, exp}`.
Refresh tokens are signed with the same secret, so anything whose `type` is not `access` is refused.
The user must also still exist and not be blocked: Strapi is asked, and the answer cached briefly.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import jwt

from adapter.errors import (
    AuthUnavailable,
    BlockedUser,
    ExpiredToken,
    InvalidToken,
    MissingToken,
    StrapiError,
    UnknownUser,
    UserMismatch,
)
from adapter.strapi import StrapiClient

__all__ = ["Authenticator", "Identity", "UserDirectory", "short_secret_warning", "verify_token"]

logger = logging.getLogger(__name__)

ALGORITHMS = ["HS256"]
MAX_ID_DIGITS = 18
MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a socket is, taken from a verified token only."""

    user_id: int
    expires_at: float


def verify_token(token: str, secret: str, *, leeway: float = 0) -> Identity:
    """Check the signature, `exp` and the token type; return the user it names."""
    try:
        with warnings.catch_warnings():
            # Strapi's generated JWT_SECRET is 24 characters: PyJWT would warn on every decode.
            # The app logs that once at start-up instead (see `short_secret_warning`).
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            claims: dict[str, Any] = jwt.decode(
                token, secret, algorithms=ALGORITHMS, options={"require": ["exp"]}, leeway=leeway
            )
    except jwt.ExpiredSignatureError as exc:
        raise ExpiredToken() from exc
    except (jwt.InvalidTokenError, UnicodeError) as exc:  # UnicodeError: a lone surrogate in it
        raise InvalidToken() from exc
    user_id = _user_id_from(claims)
    try:
        expires_at = float(claims["exp"])  # PyJWT takes any `exp` int() takes: 10**400, "9" * 400
    except OverflowError as exc:
        raise InvalidToken() from exc
    if not math.isfinite(expires_at):
        raise InvalidToken()
    return Identity(user_id=user_id, expires_at=expires_at)


def _user_id_from(claims: dict[str, Any]) -> int:
    if "type" in claims or "userId" in claims:
        if claims.get("type") != "access":
            raise InvalidToken("only access tokens can open a socket")
        return _positive_int(claims.get("userId"))
    return _positive_int(claims.get("id"))


def _positive_int(value: object) -> int:
    if isinstance(value, bool):
        raise InvalidToken("token names no user")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isdecimal() and len(value) <= MAX_ID_DIGITS:
        number = int(value)
    else:
        raise InvalidToken("token names no user")
    if number <= 0:
        raise InvalidToken("token names no user")
    return number


def short_secret_warning(secret: str) -> str | None:
    """A warning worth logging once when the HS256 secret is shorter than its 32-byte hash."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return (
            f"STRAPI_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes; HS256 wants at least that. "
            "Strapi generates 24-character secrets: consider a longer JWT_SECRET in Strapi."
        )
    return None


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a lookup's failure as seen, so nobody waiting is not an 'unretrieved' error."""
    if not task.cancelled():
        task.exception()


class UserDirectory:
    """Whether a user may connect (exists, not blocked), asked of Strapi and cached for `ttl` s.

    Concurrent checks of one user share one request, so a reconnect storm costs one request per
    user at most.
    """

    def __init__(self, strapi: StrapiClient, ttl: float, clock: Any = time.monotonic):
        self._strapi = strapi
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[int, tuple[float, bool | None]] = {}
        self._pending: dict[int, asyncio.Task[bool | None]] = {}

    async def check(self, user_id: int) -> None:
        """Raise `UnknownUser`, `BlockedUser` or `AuthUnavailable`; return if the user may connect."""
        blocked = await self._blocked(user_id)
        if blocked is None:
            raise UnknownUser()
        if blocked:
            raise BlockedUser()

    def forget(self, user_id: int) -> None:
        """Drop a cached answer (a webhook says the user changed); a lookup under way is not cached."""
        self._cache.pop(user_id, None)
        self._pending.pop(user_id, None)

    async def _blocked(self, user_id: int) -> bool | None:
        cached = self._cache.get(user_id)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        lookup = self._pending.get(user_id)
        if lookup is None:
            # Its own task: a caller that gives up (a dropped handshake) cancels only its wait.
            lookup = asyncio.create_task(self._lookup(user_id))
            lookup.add_done_callback(_retrieve)
            self._pending[user_id] = lookup
        return await asyncio.shield(lookup)

    async def _lookup(self, user_id: int) -> bool | None:
        try:
            answer = await self._ask(user_id)
            if self._pending.get(user_id) is asyncio.current_task():  # not forgotten meanwhile
                self._cache[user_id] = (self._clock() + self._ttl, answer)
            return answer
        finally:
            if self._pending.get(user_id) is asyncio.current_task():
                del self._pending[user_id]

    async def _ask(self, user_id: int) -> bool | None:
        try:
            user = await self._strapi.get_user(user_id)
        except StrapiError as exc:
            logger.warning("cannot check user %s with Strapi: %s", user_id, exc)
            raise AuthUnavailable() from exc
        if user is None:
            return None
        return bool(user.get("blocked"))


class Authenticator:
    """Turns a handshake (token, optional claimed user id) into an `Identity`, or refuses it."""

    def __init__(self, secret: str, users: UserDirectory):
        self._secret = secret
        self._users = users

    async def authenticate(self, token: str | None, claimed_user_id: str | None) -> Identity:
        if not token:
            raise MissingToken()
        identity = verify_token(token, self._secret)
        if claimed_user_id not in (None, "") and claimed_user_id != str(identity.user_id):
            raise UserMismatch()
        await self._users.check(identity.user_id)
        return identity
