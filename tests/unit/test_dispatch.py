"""Routing webhook deliveries to background work, with real Strapi 5.54 bodies."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from adapter.errors import SharedStateUnavailable, StrapiError, StrapiNotFound, StrapiUnavailable
from tests.conftest import make_settings
from webhooks.dispatch import WebhookDispatcher
from webhooks.models import WebhookPayload

SAMPLES = Path(__file__).parent.parent / "fixtures" / "webhook-samples.jsonl"
NOTIFICATION = "api::notification.notification"
READ_NOTIFICATION = "api::read-notification.read-notification"
USER = "plugin::users-permissions.user"
DOC = "adjutl3unow7mrzedbqgrovl"
OTHER_DOC = "q4w8e2r6t0y5u9i3o7p1a5sd"


def sample(event: str, uid: str, *, nth: int = 0) -> dict[str, Any]:
    """The body of a captured delivery (a fresh copy)."""
    with SAMPLES.open(encoding="utf-8") as lines:
        bodies = [json.loads(line)["body"] for line in lines if line.strip()]
    matching = [body for body in bodies if body["event"] == event and body["uid"] == uid]
    return copy.deepcopy(matching[nth])


def payload(
    event: str, uid: str = NOTIFICATION, *, like: str | None = None, **changes: Any
) -> WebhookPayload:
    """A captured delivery, optionally re-labelled as another event (`like` names the sample)."""
    body = sample(like or event, uid)
    body["event"] = event
    body.update(changes)
    return WebhookPayload.model_validate(body)


def for_document(event: str, document_id: str) -> WebhookPayload:
    body = sample(event, NOTIFICATION)
    body["entry"]["documentId"] = document_id
    return WebhookPayload.model_validate(body)


class FakeLifecycle:
    """Records the work asked of it. `outcomes` are raised (or returned) by successive syncs;
    while `gate` is set, each sync waits for it."""

    def __init__(self, *outcomes: BaseException | None) -> None:
        self.syncs: list[tuple[str, bool]] = []
        self.finished: list[tuple[str, bool]] = []
        self.forgotten: list[str] = []
        self.removals: list[str] = []
        self.reads: list[tuple[str, set[int]]] = []
        self.gate: asyncio.Event | None = None
        self.removals_delivered: list[tuple[str, int | None]] = []
        self.delivered: list[dict[str, Any]] = []  # fast-path announcements started
        self.announced: list[dict[str, Any]] = []  # and finished
        self.announce_gate: asyncio.Event | None = None  # while set, each waits for it
        self.order: list[str] = []  # "announced", "removed", "sync" as each finishes or starts
        self._outcomes = list(outcomes)

    async def sync(self, document_id: str, *, announce: bool) -> None:
        self.syncs.append((document_id, announce))
        self.order.append("sync")
        if self.gate is not None:
            await self.gate.wait()
        outcome = self._outcomes.pop(0) if self._outcomes else None
        if outcome is not None:
            raise outcome
        self.finished.append((document_id, announce))

    def forget(self, document_id: str) -> None:
        self.forgotten.append(document_id)

    def removal_delivered(self, document_id: str, published_id: int | None) -> None:
        self.removals_delivered.append((document_id, published_id))

    async def announce_delivered(self, entry: dict[str, Any]) -> bool:
        self.delivered.append(entry)
        if self.announce_gate is not None:
            await self.announce_gate.wait()
        self.announced.append(entry)
        self.order.append("announced")
        return True

    async def removed(self, document_id: str) -> None:
        self.removals.append(document_id)
        self.order.append("removed")

    async def reads_recorded(self, document_id: str, user_ids: set[int]) -> None:
        self.reads.append((document_id, user_ids))


class FakeUsers:
    def __init__(self) -> None:
        self.forgotten: list[int] = []

    def forget(self, user_id: int) -> None:
        self.forgotten.append(user_id)


def make_dispatcher(lifecycle: FakeLifecycle, users: FakeUsers | None = None) -> WebhookDispatcher:
    return WebhookDispatcher(
        make_settings(),
        lifecycle,  # type: ignore[arg-type]
        users or FakeUsers(),  # type: ignore[arg-type]
        retry_delays=(0.01, 0.01),
        settle=0,
    )


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "webhooks.dispatch" and r.levelno == level]


def test_fixture_samples_are_the_real_captures() -> None:
    lines = SAMPLES.read_text(encoding="utf-8").splitlines()
    deliveries = [json.loads(line) for line in lines]
    assert len(deliveries) == 8
    assert {d["headers"]["Authorization"] for d in deliveries} == {"Bearer <WEBHOOK_SECRET>"}
    assert all(d["headers"]["X-Strapi-Event"] == d["body"]["event"] for d in deliveries)


# -- routing ---------------------------------------------------------------------------------


async def test_dispatch_ignores_other_content_types() -> None:
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle)
    article = {"event": "entry.create", "uid": "api::article.article", "entry": {"id": 1, "documentId": "a"}}

    outcome = dispatcher.dispatch(WebhookPayload.model_validate(article))

    assert outcome == "ignored"
    assert dispatcher.pending == 0
    assert (lifecycle.syncs, lifecycle.forgotten) == ([], [])


@pytest.mark.parametrize("event", ["entry.create", "entry.publish"])
async def test_dispatch_read_notification_events_report_their_readers(event: str) -> None:
    # A READNOTIFICATION written by anyone (an editor, another service, this sidecar).
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle)
    delivery = payload(event, READ_NOTIFICATION)
    target = delivery.entry["notification"]["documentId"]  # type: ignore[index]
    readers = {u["id"] for u in delivery.entry["users_permissions_users"]}  # type: ignore[index]

    assert dispatcher.dispatch(delivery) == "reads"
    await dispatcher.drain(1)

    assert lifecycle.reads == [(target, readers)]
    assert lifecycle.syncs == []


async def test_dispatch_ignores_media_events() -> None:
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle)
    media = WebhookPayload.model_validate(
        {"event": "media.create", "createdAt": "2026-11-25T18:42:10.410Z", "media": {"id": 1}}
    )

    assert dispatcher.dispatch(media) == "ignored"
    assert dispatcher.pending == 0


@pytest.mark.parametrize("event", ["entry.create", "entry.update", "entry.delete"])
async def test_dispatch_user_event_forgets_the_cached_user(event: str) -> None:
    users = FakeUsers()
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle, users)

    outcome = dispatcher.dispatch(payload(event, USER, like="entry.create"))

    assert outcome == "user"
    assert users.forgotten == [4]
    assert lifecycle.syncs == []


async def test_dispatch_user_event_without_entry_forgets_nobody() -> None:
    users = FakeUsers()
    dispatcher = make_dispatcher(FakeLifecycle(), users)

    assert dispatcher.dispatch(payload("entry.update", USER, like="entry.create", entry=None)) == "user"
    assert users.forgotten == []


async def test_dispatch_notification_without_entry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    # Seen from Strapi on publish (strapi#25387).
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle)

    with caplog.at_level(logging.WARNING, logger="webhooks.dispatch"):
        outcome = dispatcher.dispatch(payload("entry.publish", entry=None))

    assert outcome == "no_entry"
    assert messages(caplog, logging.WARNING) == [
        "webhook entry.publish for a notification came with no entry"
    ]
    assert dispatcher.pending == 0
    assert lifecycle.syncs == []


async def test_dispatch_delete_of_the_published_row_tells_the_audience() -> None:
    # Strapi sends one entry.delete per row: the draft, then the published version.
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle)
    draft, published = (
        WebhookPayload.model_validate(sample("entry.delete", NOTIFICATION, nth=n)) for n in (0, 1)
    )

    outcomes = [dispatcher.dispatch(draft), dispatcher.dispatch(published)]
    await dispatcher.drain(1)

    assert outcomes == ["forgotten", "queued"]
    assert lifecycle.forgotten == [DOC]
    assert lifecycle.removals == [DOC]
    assert lifecycle.syncs == []


async def test_dispatch_unpublish_tells_the_audience() -> None:
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle)

    assert dispatcher.dispatch(payload("entry.unpublish", like="entry.delete")) == "queued"
    await dispatcher.drain(1)

    assert lifecycle.removals == [DOC]
    assert lifecycle.syncs == []


async def test_dispatch_ignores_draft_discard() -> None:
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle)

    assert dispatcher.dispatch(payload("entry.draft-discard", like="entry.delete")) == "ignored"
    assert dispatcher.pending == 0
    assert (lifecycle.syncs, lifecycle.forgotten, lifecycle.removals) == ([], [], [])


@pytest.mark.parametrize(
    ("event", "announce"),
    [("entry.create", False), ("entry.update", False), ("entry.publish", True)],
)
async def test_dispatch_schedules_a_sync_that_announces_only_on_publish(event: str, announce: bool) -> None:
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle)

    outcome = dispatcher.dispatch(payload(event))
    await dispatcher.drain(5)

    assert outcome == "queued"
    assert lifecycle.finished == [(DOC, announce)]
    assert dispatcher.pending == 0


# -- the publish fast path -------------------------------------------------------------------


async def test_dispatch_publish_announces_from_the_delivery_then_syncs() -> None:
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle)
    delivered = payload("entry.publish")

    assert dispatcher.dispatch(delivered) == "queued"
    await dispatcher.drain(5)

    assert lifecycle.announced == [delivered.entry]
    assert lifecycle.order == ["announced", "sync"]
    assert lifecycle.finished == [(DOC, True)]


@pytest.mark.parametrize("event", ["entry.create", "entry.update"])
async def test_dispatch_other_events_are_not_announced_from_the_delivery(event: str) -> None:
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle)

    dispatcher.dispatch(payload(event))
    await dispatcher.drain(5)

    assert lifecycle.delivered == []


async def test_dispatch_rest_publish_deliveries_settle_into_one_sync_after_the_announcement() -> None:
    # A REST publish: Strapi sends entry.create, then entry.publish a moment later.
    lifecycle = FakeLifecycle()
    dispatcher = WebhookDispatcher(
        make_settings(),
        lifecycle,  # type: ignore[arg-type]
        FakeUsers(),  # type: ignore[arg-type]
        settle=0.2,
    )

    outcomes = [dispatcher.dispatch(payload("entry.create"))]
    await asyncio.sleep(0.05)
    outcomes.append(dispatcher.dispatch(payload("entry.publish")))
    await asyncio.sleep(0.01)
    announced_at_once, synced_at_once = len(lifecycle.announced), len(lifecycle.syncs)
    await dispatcher.drain(5)

    assert outcomes == ["queued", "coalesced"]
    assert (announced_at_once, synced_at_once) == (1, 0)
    assert lifecycle.finished == [(DOC, True)]  # one pass re-reads Strapi, not two


async def test_dispatch_fast_path_does_not_wait_for_a_running_sync() -> None:
    # Strapi sends entry.create, then entry.publish: the create's sync is busy re-reading.
    lifecycle = FakeLifecycle()
    lifecycle.gate = asyncio.Event()
    dispatcher = make_dispatcher(lifecycle)

    dispatcher.dispatch(payload("entry.create"))
    await asyncio.sleep(0.01)
    dispatcher.dispatch(payload("entry.publish"))
    await asyncio.sleep(0.01)
    announced_meanwhile = len(lifecycle.announced)
    lifecycle.gate.set()
    await dispatcher.drain(5)

    assert announced_meanwhile == 1
    assert lifecycle.finished == [(DOC, False), (DOC, True)]


async def test_dispatch_sync_of_a_publish_waits_for_its_fast_path() -> None:
    lifecycle = FakeLifecycle()
    lifecycle.announce_gate = asyncio.Event()
    dispatcher = make_dispatcher(lifecycle)

    dispatcher.dispatch(payload("entry.publish"))
    await asyncio.sleep(0.02)
    synced_meanwhile = list(lifecycle.syncs)
    lifecycle.announce_gate.set()
    await dispatcher.drain(5)

    assert synced_meanwhile == []
    assert lifecycle.order == ["announced", "sync"]


async def test_dispatch_removal_delivered_after_a_publish_comes_after_its_fast_path() -> None:
    lifecycle = FakeLifecycle()
    lifecycle.announce_gate = asyncio.Event()
    dispatcher = make_dispatcher(lifecycle)

    dispatcher.dispatch(payload("entry.publish"))
    dispatcher.dispatch(payload("entry.unpublish", like="entry.delete"))
    await asyncio.sleep(0.02)
    removed_meanwhile = list(lifecycle.removals)
    lifecycle.announce_gate.set()
    await dispatcher.drain(5)

    assert removed_meanwhile == []
    assert lifecycle.order[:2] == ["announced", "removed"]


async def test_dispatch_publish_delivered_while_a_removal_is_queued_is_left_to_the_sync() -> None:
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle)

    dispatcher.dispatch(payload("entry.unpublish", like="entry.delete"))
    dispatcher.dispatch(payload("entry.publish"))
    await dispatcher.drain(5)

    assert lifecycle.delivered == []
    assert lifecycle.order == ["removed", "sync"]
    assert lifecycle.finished == [(DOC, True)]


async def test_dispatch_publish_delivered_while_a_removal_runs_is_left_to_the_sync() -> None:
    lifecycle = FakeLifecycle()
    release = asyncio.Event()
    original = lifecycle.removed

    async def slow_removal(document_id: str) -> None:
        await release.wait()
        await original(document_id)

    lifecycle.removed = slow_removal  # type: ignore[method-assign]
    dispatcher = make_dispatcher(lifecycle)

    dispatcher.dispatch(payload("entry.unpublish", like="entry.delete"))
    await asyncio.sleep(0.01)  # the removal is running
    dispatcher.dispatch(payload("entry.publish"))
    release.set()
    await dispatcher.drain(5)

    assert lifecycle.delivered == []
    assert lifecycle.order == ["removed", "sync"]


async def test_dispatch_removal_delivery_names_the_removed_row() -> None:
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle)
    unpublish = payload("entry.unpublish", like="entry.delete")
    assert unpublish.entry is not None

    dispatcher.dispatch(unpublish)
    await dispatcher.drain(5)

    assert lifecycle.removals_delivered == [(DOC, unpublish.entry["id"])]


async def test_dispatch_fast_path_failing_on_redis_leaves_the_announcement_to_the_sync(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lifecycle = FakeLifecycle()

    async def redis_down(entry: dict[str, Any]) -> bool:
        raise SharedStateUnavailable("Redis claim failed: connection refused")

    lifecycle.announce_delivered = redis_down  # type: ignore[method-assign]
    dispatcher = make_dispatcher(lifecycle)

    with caplog.at_level(logging.WARNING, logger="webhooks.dispatch"):
        dispatcher.dispatch(payload("entry.publish"))
        await dispatcher.drain(5)

    assert lifecycle.finished == [(DOC, True)]
    assert messages(caplog, logging.WARNING) == [
        f"notification {DOC}: Redis unavailable, not announced from its webhook:"
        " Redis claim failed: connection refused"
    ]


# -- one notification at a time --------------------------------------------------------------


async def test_dispatch_burst_before_work_starts_is_one_sync_that_announces() -> None:
    # A REST publish gives entry.update then entry.publish, at the same moment.
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle)

    outcomes = [
        dispatcher.dispatch(payload("entry.update")),
        dispatcher.dispatch(payload("entry.publish")),
        dispatcher.dispatch(payload("entry.update")),
    ]
    await dispatcher.drain(5)

    assert outcomes == ["queued", "coalesced", "coalesced"]
    assert lifecycle.finished == [(DOC, True)]


async def test_dispatch_deliveries_while_one_waits_are_coalesced() -> None:
    lifecycle = FakeLifecycle()
    lifecycle.gate = asyncio.Event()
    dispatcher = make_dispatcher(lifecycle)

    first = dispatcher.dispatch(payload("entry.create"))
    await asyncio.sleep(0.01)  # the first sync is now running
    later = [
        dispatcher.dispatch(payload("entry.update")),
        dispatcher.dispatch(payload("entry.publish")),
        dispatcher.dispatch(payload("entry.update")),
    ]
    await asyncio.sleep(0.01)
    running_together = len(lifecycle.syncs)
    lifecycle.gate.set()
    await dispatcher.drain(5)

    assert (first, later) == ("queued", ["queued", "coalesced", "coalesced"])
    assert running_together == 1  # the second waits for the first: one notification at a time
    assert lifecycle.finished == [(DOC, False), (DOC, True)]


async def test_dispatch_different_notifications_do_not_wait_for_each_other() -> None:
    lifecycle = FakeLifecycle()
    lifecycle.gate = asyncio.Event()
    dispatcher = make_dispatcher(lifecycle)

    outcomes = [
        dispatcher.dispatch(for_document("entry.publish", DOC)),
        dispatcher.dispatch(for_document("entry.publish", OTHER_DOC)),
    ]
    await asyncio.sleep(0.01)
    running_together = sorted(lifecycle.syncs)
    lifecycle.gate.set()
    await dispatcher.drain(5)

    assert outcomes == ["queued", "queued"]
    assert running_together == sorted([(DOC, True), (OTHER_DOC, True)])


async def test_dispatch_delivery_after_a_sync_finished_runs_again() -> None:
    lifecycle = FakeLifecycle()
    dispatcher = make_dispatcher(lifecycle)

    dispatcher.dispatch(payload("entry.publish"))
    await dispatcher.drain(5)
    outcome = dispatcher.dispatch(payload("entry.update"))
    await dispatcher.drain(5)

    assert outcome == "queued"
    assert lifecycle.finished == [(DOC, True), (DOC, False)]


# -- failures --------------------------------------------------------------------------------


async def test_dispatch_retries_while_strapi_is_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    lifecycle = FakeLifecycle(StrapiUnavailable("timed out", method="GET", path="/api/notifications/x"))
    dispatcher = make_dispatcher(lifecycle)

    with caplog.at_level(logging.WARNING, logger="webhooks.dispatch"):
        dispatcher.dispatch(payload("entry.publish"))
        await dispatcher.drain(5)

    assert lifecycle.syncs == [(DOC, True), (DOC, True)]
    assert lifecycle.finished == [(DOC, True)]
    assert messages(caplog, logging.WARNING) == [
        f"notification {DOC}: Strapi unavailable (try 1): timed out (GET /api/notifications/x)"
    ]
    assert messages(caplog, logging.ERROR) == []


@pytest.mark.parametrize(
    "error",
    [
        StrapiError("Forbidden", status=403, method="PUT"),
        StrapiNotFound("Not Found", status=404, method="GET"),
    ],
)
async def test_dispatch_does_not_retry_a_refusal(
    caplog: pytest.LogCaptureFixture, error: StrapiError
) -> None:
    lifecycle = FakeLifecycle(error)
    dispatcher = make_dispatcher(lifecycle)

    with caplog.at_level(logging.WARNING, logger="webhooks.dispatch"):
        dispatcher.dispatch(payload("entry.update"))
        await dispatcher.drain(5)

    assert lifecycle.syncs == [(DOC, False)]
    assert messages(caplog, logging.ERROR) == [f"notification {DOC}: Strapi refused: {error}"]


async def test_dispatch_gives_up_after_the_last_retry_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    down = StrapiUnavailable("unreachable: ConnectError")
    lifecycle = FakeLifecycle(down, down, down, None)
    dispatcher = make_dispatcher(lifecycle)

    with caplog.at_level(logging.WARNING, logger="webhooks.dispatch"):
        dispatcher.dispatch(payload("entry.publish"))
        await dispatcher.drain(5)

    assert len(lifecycle.syncs) == 3  # the first try and the two retries
    assert lifecycle.finished == []
    assert len(messages(caplog, logging.WARNING)) == 3
    assert messages(caplog, logging.ERROR) == [f"notification {DOC}: gave up after 3 tries"]


async def test_dispatch_logs_an_unexpected_failure_and_keeps_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lifecycle = FakeLifecycle(KeyError("notification_users"))
    dispatcher = make_dispatcher(lifecycle)

    with caplog.at_level(logging.ERROR, logger="webhooks.dispatch"):
        dispatcher.dispatch(payload("entry.publish"))
        await dispatcher.drain(5)
        outcome = dispatcher.dispatch(payload("entry.publish"))
        await dispatcher.drain(5)

    (record,) = [r for r in caplog.records if r.name == "webhooks.dispatch"]
    assert record.getMessage() == f"notification {DOC}: unexpected failure"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], KeyError)
    assert outcome == "queued"
    assert lifecycle.finished == [(DOC, True)]


# -- drain -----------------------------------------------------------------------------------


async def test_dispatch_drain_waits_for_work_in_progress(caplog: pytest.LogCaptureFixture) -> None:
    lifecycle = FakeLifecycle()
    lifecycle.gate = asyncio.Event()
    dispatcher = make_dispatcher(lifecycle)
    dispatcher.dispatch(payload("entry.publish"))
    asyncio.get_running_loop().call_later(0.05, lifecycle.gate.set)

    with caplog.at_level(logging.WARNING, logger="webhooks.dispatch"):
        await dispatcher.drain(5)

    assert lifecycle.finished == [(DOC, True)]
    assert dispatcher.pending == 0
    assert messages(caplog, logging.ERROR) == []


async def test_dispatch_drain_cancels_work_beyond_the_grace_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lifecycle = FakeLifecycle()
    lifecycle.gate = asyncio.Event()  # never set: Strapi hangs
    dispatcher = make_dispatcher(lifecycle)
    dispatcher.dispatch(for_document("entry.publish", DOC))
    dispatcher.dispatch(for_document("entry.publish", OTHER_DOC))

    with caplog.at_level(logging.WARNING, logger="webhooks.dispatch"):
        await asyncio.wait_for(dispatcher.drain(0.05), timeout=2)

    assert lifecycle.finished == []
    assert dispatcher.pending == 0
    assert messages(caplog, logging.ERROR) == ["stopped with 2 notification jobs unfinished"]
