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
from collections import deque
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


def _retrieve(answer: asyncio.Future[Any]) -> None:
    """Mark a lookup's failure as seen, so nobody waiting is not an 'unretrieved' error."""
    if not answer.cancelled():
        answer.exception()


BATCH_SIZE = 100  # ids per request: ~4 KB of query string, Strapi's default page limit
BATCHES_IN_FLIGHT = 4
USER_FIELDS = ["id", "blocked"]


class UserDirectory:
    """Whether a user may connect (exists, not blocked), asked of Strapi and cached for `ttl` s.

    Checks are batched: the users asked while earlier lookups are under way (up to
    `BATCHES_IN_FLIGHT` requests) wait and are then asked together, up to `batch_size` in one
    `GET /api/users?filters[id][$in]=...` (a lone user: `GET /api/users/:id`). A user missing from
    the answer does not exist. Concurrent checks of one user share one lookup, so a reconnect storm
    costs at most one request per user, and far fewer when its users arrive together.
    """

    def __init__(
        self,
        strapi: StrapiClient,
        ttl: float,
        clock: Any = time.monotonic,
        *,
        batch_size: int = BATCH_SIZE,
        batches_in_flight: int = BATCHES_IN_FLIGHT,
    ):
        if batch_size < 1 or batches_in_flight < 1:
            raise ValueError("batch_size and batches_in_flight must be at least 1")
        self._strapi = strapi
        self._ttl = ttl
        self._clock = clock
        self._batch_size = batch_size
        self._batches_in_flight = batches_in_flight
        self._cache: dict[int, tuple[float, bool | None]] = {}
        self._pending: dict[int, asyncio.Future[bool | None]] = {}  # asked, no answer yet
        # Not sent yet, in order. A user forgotten and asked again can be here twice: both answered.
        self._queued: deque[tuple[int, asyncio.Future[bool | None]]] = deque()
        self._lookups: set[asyncio.Task[None]] = set()
        self._pump_scheduled = False

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
        answer = self._pending.get(user_id)
        if answer is None:
            answer = asyncio.get_running_loop().create_future()
            answer.add_done_callback(_retrieve)
            self._pending[user_id] = answer
            self._queued.append((user_id, answer))
            self._schedule_pump()
        # A caller that gives up (a dropped handshake) cancels only its own wait.
        return await asyncio.shield(answer)

    def _schedule_pump(self) -> None:
        """Send what is queued on the next loop turn: the users asked in this one go together."""
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        while self._queued and len(self._lookups) < self._batches_in_flight:
            batch = [self._queued.popleft() for _ in range(min(self._batch_size, len(self._queued)))]
            lookup = asyncio.create_task(self._lookup(batch))
            self._lookups.add(lookup)
            lookup.add_done_callback(self._lookup_done)

    def _lookup_done(self, lookup: asyncio.Task[None]) -> None:
        self._lookups.discard(lookup)
        if self._queued:
            self._schedule_pump()

    async def _lookup(self, batch: list[tuple[int, asyncio.Future[bool | None]]]) -> None:
        try:
            answers = await self._ask(list(dict.fromkeys(user_id for user_id, _ in batch)))
        except BaseException as exc:  # that batch's waiters fail, the next batch is asked afresh
            failure = exc if isinstance(exc, AuthUnavailable) else AuthUnavailable()
            for user_id, answer in batch:
                if self._pending.get(user_id) is answer:
                    del self._pending[user_id]
                if not answer.done():
                    answer.set_exception(failure)
            if not isinstance(exc, AuthUnavailable):
                raise
            return
        expires = self._clock() + self._ttl
        for user_id, answer in batch:
            if self._pending.get(user_id) is answer:  # not forgotten meanwhile
                del self._pending[user_id]
                self._cache[user_id] = (expires, answers.get(user_id))
            if not answer.done():
                answer.set_result(answers.get(user_id))

    async def _ask(self, user_ids: list[int]) -> dict[int, bool | None]:
        """Each user's `blocked`; None for a user Strapi does not know."""
        answers: dict[int, bool | None] = dict.fromkeys(user_ids)
        try:
            if len(user_ids) == 1:
                user = await self._strapi.get_user(user_ids[0], urgent=True)
                if user is not None:
                    answers[user_ids[0]] = bool(user.get("blocked"))
                return answers
            found = await self._strapi.users_by_id(user_ids, fields=USER_FIELDS, urgent=True)
        except StrapiError as exc:
            logger.warning("cannot check users %s with Strapi: %s", _ids_text(user_ids), exc)
            raise AuthUnavailable() from exc
        for user in found:
            user_id = user.get("id") if isinstance(user, dict) else None
            if isinstance(user_id, int) and user_id in answers:
                answers[user_id] = bool(user.get("blocked"))
        return answers


def _ids_text(user_ids: list[int]) -> str:
    shown = ", ".join(map(str, user_ids[:5]))
    return shown if len(user_ids) <= 5 else f"{shown} and {len(user_ids) - 5} more"


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
