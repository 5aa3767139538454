"""From an accepted webhook to background work.

Strapi waits at most 10 s for a webhook and never retries, so the receiver answers at once and the
work runs here: one notification at a time (per documentId), deliveries that arrive while one is
waiting are folded into it, and a Strapi outage is retried with backoff before it is logged as lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

from adapter.auth import UserDirectory
from adapter.errors import StrapiError, StrapiUnavailable
from adapter.locks import KeyedLock
from adapter.settings import Settings
from webhooks.lifecycle import NotificationLifecycle
from webhooks.models import WebhookPayload

__all__ = ["DEFAULT_RETRY_DELAYS", "WebhookDispatcher"]

logger = logging.getLogger(__name__)

DEFAULT_RETRY_DELAYS = (0.5, 2.0, 5.0, 10.0)
PUBLISH_EVENT = "entry.publish"
DELETE_EVENT = "entry.delete"
SYNC_EVENTS = frozenset({"entry.create", "entry.update", PUBLISH_EVENT})


class WebhookDispatcher:
    """Routes each accepted delivery; owns the background tasks it starts."""

    def __init__(
        self,
        settings: Settings,
        lifecycle: NotificationLifecycle,
        users: UserDirectory,
        *,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    ):
        self._settings = settings
        self._lifecycle = lifecycle
        self._users = users
        self._retry_delays = tuple(retry_delays)
        self._queued: dict[str, bool] = {}
        self._locks = KeyedLock()
        self._tasks: set[asyncio.Task[None]] = set()

    def dispatch(self, payload: WebhookPayload) -> str:
        """Start what the delivery calls for; return what was done, for the response and logs."""
        if payload.uid == self._settings.user_uid:
            return self._user_changed(payload)
        if payload.uid != self._settings.notification_uid:
            logger.debug("ignored webhook %s for %s", payload.event, payload.uid)
            return "ignored"
        ref = payload.entry_ref()
        if ref is None:
            logger.warning("webhook %s for a notification came with no entry", payload.event)
            return "no_entry"
        if payload.event == DELETE_EVENT:
            self._lifecycle.forget(ref.document_id)
            return "forgotten"
        if payload.event not in SYNC_EVENTS:
            return "ignored"
        return self._schedule(ref.document_id, announce=payload.event == PUBLISH_EVENT)

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

    def _schedule(self, document_id: str, *, announce: bool) -> str:
        if document_id in self._queued:
            self._queued[document_id] |= announce
            return "coalesced"
        self._queued[document_id] = announce
        task = asyncio.create_task(self._run(document_id), name=f"notification:{document_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return "queued"

    async def _run(self, document_id: str) -> None:
        claimed = False
        try:
            async with self._locks(document_id):
                announce, claimed = self._queued.pop(document_id), True
                await self._sync_with_retries(document_id, announce)
        finally:
            if not claimed:  # cancelled while waiting: later deliveries must not fold into it
                self._queued.pop(document_id, None)

    async def _sync_with_retries(self, document_id: str, announce: bool) -> None:
        for attempt, delay in enumerate((0.0, *self._retry_delays)):
            if delay:
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
            try:
                await self._lifecycle.sync(document_id, announce=announce)
                return
            except StrapiUnavailable as exc:
                logger.warning(
                    "notification %s: Strapi unavailable (try %d): %s", document_id, attempt + 1, exc
                )
            except StrapiError as exc:
                logger.error("notification %s: Strapi refused: %s", document_id, exc)
                return
            except Exception:
                logger.exception("notification %s: unexpected failure", document_id)
                return
        logger.error("notification %s: gave up after %d tries", document_id, len(self._retry_delays) + 1)
