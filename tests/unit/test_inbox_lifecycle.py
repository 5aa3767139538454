"""Read-all receipts (`ReadReceipts.mark_many`) and the lifecycle's inbox duties: removals, reads
recorded elsewhere, and renotifying on republish."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
import pytest
import respx

from adapter.errors import UpstreamError
from adapter.notifications import KnownIds
from adapter.receipts import ReadReceipts
from adapter.strapi import StrapiClient, build_http_client
from tests.conftest import STRAPI_URL, make_settings
from tests.unit.test_inbox import OTHER_USER, USER, FakeStrapi, doc, error
from tests.unit.test_lifecycle import DOC, EVERYONE
from tests.unit.test_lifecycle import FakeStrapi as LifecycleStrapi
from webhooks.lifecycle import NotificationLifecycle


class Notifier:
    """Records what the lifecycle tells the sockets."""

    def __init__(self) -> None:
        self.notified: list[set[int]] = []
        self.removals: list[tuple[str, set[int] | None]] = []
        self.reads: list[tuple[str, set[int]]] = []

    async def notify(self, user_ids: Iterable[int], payload: dict[str, Any]) -> int:
        users = set(user_ids)
        self.notified.append(users)
        return len(users)

    async def removed(self, document_id: str, user_ids: Iterable[int] | None) -> None:
        self.removals.append((document_id, None if user_ids is None else set(user_ids)))

    async def read_elsewhere(self, document_id: str, user_ids: Iterable[int]) -> None:
        self.reads.append((document_id, set(user_ids)))


@pytest.fixture
async def strapi() -> AsyncIterator[StrapiClient]:
    async with build_http_client(STRAPI_URL, "tok", 5.0) as http:
        yield StrapiClient(http)


@pytest.fixture
def fake(respx_mock: respx.MockRouter) -> FakeStrapi:
    fake = FakeStrapi()
    respx_mock.route(host="strapi.test").mock(side_effect=fake.handle)
    return fake


@pytest.fixture
def receipts(strapi: StrapiClient) -> ReadReceipts:
    return ReadReceipts(strapi, make_settings(), KnownIds(100))


@pytest.fixture
def notifier() -> Notifier:
    return Notifier()


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def is_batch_lookup(request: httpx.Request) -> bool:
    """read-all's lookup of the first READNOTIFICATION of many notifications at once."""
    query = request.url.params
    return (
        request.method == "GET"
        and request.url.path == "/api/read-notifications"
        and "filters[notification][documentId][$in][0]" in query
        and "filters[users_permissions_users][id][$eq]" not in query
    )


# -- mark_many -------------------------------------------------------------------------------


async def test_mark_many_connects_to_existing_receipts_and_creates_missing_ones(
    fake: FakeStrapi, receipts: ReadReceipts
) -> None:
    for number in (1, 2):
        fake.publish(number, minute=number, users=(USER, OTHER_USER))
    fake.read(doc(1), OTHER_USER)
    (existing,) = fake.receipts_of(doc(1))

    marked = await receipts.mark_many(USER, [doc(1), doc(2)])

    assert marked == [doc(1), doc(2)]
    assert fake.receipts_of(doc(1)) == [existing]
    assert existing["users"] == {USER, OTHER_USER}
    assert [receipt["users"] for receipt in fake.receipts_of(doc(2))] == [{USER}]
    (connect,) = fake.calls("PUT", f"/api/read-notifications/{existing['documentId']}")
    assert body(connect) == {"data": {"users_permissions_users": {"connect": [{"id": USER}]}}}
    (create,) = fake.calls("POST", "/api/read-notifications")
    assert body(create) == {
        "data": {
            "notification": {"connect": [{"documentId": doc(2)}]},
            "users_permissions_users": {"connect": [{"id": USER}]},
        }
    }


async def test_mark_many_joins_the_first_of_duplicate_receipts(
    fake: FakeStrapi, receipts: ReadReceipts
) -> None:
    fake.publish(1, minute=1, users=(USER, OTHER_USER))
    first = fake.add_receipt(doc(1), {OTHER_USER})
    second = fake.add_receipt(doc(1), {7})

    assert await receipts.mark_many(USER, [doc(1)]) == [doc(1)]

    assert first["users"] == {USER, OTHER_USER}
    assert second["users"] == {7}


async def test_mark_many_looks_receipts_up_a_hundred_notifications_at_a_time(
    fake: FakeStrapi, receipts: ReadReceipts
) -> None:
    documents = [doc(number) for number in range(1, 151)]
    for number in range(1, 151):
        fake.publish(number, minute=number // 60, second=number % 60)
        if number % 2:
            fake.read(doc(number), OTHER_USER)

    marked = await receipts.mark_many(USER, documents)

    assert marked == documents
    assert len([r for r in fake.requests if r.method == "GET"]) == 2
    assert len(fake.writes) == 150
    assert all(USER in fake.readers(d) for d in documents)
    assert all(len(fake.receipts_of(d)) == 1 for d in documents)


async def test_mark_many_rechecks_a_notification_this_process_created_a_receipt_for_meanwhile(
    fake: FakeStrapi, receipts: ReadReceipts
) -> None:
    fake.publish(1, minute=1, users=(USER, OTHER_USER))
    looked_up, release = asyncio.Event(), asyncio.Event()

    async def stale_lookup(request: httpx.Request) -> httpx.Response | None:
        if not is_batch_lookup(request) or looked_up.is_set():
            return None
        answer = fake.answer(request)  # no receipt yet...
        looked_up.set()
        await release.wait()  # ...and it arrives after another user's read created one
        return answer

    fake.hooks.append(stale_lookup)
    read_all = asyncio.create_task(receipts.mark_many(USER, [doc(1)]))
    await looked_up.wait()
    await receipts.mark_read(OTHER_USER, doc(1))
    release.set()

    assert await read_all == [doc(1)]
    assert [receipt["users"] for receipt in fake.receipts_of(doc(1))] == [{USER, OTHER_USER}]


async def test_mark_many_does_not_count_a_read_the_user_made_meanwhile(
    fake: FakeStrapi, receipts: ReadReceipts
) -> None:
    fake.publish(1, minute=1)
    looked_up, release = asyncio.Event(), asyncio.Event()

    async def stale_lookup(request: httpx.Request) -> httpx.Response | None:
        if not is_batch_lookup(request) or looked_up.is_set():
            return None
        answer = fake.answer(request)
        looked_up.set()
        await release.wait()
        return answer

    fake.hooks.append(stale_lookup)
    read_all = asyncio.create_task(receipts.mark_many(USER, [doc(1)]))
    await looked_up.wait()
    await receipts.mark_read(USER, doc(1))  # the same user, on another socket
    release.set()

    assert await read_all == []
    assert [receipt["users"] for receipt in fake.receipts_of(doc(1))] == [{USER}]
    assert len(fake.writes) == 1


@pytest.mark.parametrize("failing", ["create", "connect"])
async def test_mark_many_leaves_out_a_failed_write_without_raising(
    fake: FakeStrapi, strapi: StrapiClient, receipts: ReadReceipts, notifier: Notifier, failing: str
) -> None:
    for number in (1, 2, 3):
        fake.publish(number, minute=number, users=(USER, OTHER_USER))
        if failing == "connect":
            fake.read(doc(number), OTHER_USER)
    refused = fake.receipts_of(doc(2))[0]["documentId"] if failing == "connect" else None

    async def refuse_notification_2(request: httpx.Request) -> httpx.Response | None:
        created = request.method == "POST" and body(request)["data"]["notification"]["connect"][0]
        connected = request.method == "PUT" and request.url.path == f"/api/read-notifications/{refused}"
        if connected or (created and created["documentId"] == doc(2)):
            return error(400, "Invalid relations")
        return None

    fake.hooks.append(refuse_notification_2)

    marked = await receipts.mark_many(USER, [doc(1), doc(2), doc(3)])

    assert marked == [doc(1), doc(3)]
    assert USER not in fake.readers(doc(2))
    assert USER in fake.readers(doc(1))
    assert USER in fake.readers(doc(3))
    # The failed one is not taken for a read: when the user reads it elsewhere, that is echoed.
    lifecycle = NotificationLifecycle(strapi, make_settings(), notifier, KnownIds(100), receipts.readers)
    await lifecycle.reads_recorded(doc(1), {USER})
    await lifecycle.reads_recorded(doc(2), {USER})
    assert notifier.reads == [(doc(2), {USER})]


async def test_mark_many_lookup_failure_is_an_upstream_error_and_writes_nothing(
    fake: FakeStrapi, receipts: ReadReceipts
) -> None:
    fake.publish(1, minute=1)

    async def down(request: httpx.Request) -> httpx.Response | None:
        return error(400, "Bad Request") if is_batch_lookup(request) else None

    fake.hooks.append(down)

    with pytest.raises(UpstreamError):
        await receipts.mark_many(USER, [doc(1)])
    assert fake.writes == []


# -- reads recorded elsewhere ----------------------------------------------------------------


async def test_reads_recorded_reports_only_users_not_known_as_readers(
    strapi: StrapiClient, notifier: Notifier
) -> None:
    lifecycle = NotificationLifecycle(strapi, make_settings(), notifier, KnownIds(100))

    await lifecycle.reads_recorded(doc(1), {USER, OTHER_USER})
    await lifecycle.reads_recorded(doc(1), {USER, OTHER_USER, 7})  # the same receipt, one more reader
    await lifecycle.reads_recorded(doc(1), {USER})
    await lifecycle.reads_recorded(doc(2), {USER})

    assert notifier.reads == [(doc(1), {USER, OTHER_USER}), (doc(1), {7}), (doc(2), {USER})]


async def test_reads_recorded_knows_the_reads_receipts_recorded(
    fake: FakeStrapi, strapi: StrapiClient, receipts: ReadReceipts, notifier: Notifier
) -> None:
    for number in (1, 2, 3):
        fake.publish(number, minute=number, users=(USER, OTHER_USER))
    lifecycle = NotificationLifecycle(strapi, make_settings(), notifier, KnownIds(100), receipts.readers)
    await receipts.mark_read(USER, doc(1))
    await receipts.mark_many(USER, [doc(2), doc(3)])

    # The webhooks of the sidecar's own writes come back.
    await lifecycle.reads_recorded(doc(1), {USER})
    await lifecycle.reads_recorded(doc(2), {USER})
    await lifecycle.reads_recorded(doc(3), {USER, OTHER_USER})

    assert notifier.reads == [(doc(3), {OTHER_USER})]


# -- removals --------------------------------------------------------------------------------


@pytest.fixture
def lifecycle_strapi(respx_mock: respx.MockRouter) -> LifecycleStrapi:
    fake = LifecycleStrapi()
    respx_mock.route(host="strapi.test").mock(side_effect=fake.handle)
    return fake


def lifecycle_of(strapi: StrapiClient, notifier: Notifier, **overrides: Any) -> NotificationLifecycle:
    return NotificationLifecycle(strapi, make_settings(**overrides), notifier, KnownIds(100))


async def test_removed_tells_the_users_who_were_told(
    lifecycle_strapi: LifecycleStrapi, strapi: StrapiClient, notifier: Notifier
) -> None:
    lifecycle = lifecycle_of(strapi, notifier)
    lifecycle_strapi.create(publish=True, users={1, 2})
    await lifecycle.sync(DOC, announce=True)

    await lifecycle.removed(DOC)

    assert notifier.removals == [(DOC, {1, 2})]


async def test_removed_tells_everyone_when_nobody_here_knows_who_was_told(
    strapi: StrapiClient, notifier: Notifier
) -> None:
    lifecycle = lifecycle_of(strapi, notifier)

    await lifecycle.removed(DOC)  # announced before a restart, say

    assert notifier.removals == [(DOC, None)]


async def test_removed_forgets_who_was_told_so_a_new_publish_tells_them_again(
    lifecycle_strapi: LifecycleStrapi, strapi: StrapiClient, notifier: Notifier
) -> None:
    lifecycle = lifecycle_of(strapi, notifier)
    lifecycle_strapi.create(publish=True, users={1, 2})
    await lifecycle.sync(DOC, announce=True)

    await lifecycle.removed(DOC)
    await lifecycle.removed(DOC)  # a second delivery
    lifecycle_strapi.publish()  # published again: clients dropped it, so they must hear of it
    await lifecycle.sync(DOC, announce=True)

    assert notifier.removals == [(DOC, {1, 2}), (DOC, None)]
    assert notifier.notified == [{1, 2}, {1, 2}]


# -- renotify on republish -------------------------------------------------------------------


async def test_renotify_on_republish_tells_the_whole_audience_again(
    lifecycle_strapi: LifecycleStrapi, strapi: StrapiClient, notifier: Notifier
) -> None:
    lifecycle = lifecycle_of(strapi, notifier, renotify_on_republish=True)
    lifecycle_strapi.create(publish=True, users={1, 2})
    await lifecycle.sync(DOC, announce=True)

    lifecycle_strapi.edit(publish=True, message="Corrected text")
    await lifecycle.sync(DOC, announce=True)

    assert notifier.notified == [{1, 2}, {1, 2}]


async def test_without_renotify_a_republish_tells_only_users_new_to_it(
    lifecycle_strapi: LifecycleStrapi, strapi: StrapiClient, notifier: Notifier
) -> None:
    lifecycle = lifecycle_of(strapi, notifier)
    lifecycle_strapi.create(publish=True, users={1, 2})
    await lifecycle.sync(DOC, announce=True)

    lifecycle_strapi.edit(publish=True, users={1, 2, 3})
    await lifecycle.sync(DOC, announce=True)

    assert notifier.notified == [{1, 2}, {3}]


async def test_renotify_on_republish_does_not_repeat_a_duplicate_delivery(
    lifecycle_strapi: LifecycleStrapi, strapi: StrapiClient, notifier: Notifier
) -> None:
    lifecycle = lifecycle_of(strapi, notifier, renotify_on_republish=True)
    lifecycle_strapi.create(publish=True, users={1, 2})

    await lifecycle.sync(DOC, announce=True)
    await lifecycle.sync(DOC, announce=True)  # Strapi delivered the same publish twice

    assert notifier.notified == [{1, 2}]


async def test_renotify_on_republish_does_not_repeat_the_sidecars_own_publish(
    lifecycle_strapi: LifecycleStrapi, strapi: StrapiClient, notifier: Notifier
) -> None:
    lifecycle = lifecycle_of(strapi, notifier, renotify_on_republish=True)
    lifecycle_strapi.create(publish=True, allUsers=True, users={1})

    await lifecycle.sync(DOC, announce=True)  # selects everyone and publishes that
    await lifecycle.sync(DOC, announce=True)  # the webhook of the sidecar's own publish

    assert [write.status for write in lifecycle_strapi.writes] == [None]
    assert notifier.notified == [EVERYONE]
