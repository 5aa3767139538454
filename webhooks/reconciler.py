"""The reconciler: what webhooks missed, found by asking Strapi.

Strapi sends each webhook once, with no retry; one can be lost (the sidecar was down, the
network dropped it, Strapi sent `entry: null`). At start-up and then every
`RECONCILE_INTERVAL` seconds, the reconciler lists notifications (drafts and published) updated
since it last looked and hands every one that changed after the version the sidecar last
processed to the dispatcher, exactly as a webhook would have:
- at start-up, over the last `RECONCILE_LOOKBACK` seconds, without announcing: a notification
  published while the sidecar was down gets its "all users" selection, and reaches its audience
  through catch-up when they connect, rather than as a second live notification;
- afterwards, announcing: a lost publish webhook still reaches the connected audience (the
  "told" ledger keeps anyone from hearing twice).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Protocol

from adapter.errors import StrapiError
from adapter.settings import Settings
from adapter.strapi import StrapiClient

__all__ = ["Reconciler"]

logger = logging.getLogger(__name__)

PAGE_SIZE = 100
OVERLAP = timedelta(seconds=5)  # webhooks and commits race the clock: look back a little


class Versions(Protocol):
    def processed_version(self, document_id: str) -> str | None: ...


class Scheduler(Protocol):
    def reconcile(self, document_id: str, *, announce: bool) -> str: ...


class Reconciler:
    """Periodically compares Strapi's notifications with what the sidecar has processed."""

    def __init__(self, strapi: StrapiClient, settings: Settings, versions: Versions, scheduler: Scheduler):
        self._strapi = strapi
        self._settings = settings
        self._versions = versions
        self._scheduler = scheduler
        self._since: str | None = None

    async def run(self) -> None:
        """Start-up pass, then one pass per interval, until cancelled."""
        lookback = timedelta(seconds=self._settings.reconcile_lookback)
        await self._pass_logged(_iso(datetime.now(UTC) - lookback), announce=False)
        interval = self._settings.reconcile_interval
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            await self._pass_logged(self._since, announce=True)

    async def pass_once(self, since: str | None, *, announce: bool) -> int:
        """One pass: schedule every notification updated after `since` not processed since."""
        latest = since
        scheduled = 0
        for status in ("draft", "published"):
            async for document_id, updated_at in self._updated_since(since, status):
                latest = max(latest or updated_at, updated_at)
                processed = self._versions.processed_version(document_id)
                if processed is not None and processed >= updated_at:
                    continue
                self._scheduler.reconcile(document_id, announce=announce and status == "published")
                scheduled += 1
        if latest is not None:
            self._since = _iso(_parse(latest) - OVERLAP)
        return scheduled

    async def _pass_logged(self, since: str | None, *, announce: bool) -> None:
        try:
            scheduled = await self.pass_once(since, announce=announce)
        except StrapiError as exc:
            logger.warning("reconciler: cannot list notifications: %s", exc)
            return
        except Exception:
            logger.exception("reconciler: unexpected failure")
            return
        if scheduled:
            logger.info("reconciler: %d notifications changed without a webhook; processing them", scheduled)

    async def _updated_since(self, since: str | None, status: str) -> AsyncIterator[tuple[str, str]]:
        page = 1
        while True:
            found = await self._strapi.find(
                self._settings.notification_collection,
                filters={"updatedAt": {"$gt": since}} if since else None,
                fields=["documentId", "updatedAt"],
                sort=["updatedAt:asc", "id:asc"],
                page=page,
                page_size=PAGE_SIZE,
                status=status,
            )
            for item in found.items:
                yield str(item["documentId"]), str(item["updatedAt"])
            if page >= found.page_count:
                return
            page += 1


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
