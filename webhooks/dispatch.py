"""From an accepted webhook to background work.

Strapi waits at most 10 s for a webhook and never retries, so the receiver answers at once and the
work runs here: one notification at a time (per documentId), starting a moment (`settle`) after
its first delivery; deliveries that arrive while one is waiting are folded into it, and a Strapi
outage is retried with backoff before it is logged as lost.

An `entry.publish` delivery is also announced at once from its entry (the fast path, see
`webhooks/lifecycle.py`), beside that serialized work rather than queued behind it: it only claims
users in the shared "told" ledger and emits, it never writes to Strapi. Arrival order is kept for
what could contradict it: a removal delivered after it waits for it before telling anyone the
notification is gone, it is not taken while a removal of the same notification is queued or
running here (the serialized work then decides), and the sync the same delivery schedules waits
for it, so its re-read can correct it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from adapter.auth import UserDirectory
from adapter.collector import collector
from adapter.errors import SharedStateUnavailable, StrapiError, StrapiUnavailable
from adapter.locks import KeyedLock, LockFactory
from adapter.settings import Settings
from webhooks.lifecycle import NotificationLifecycle
from webhooks.models import WebhookPayload

__all__ = ["DEFAULT_RETRY_DELAYS", "DEFAULT_SETTLE_SECONDS", "Pending", "WebhookDispatcher"]

logger = logging.getLogger(__name__)

SYNC_CONCURRENCY = 8
DEFAULT_RETRY_DELAYS = (0.5, 2.0, 5.0, 10.0)
# A notification's work starts this long after its first delivery: Strapi sends a REST publish's
# deliveries (entry.create or entry.update, then entry.publish) together, so they fold into one
# pass, whose re-reads no longer compete with the publication's fan-out (announced at once from
# the publish delivery) nor with the Strapi still busy with that publication.
DEFAULT_SETTLE_SECONDS = 0.25
PUBLISH_EVENT = "entry.publish"
DELETE_EVENT = "entry.delete"
SYNC_EVENTS = frozenset({"entry.create", "entry.update", PUBLISH_EVENT})
REMOVAL_EVENTS = frozenset({DELETE_EVENT, "entry.unpublish"})


@dataclass(slots=True)
class Pending:
    """What a notification's next run must do; deliveries that arrive meanwhile fold in."""

    sync: bool = False
    announce: bool = False
    remove: bool = False

    def merge(self, other: Pending) -> None:
        self.sync |= other.sync
        self.announce |= other.announce
        self.remove |= other.remove


class WebhookDispatcher:
    """Routes each accepted delivery; owns the background tasks it starts."""

    def __init__(
        self,
        settings: Settings,
        lifecycle: NotificationLifecycle,
        users: UserDirectory,
        *,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        settle: float = DEFAULT_SETTLE_SECONDS,
        on_change: Callable[[str], None] | None = None,
        locks: LockFactory | None = None,
    ):
        self._on_change = on_change
        self._settings = settings
        self._lifecycle = lifecycle
        self._users = users
        self._retry_delays = tuple(retry_delays)
        self._settle = settle
        self._queued: dict[str, Pending] = {}
        self._locks: LockFactory = locks if locks is not None else KeyedLock()  # across processes with Redis
        self._tasks: set[asyncio.Task[None]] = set()
        self._fast: dict[str, set[asyncio.Task[None]]] = {}  # fast-path announcements in flight
        self._removing: set[str] = set()  # removals running here
        # Notifications processed at once: a burst of webhooks (a bulk import, a read-all's
        # READNOTIFICATIONs) must queue here rather than time out against Strapi.
        self._gate = asyncio.Semaphore(SYNC_CONCURRENCY)

    def dispatch(self, payload: WebhookPayload) -> str:
        """Start what the delivery calls for; return what was done, for the response and logs."""
        if payload.uid == self._settings.user_uid:
            return self._user_changed(payload)
        if payload.uid == self._settings.read_uid:
            return self._reads_changed(payload)
        if payload.uid != self._settings.notification_uid:
            logger.debug("ignored webhook %s for %s", payload.event, payload.uid)
            return "ignored"
        ref = payload.entry_ref()
        if ref is None:
            logger.warning("webhook %s for a notification came with no entry", payload.event)
            return "no_entry"
        if self._on_change is not None:
            self._on_change(ref.document_id)  # cached views of this notification are stale now
        if payload.event == DELETE_EVENT and ref.published_at is None:
            self._lifecycle.forget(ref.document_id)  # the draft row; the published one says more
            return "forgotten"
        if payload.event in REMOVAL_EVENTS:
            self._lifecycle.removal_delivered(ref.document_id, ref.id)
            return self._schedule(ref.document_id, Pending(remove=True))
        if payload.event not in SYNC_EVENTS:
            return "ignored"
        if payload.event == PUBLISH_EVENT and payload.entry is not None:
            self._announce_now(ref.document_id, payload.entry)
        return self._schedule(ref.document_id, Pending(sync=True, announce=payload.event == PUBLISH_EVENT))

    def reconcile(self, document_id: str, *, announce: bool) -> str:
        """Process a notification the reconciler found changed, as its webhook would have."""
        return self._schedule(document_id, Pending(sync=True, announce=announce))

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self, grace: float) -> None:
        """Let queued work finish (up to `grace` s); what cannot is cancelled and logged."""
        if not self._tasks:
            return
        _, unfinished = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in unfinished:
            task.cancel()
        if unfinished:
            logger.error("stopped with %d notification jobs unfinished", len(unfinished))
            await asyncio.gather(*unfinished, return_exceptions=True)

    def _user_changed(self, payload: WebhookPayload) -> str:
        user_id = (payload.entry or {}).get("id")
        if isinstance(user_id, int):
            self._users.forget(user_id)
        return "user"

    def _reads_changed(self, payload: WebhookPayload) -> str:
        entry = payload.entry or {}
        if payload.event not in SYNC_EVENTS or not entry:
            return "ignored"
        target = entry.get(self._settings.read_notification_field)
        users = entry.get(self._settings.read_users_field)
        if not isinstance(target, dict) or not isinstance(target.get("documentId"), str):
            return "ignored"
        readers = {int(u["id"]) for u in users or [] if isinstance(u, dict) and isinstance(u.get("id"), int)}
        self._spawn(self._lifecycle.reads_recorded(target["documentId"], readers), "reads")
        return "reads"

    def _announce_now(self, document_id: str, entry: dict[str, Any]) -> None:
        """The fast path, unless a removal of this notification came first and is not done."""
        queued = self._queued.get(document_id)
        if document_id in self._removing or (queued is not None and queued.remove):
            logger.info(
                "notification %s: publish delivered during its removal, left to the sync", document_id
            )
            return
        task = asyncio.create_task(
            self._guarded(self._announce_delivered(document_id, entry), f"announce:{document_id}"),
            name=f"announce:{document_id}",
        )
        collector.acquire()  # no collector pause until it is delivered (released in `_fast_done`)
        self._tasks.add(task)
        self._fast.setdefault(document_id, set()).add(task)
        task.add_done_callback(lambda done: self._fast_done(document_id, done))

    async def _announce_delivered(self, document_id: str, entry: dict[str, Any]) -> None:
        try:
            await self._lifecycle.announce_delivered(entry)
        except SharedStateUnavailable as exc:  # the sync announces it once Redis is back
            logger.warning(
                "notification %s: Redis unavailable, not announced from its webhook: %s", document_id, exc
            )

    def _fast_done(self, document_id: str, task: asyncio.Task[None]) -> None:
        collector.release()
        self._tasks.discard(task)
        running = self._fast.get(document_id)
        if running is not None:
            running.discard(task)
            if not running:
                del self._fast[document_id]

    async def _fast_finished(self, document_id: str) -> None:
        """Wait for the fast-path announcements of this notification started before now."""
        running = self._fast.get(document_id)
        if running:
            await asyncio.wait(set(running))

    def _schedule(self, document_id: str, wanted: Pending) -> str:
        queued = self._queued.get(document_id)
        if queued is not None:
            queued.merge(wanted)
            return "coalesced"
        self._queued[document_id] = wanted
        self._spawn(self._run(document_id), f"notification:{document_id}")
        return "queued"

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(self._guarded(work, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(work: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await work
        except Exception:
            logger.exception("%s: unexpected failure", name)

    async def _run(self, document_id: str) -> None:
        claimed = False
        try:
            if self._settle:
                await asyncio.sleep(self._settle)  # deliveries meanwhile fold into this one
            async with self._locks(document_id):
                wanted, claimed = self._queued.pop(document_id), True
                if wanted.remove:  # publish deliveries from now on come after it: no fast path
                    self._removing.add(document_id)
                try:
                    # Fast-path announcements delivered before this work come before it.
                    await self._fast_finished(document_id)
                    if wanted.remove:
                        await self._lifecycle.removed(document_id)
                finally:
                    self._removing.discard(document_id)
                if wanted.sync:
                    await self._sync_with_retries(document_id, wanted.announce)
        finally:
            if not claimed:  # cancelled while waiting: later deliveries must not fold into it
                self._queued.pop(document_id, None)

    async def _sync_with_retries(self, document_id: str, announce: bool) -> None:
        for attempt, delay in enumerate((0.0, *self._retry_delays)):
            if delay:
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
            try:
                async with self._gate:
                    await self._lifecycle.sync(document_id, announce=announce)
                return
            except StrapiUnavailable as exc:
                logger.warning(
                    "notification %s: Strapi unavailable (try %d): %s", document_id, attempt + 1, exc
                )
            except SharedStateUnavailable as exc:
                logger.warning(
                    "notification %s: Redis unavailable (try %d): %s", document_id, attempt + 1, exc
                )
            except StrapiError as exc:
                logger.error("notification %s: Strapi refused: %s", document_id, exc)
                return
            except Exception:
                logger.exception("notification %s: unexpected failure", document_id)
                return
        logger.error("notification %s: gave up after %d tries", document_id, len(self._retry_delays) + 1)
