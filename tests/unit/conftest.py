"""Fixtures for the fast suite that more than one module needs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import REDIS_SERVER, RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server of the test's own, on a free port (skips when none is installed)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
