"""State every sidecar process must agree on: kept in this process, or in Redis with REDIS_URL.

- A *ledger* maps a notification's documentId to a set of user ids: who was told of it, the
  selection last seen. `claim()` adds users and returns those that were not there before, in one
  atomic step, so a notification whose webhook reaches two processes still tells each user once.
  `MemoryLedger` is the single-process one (bounded, least recently used dropped first);
  `RedisLedger` keeps one Redis set per notification, for `SHARED_TTL_SECONDS` after its last
  change.
- `RedisLocks` gives one holder per key across processes (`async with locks(key):`), the lease
  renewed while it is held, so a process that dies frees its locks within `LOCK_LEASE_SECONDS`.
  When Redis fails, the holder goes on under the in-process lock alone and says so in the log:
  work for one notification is never stuck behind an unreachable Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from adapter.errors import SharedStateUnavailable
from adapter.locks import KeyedLock
from adapter.notifications import Ledger

__all__ = ["MemoryLedger", "RedisLedger", "RedisLocks", "SharedLedger", "stop_task"]

logger = logging.getLogger(__name__)

SHARED_TTL_SECONDS = 7 * 24 * 3600  # a notification republished after a week tells its audience again
LOCK_LEASE_SECONDS = 15.0  # a crashed holder's lock is free again after this
LOCK_WAIT_SECONDS = 30.0  # past this, a waiter goes on without the lock (and logs it)
LOCK_POLL_SECONDS = 0.05
STOP_RETRY_SECONDS = 0.5
PRESENT = b"0"  # user ids are positive: "0" marks a set that exists even when empty

# KEYS[1]: the set; ARGV[1]: its time to live; ARGV[2..]: user ids. Returns the ids added.
CLAIM_SCRIPT = """
local added = {}
redis.call('SADD', KEYS[1], '0')
for i = 2, #ARGV do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then added[#added + 1] = ARGV[i] end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return added
"""

OnClaim = Callable[[int], None]  # users held back because they were there already
OnError = Callable[[str], None]  # the Redis operation that failed


class SharedLedger(Protocol):
    """documentId -> set of user ids, as seen by every process that shares it."""

    async def get(self, key: str) -> set[int] | None: ...

    async def put(self, key: str, values: set[int]) -> None: ...

    async def claim(self, key: str, values: set[int]) -> set[int]: ...

    async def pop(self, key: str) -> set[int] | None: ...

    def forget(self, key: str) -> None: ...


class MemoryLedger:
    """The single-process ledger: a bounded `Ledger`, behind the shared interface."""

    def __init__(self, capacity: int, on_claim: OnClaim | None = None):
        self._ledger = Ledger(capacity)
        self._on_claim = on_claim

    async def get(self, key: str) -> set[int] | None:
        found = self._ledger.get(key)
        return set(found) if found is not None else None

    async def put(self, key: str, values: set[int]) -> None:
        self._ledger.put(key, set(values))

    async def claim(self, key: str, values: set[int]) -> set[int]:
        there = self._ledger.get(key) or set()
        added = values - there
        if added:
            self._ledger.put(key, there | added)
        if self._on_claim is not None:
            self._on_claim(len(values) - len(added))
        return added

    async def pop(self, key: str) -> set[int] | None:
        found = self._ledger.get(key)
        self._ledger.discard(key)
        return found

    def forget(self, key: str) -> None:
        self._ledger.discard(key)


class RedisLedger:
    """One Redis set per documentId, shared by every process on the same Redis and prefix."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        ttl: int = SHARED_TTL_SECONDS,
        on_claim: OnClaim | None = None,
        on_error: OnError | None = None,
    ):
        self._redis = redis
        self._prefix = prefix
        self._ttl = ttl
        self._on_claim = on_claim
        self._on_error = on_error
        self._claim = redis.register_script(CLAIM_SCRIPT)

    def key(self, document_id: str) -> str:
        return f"{self._prefix}:{document_id}"

    async def get(self, key: str) -> set[int] | None:
        async with self._translated("get"):
            members = await self._redis.smembers(self.key(key))  # type: ignore[misc]  # redis-py 7: sync|async union
        return _ids(members) if members else None

    async def put(self, key: str, values: set[int]) -> None:
        name = self.key(key)
        async with self._translated("put"), self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(name)
            pipe.sadd(name, PRESENT, *sorted(values))
            pipe.expire(name, self._ttl)
            await pipe.execute()

    async def claim(self, key: str, values: set[int]) -> set[int]:
        if not values:
            return set()
        async with self._translated("claim"):
            added = await self._claim(keys=[self.key(key)], args=[self._ttl, *sorted(values)])
        fresh = _ids(added)
        if self._on_claim is not None:
            self._on_claim(len(values) - len(fresh))
        return fresh

    async def pop(self, key: str) -> set[int] | None:
        """Remove and return the set; None when unknown, or when Redis cannot say (logged)."""
        name = self.key(key)
        try:
            async with self._translated("pop"), self._redis.pipeline(transaction=True) as pipe:
                pipe.smembers(name)
                pipe.delete(name)
                members, _ = await pipe.execute()
        except SharedStateUnavailable as exc:
            logger.warning("cannot read %s from Redis, treating it as unknown: %s", name, exc)
            return None
        return _ids(members) if members else None

    def forget(self, key: str) -> None:
        """Nothing to do: the key expires on its own, and a deleted documentId never returns."""

    @asynccontextmanager
    async def _translated(self, operation: str) -> AsyncIterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            if self._on_error is not None:
                self._on_error(operation)
            raise SharedStateUnavailable(f"Redis {operation} failed: {exc}") from exc


class RedisLocks:
    """`async with locks(key):` one holder per key across every process on the same Redis.

    Waiters in this process queue on an in-process lock first, so only one of them polls Redis.
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        lease: float = LOCK_LEASE_SECONDS,
        wait: float = LOCK_WAIT_SECONDS,
        on_error: OnError | None = None,
    ):
        self._redis = redis
        self._prefix = prefix
        self._lease = lease
        self._wait = wait
        self._on_error = on_error
        self._local = KeyedLock()

    @asynccontextmanager
    async def __call__(self, key: str) -> AsyncIterator[None]:
        async with self._local(key):
            lock = Lock(
                self._redis,
                f"{self._prefix}:{key}",
                timeout=self._lease,
                sleep=LOCK_POLL_SECONDS,
                blocking_timeout=self._wait,
                thread_local=False,
            )
            held = await self._acquire(lock)
            renewing = asyncio.create_task(self._renew(lock)) if held else None
            try:
                yield
            finally:
                if renewing is not None:
                    await stop_task(renewing)
                if held:
                    await self._release(lock)

    async def _acquire(self, lock: Lock) -> bool:
        try:
            if await lock.acquire():
                return True
        except (RedisError, OSError) as exc:
            self._failed("lock", lock, exc)
            return False
        logger.warning("lock %s held elsewhere for %.0f s: going on without it", lock.name, self._wait)
        return False

    async def _renew(self, lock: Lock) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                await lock.reacquire()
            except LockError:
                logger.warning("lock %s was lost while held (it expired)", lock.name)
                return
            except (RedisError, OSError) as exc:
                self._failed("lock_renew", lock, exc)

    async def _release(self, lock: Lock) -> None:
        try:
            await lock.release()
        except LockError:
            logger.warning("lock %s had expired before it was released", lock.name)
        except (RedisError, OSError) as exc:
            self._failed("unlock", lock, exc)

    def _failed(self, operation: str, lock: Lock, exc: Exception) -> None:
        if self._on_error is not None:
            self._on_error(operation)
        logger.warning("Redis %s of %s failed, going on in this process only: %s", operation, lock.name, exc)


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended, cancelling again if a library swallowed it."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=STOP_RETRY_SECONDS)
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()


def _ids(members: Any) -> set[int]:
    ids = {int(member) for member in members}
    ids.discard(0)
    return ids
