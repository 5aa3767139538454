"""Per-key mutual exclusion inside one process (one lock per notification, say)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

__all__ = ["KeyedLock", "LockFactory"]

# `async with locks(key):` - a KeyedLock, or one shared between processes (adapter/shared.py).
LockFactory = Callable[[str], AbstractAsyncContextManager[Any]]


class KeyedLock:
    """`async with locks(key):` runs one holder per key at a time; idle keys are forgotten."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def __call__(self, key: str) -> AsyncIterator[None]:
        lock, holders = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, holders + 1)
        try:
            async with lock:
                yield
        finally:
            lock, holders = self._locks[key]
            if holders == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, holders - 1)

    def __len__(self) -> int:
        return len(self._locks)
