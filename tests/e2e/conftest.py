"""One real stack per JWT mode for the whole session (each Strapi boots in about 5 s)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.e2e.harness import Stack

_names = itertools.count(1)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Strapi in legacy JWT mode (`{id}` tokens) with the sidecar wired to it."""
    running = Stack("legacy", "legacy").start()
    # Someone no test addresses: a notification for one test user is then never "every user",
    # which the sidecar (as the seed) would rightly turn into an all-users notification.
    running.create_user("bystander")
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="session")
def refresh_stack() -> Iterator[Stack]:
    """Strapi in refresh mode (short-lived `{userId, type: "access"}` tokens), as new projects are."""
    running = Stack("refresh", "refresh").start()
    running.create_user("bystander")
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def unique() -> str:
    """A name no other test in the session uses."""
    return f"u{next(_names)}"
