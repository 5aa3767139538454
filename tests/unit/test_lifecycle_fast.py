"""The publish fast path: announcing from the `entry.publish` delivery, then the sync corrects."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import respx
from hypothesis import example, given
from hypothesis import strategies as st
from redis.asyncio import Redis

from adapter.notifications import KnownIds, audience_ids
from adapter.shared import RedisLedger
from adapter.strapi import StrapiClient
from tests.conftest import make_settings
from tests.redis_server import RedisServer
from tests.unit import test_lifecycle
from tests.unit.test_lifecycle import DOC, EVERYONE, FakeStrapi, RecordingNotifier
from webhooks.lifecycle import NotificationLifecycle

SAMPLES = Path(__file__).parent.parent / "fixtures" / "webhook-samples.jsonl"


class Notifier(RecordingNotifier):
    def __init__(self) -> None:
        super().__init__()
        self.removals: list[tuple[str, set[int] | None]] = []

    async def removed(self, document_id: str, user_ids: Iterable[int] | None) -> None:
        self.removals.append((document_id, set(user_ids) if user_ids is not None else None))

    def told(self) -> list[int]:
        """Every user told, once per time told."""
        return sorted(uid for users, _ in self.calls for uid in users)


def captured_publish_entry() -> dict[str, Any]:
    with SAMPLES.open(encoding="utf-8") as lines:
        bodies = [json.loads(line)["body"] for line in lines if line.strip()]
    return next(
        b["entry"]
        for b in bodies
        if b["event"] == "entry.publish" and b["uid"] == "api::notification.notification"
    )


def delivery(fake: FakeStrapi, document_id: str = DOC) -> dict[str, Any]:
    """The entry of the `entry.publish` Strapi sends for the current published row: the captured
    delivery's shape (users populated with all their fields), with this row's values."""
    row = fake.published[document_id]
    template = captured_publish_entry()
    user = template["notification_users"][0]
    entry = {**template, **{k: v for k, v in row.items() if k not in {"users", "document"}}}
    entry["notification_users"] = [
        {**user, "id": uid, "username": f"user{uid}"} for uid in sorted(row["users"])
    ]
    return entry


# The lifecycle suite's Strapi client and fake Strapi.
strapi = test_lifecycle.strapi
fake = test_lifecycle.fake


@pytest.fixture
def notifier() -> Notifier:
    return Notifier()


@pytest.fixture
def lifecycle(strapi: StrapiClient, notifier: Notifier) -> NotificationLifecycle:
    return NotificationLifecycle(strapi, make_settings(), notifier, KnownIds(100))


async def test_fast_path_tells_the_selected_users_without_asking_strapi(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: Notifier, respx_mock: respx.MockRouter
) -> None:
    fake.create(publish=True, users={1, 2}, message="Hola", url="/inbox", date="2026-11-25")

    assert await lifecycle.announce_delivered(delivery(fake)) is True

    assert respx_mock.calls.call_count == 0
    assert notifier.calls == [
        (
            {1, 2},
            {
                "mensaje": "Hola",
                "id": fake.published_id(),
                "url": "/inbox",
                "document": None,
                "title": "2026-11-25",
                "documentId": DOC,
            },
        )
    ]


async def test_fast_path_payload_is_the_one_the_sync_would_send(
    fake: FakeStrapi, strapi: StrapiClient, lifecycle: NotificationLifecycle, notifier: Notifier
) -> None:
    fake.create(publish=True, users={1})
    await lifecycle.announce_delivered(delivery(fake))
    by_sync = Notifier()
    await NotificationLifecycle(strapi, make_settings(), by_sync, KnownIds(10)).sync(DOC, announce=True)

    assert notifier.calls == by_sync.calls


async def test_fast_path_then_sync_tells_each_user_once(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: Notifier
) -> None:
    fake.create(publish=True, users={1, 2, 3})

    await lifecycle.announce_delivered(delivery(fake))
    await lifecycle.sync(DOC, announce=True)

    assert notifier.told() == [1, 2, 3]
    assert notifier.removals == []


async def test_fast_path_duplicate_delivery_tells_nobody_twice(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: Notifier
) -> None:
    fake.create(publish=True, users={1, 2})
    entry = delivery(fake)

    await asyncio.gather(lifecycle.announce_delivered(entry), lifecycle.announce_delivered(dict(entry)))
    await lifecycle.announce_delivered(entry)

    assert notifier.told() == [1, 2]


async def test_fast_path_all_users_tells_the_selected_now_and_the_rest_after_the_sync(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: Notifier
) -> None:
    fake.create(publish=True, allUsers=True, users={1, 2})

    await lifecycle.announce_delivered(delivery(fake))
    assert notifier.told() == [1, 2]  # not a Strapi request for the whole user list first

    await lifecycle.sync(DOC, announce=True)

    assert fake.published[DOC]["users"] == EVERYONE
    assert notifier.told() == sorted(EVERYONE)  # each once
    assert notifier.calls[1][0] == {3, 4, 5}


async def test_fast_path_delivery_older_than_a_removal_is_not_announced(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: Notifier
) -> None:
    # Strapi sent publish then unpublish; the unpublish arrived first.
    fake.create(publish=True, users={1, 2})
    entry = delivery(fake)
    del fake.published[DOC]
    lifecycle.removal_delivered(DOC, entry["id"])

    assert await lifecycle.announce_delivered(entry) is False
    await lifecycle.sync(DOC, announce=True)

    assert notifier.calls == []


async def test_fast_path_delivery_older_than_one_announced_is_not_announced(
    fake: FakeStrapi, strapi: StrapiClient, notifier: Notifier
) -> None:
    lifecycle = NotificationLifecycle(
        strapi, make_settings(renotify_on_republish=True), notifier, KnownIds(10)
    )
    fake.create(publish=True, users={1}, message="first")
    first = delivery(fake)
    fake.edit(publish=True, message="second")
    second = delivery(fake)

    assert await lifecycle.announce_delivered(second) is True
    assert await lifecycle.announce_delivered(first) is False  # delayed: would re-tell the old text

    assert [payload["mensaje"] for _, payload in notifier.calls] == ["second"]


async def test_fast_path_republish_after_a_removal_is_announced(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: Notifier
) -> None:
    fake.create(publish=True, users={1})
    first = delivery(fake)
    await lifecycle.announce_delivered(first)
    lifecycle.removal_delivered(DOC, first["id"])
    await lifecycle.removed(DOC)
    fake.publish()

    assert await lifecycle.announce_delivered(delivery(fake)) is True

    assert notifier.told() == [1, 1]
    assert notifier.removals == [(DOC, {1})]


async def test_fast_path_announcement_unpublished_before_the_sync_is_taken_back(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: Notifier
) -> None:
    # The publish delivery was late, or an unpublish raced it (its own delivery lost or elsewhere).
    fake.create(publish=True, users={1, 2})
    await lifecycle.announce_delivered(delivery(fake))
    del fake.published[DOC]

    await lifecycle.sync(DOC, announce=True)
    await lifecycle.sync(DOC, announce=True)

    assert notifier.told() == [1, 2]
    assert notifier.removals == [(DOC, {1, 2})]


async def test_fast_path_announcement_of_a_deleted_notification_is_taken_back(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: Notifier
) -> None:
    fake.create(publish=True, users={1})
    await lifecycle.announce_delivered(delivery(fake))
    del fake.published[DOC], fake.drafts[DOC]

    await lifecycle.sync(DOC, announce=True)

    assert notifier.removals == [(DOC, {1})]


async def test_sync_without_a_fast_path_announcement_takes_nothing_back(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: Notifier
) -> None:
    # Removal is the removal deliveries' business; the sync only corrects its own fast path.
    fake.create(publish=False, users={1})

    await lifecycle.sync(DOC, announce=True)

    assert notifier.removals == []


@pytest.mark.parametrize(
    "entry_change",
    [
        pytest.param({"notification_users": None}, id="audience-not-populated"),
        pytest.param({"publishedAt": None}, id="a-draft-row"),
        pytest.param({"id": "8"}, id="no-numeric-id"),
    ],
)
async def test_fast_path_leaves_an_unusable_entry_to_the_sync(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: Notifier, entry_change: dict[str, Any]
) -> None:
    fake.create(publish=True, users={1, 2})
    entry = {**delivery(fake), **entry_change}
    if entry_change.get("notification_users", 0) is None:
        del entry["notification_users"]

    assert await lifecycle.announce_delivered(entry) is False
    assert notifier.calls == []

    await lifecycle.sync(DOC, announce=True)
    assert notifier.told() == [1, 2]


async def test_fast_path_in_one_process_and_sync_in_another_share_the_redis_ledger(
    fake: FakeStrapi, strapi: StrapiClient, redis_server: RedisServer
) -> None:
    fake.create(publish=True, allUsers=True, users={1, 2, 3})
    notifiers = [Notifier(), Notifier()]
    async with Redis.from_url(redis_server.url) as first, Redis.from_url(redis_server.url) as second:
        processes = [
            NotificationLifecycle(
                strapi,
                make_settings(),
                notifier,
                KnownIds(10),
                told=RedisLedger(redis, "t:told"),
                announced=RedisLedger(redis, "t:announced"),
            )
            for notifier, redis in zip(notifiers, (first, second), strict=True)
        ]
        entry = delivery(fake)

        await asyncio.gather(
            processes[0].announce_delivered(entry),
            processes[1].announce_delivered(dict(entry)),  # a duplicate, handled elsewhere
            processes[1].sync(DOC, announce=True),
        )
        await processes[0].sync(DOC, announce=True)

    told = sorted(uid for n in notifiers for users, _ in n.calls for uid in users)
    assert told == sorted(EVERYONE)


async def test_fast_path_announcement_removed_by_its_unpublish_webhook_is_not_removed_twice(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: Notifier
) -> None:
    fake.create(publish=True, users={1, 2})
    await lifecycle.announce_delivered(delivery(fake))
    del fake.published[DOC]
    await lifecycle.removed(DOC)  # the unpublish delivery

    await lifecycle.sync(DOC, announce=True)

    assert notifier.removals == [(DOC, {1, 2})]


related_items = st.one_of(
    st.fixed_dictionaries({"id": st.integers(-5, 10**20)}),
    st.fixed_dictionaries({"id": st.one_of(st.booleans(), st.sampled_from(["7", "08", " 9"]))}),
    st.fixed_dictionaries({"id": st.integers(1, 9)}, optional={"username": st.text(max_size=3)}),
    st.fixed_dictionaries({}, optional={"documentId": st.text(max_size=3)}),
    st.integers(),
    st.text(max_size=2),
    st.lists(st.integers(), max_size=2),
)


@example(related=[{"id": 3}, {"id": "4"}])
@example(related=[{"id": True}, {"id": 2}])
@example(related=[{"id": 3}, {"documentId": "x"}])
@example(related=[{"id": 3}, "5"])
@given(related=st.one_of(st.lists(related_items, max_size=12), st.none(), st.integers(), st.text(max_size=2)))
def test_the_audience_is_every_related_id_whatever_the_items_look_like(related: Any) -> None:
    """The users a selection names: integer ids as they are, numeric strings and booleans as
    Python's int() reads them, items without an id or that are not objects skipped."""
    expected = (
        {int(item["id"]) for item in related if isinstance(item, dict) and "id" in item}
        if isinstance(related, list)
        else set()
    )
    found = audience_ids({"notification_users": related}, "notification_users")
    assert found == expected
    assert all(type(user) is int for user in found)  # True == 1, but it is not a user id
