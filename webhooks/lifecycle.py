"""What the seed's Notification lifecycles did, re-thought for webhooks.

Webhooks arrive after the write, possibly out of order, possibly twice, and the entry they carry
may already be stale. So a webhook is only a trigger: each notification's current state is re-read
from Strapi by `documentId`, and work for one notification runs one at a time.

For each notification that changed (`sync`):
1. "All users" selection, on the draft (the version editors edit):
   - `allUsers` on but not everyone selected: if nobody was removed since the last state seen,
     connect the missing users (in chunks); if someone was removed, turn `allUsers` off;
   - `allUsers` off but everyone selected: turn it on, so the flag reads "all users" exactly when
     every user is selected, as in the seed.
   The sidecar publishes its own write only when the draft holds nothing the editor has not
   published (same content as the published version); otherwise it touches the draft alone.
2. Announce, when it was published: emit `notificacion` to every user of its audience who has not
   been told about this notification yet (a bounded ledger), in one emit call.
Consistent states produce no write, so the sidecar's own writes do not start a webhook loop.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from adapter.notifications import KnownIds, Ledger, audience_ids, wire_payload
from adapter.settings import Settings
from adapter.shared import MemoryLedger, SharedLedger
from adapter.strapi import Document, StrapiClient

__all__ = ["NotificationLifecycle", "Notifier", "SelectionFix", "decide_selection"]

logger = logging.getLogger(__name__)

CONTENT_FIELDS = ("message", "url", "date", "allUsers")
PUBLISH_EVENTS = frozenset({"entry.publish"})
REMOVAL_EVENTS = frozenset({"entry.delete"})


class Notifier(Protocol):
    def notify(self, user_ids: Iterable[int], payload: dict[str, Any]) -> Awaitable[int]: ...

    def removed(self, document_id: str, user_ids: Iterable[int] | None) -> Awaitable[None]: ...

    def read_elsewhere(self, document_id: str, user_ids: Iterable[int]) -> Awaitable[None]: ...


@dataclass(frozen=True, slots=True)
class SelectionFix:
    """A change to the "all users" selection: connect the missing users, or set the flag."""

    connect_missing: bool = False
    all_users: bool | None = None


def decide_selection(
    all_users: bool, selected: set[int], previous: set[int] | None, total: int
) -> SelectionFix | None:
    """The seed's "all users" rules, given the last selection seen (None: never seen)."""
    if all_users and len(selected) < total:
        removed = previous - selected if previous is not None else set()
        if removed:
            return SelectionFix(all_users=False)
        return SelectionFix(connect_missing=True)
    if not all_users and total > 0 and len(selected) >= total:
        return SelectionFix(all_users=True)
    return None


class NotificationLifecycle:
    """Keeps notifications' audiences right and tells each user once."""

    def __init__(
        self,
        strapi: StrapiClient,
        settings: Settings,
        notifier: Notifier,
        known_ids: KnownIds,
        readers: Ledger | None = None,
        *,
        told: SharedLedger | None = None,
        seen: SharedLedger | None = None,
        announced: SharedLedger | None = None,
    ):
        self._strapi = strapi
        self._settings = settings
        self._notifier = notifier
        self._known_ids = known_ids
        # In this process by default; shared by every process through Redis when scaled out.
        size = settings.emitted_ledger_size
        self._seen = seen if seen is not None else MemoryLedger(size)  # last selection seen
        self._told = told if told is not None else MemoryLedger(size)  # users already notified
        self._announced = announced if announced is not None else MemoryLedger(size)  # published ids
        self._readers = readers if readers is not None else Ledger(settings.emitted_ledger_size)
        self._versions: OrderedDict[str, str] = OrderedDict()  # documentId -> updatedAt processed

    def processed_version(self, document_id: str) -> str | None:
        """The newest `updatedAt` (draft or published) this process has synced, if any."""
        return self._versions.get(document_id)

    def forget(self, document_id: str) -> None:
        """A draft row was deleted: drop the remembered selection."""
        self._seen.forget(document_id)

    async def removed(self, document_id: str) -> None:
        """The published notification was deleted or unpublished: tell who was told of it.

        When nobody here remembers who that was (a restart), every socket is told: a
        documentId a client does not know is simply ignored.
        """
        told = await self._told.pop(document_id)
        self._seen.forget(document_id)
        await self._notifier.removed(document_id, told)

    async def reads_recorded(self, document_id: str, user_ids: set[int]) -> None:
        """A READNOTIFICATION changed in Strapi: echo reads this process did not record itself."""
        new = user_ids - (self._readers.get(document_id) or set())
        if new:
            self._readers.add(document_id, new)
            await self._notifier.read_elsewhere(document_id, new)

    async def sync(self, document_id: str, *, announce: bool) -> None:
        """Bring one notification's selection in line, then announce it if `announce`."""
        draft, published = await self._read(document_id)
        basis = draft or published
        if basis is None:
            logger.debug("notification %s no longer exists", document_id)
            return
        total = await self._strapi.count_users()
        wrote = await self._fix_selection(document_id, basis, published, total)
        if wrote:
            draft, published = await self._read(document_id)
        if published is not None and draft is not None:
            republished = await self._complete_published(draft, published, total)
            if republished is not None:
                published, announce = republished, True
        if published is not None and announce:
            await self._announce(published)

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, document_id: str) -> tuple[Document | None, Document | None]:
        collection = self._settings.notification_collection
        populate = {self._settings.audience_field: {"fields": ["id"]}, "document": True}
        draft = await self._strapi.find_one(collection, document_id, populate=populate, status="draft")
        published = await self._strapi.find_one(
            collection, document_id, populate=populate, status="published"
        )
        versions = [str(v["updatedAt"]) for v in (draft, published) if v and v.get("updatedAt")]
        if versions:
            self._versions[document_id] = max(versions)
            self._versions.move_to_end(document_id)
            while len(self._versions) > self._settings.emitted_ledger_size:
                self._versions.popitem(last=False)
        return draft, published

    # -- all-users selection ---------------------------------------------------------------

    async def _fix_selection(
        self, document_id: str, basis: Document, published: Document | None, total: int
    ) -> bool:
        field = self._settings.audience_field
        selected = audience_ids(basis, field)
        fix = decide_selection(
            bool(basis.get("allUsers")), selected, await self._seen.get(document_id), total
        )
        if fix is None:
            await self._seen.put(document_id, selected)
            return False
        if fix.connect_missing:
            missing = set(await self._strapi.all_user_ids()) - selected
            publish = published is not None and _same_content(basis, published)
            await self._connect(document_id, sorted(missing), publish=publish)
            await self._seen.put(document_id, selected | missing)
            logger.info("notification %s: selected %d more users (all users)", document_id, len(missing))
        else:
            publish = published is not None and _same_content(basis, published, field)
            data = {"allUsers": fix.all_users}
            await self._write(document_id, data, publish=publish)
            await self._seen.put(document_id, selected)
            logger.info("notification %s: allUsers set to %s", document_id, fix.all_users)
        return True

    async def _connect(self, document_id: str, user_ids: list[int], *, publish: bool) -> None:
        size = self._settings.connect_chunk_size
        chunks = [user_ids[i : i + size] for i in range(0, len(user_ids), size)] or [[]]
        field = self._settings.audience_field
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            data: dict[str, Any] = {field: {"connect": [{"id": uid} for uid in chunk]}}
            if last:
                data["allUsers"] = True
            await self._write(document_id, data, publish=publish and last)

    async def _complete_published(self, draft: Document, published: Document, total: int) -> Document | None:
        """Publish a draft whose only difference is the sidecar's own selection write.

        Covers the race where Strapi published the draft before the sidecar's connect landed.
        """
        field = self._settings.audience_field
        if not (published.get("allUsers") and draft.get("allUsers")):
            return None
        draft_users, published_users = audience_ids(draft, field), audience_ids(published, field)
        if len(published_users) >= total or len(draft_users) < total:
            return None
        if not (published_users <= draft_users and _same_content(draft, published)):
            return None
        document_id = str(draft["documentId"])
        await self._write(document_id, {}, publish=True)
        logger.info("notification %s: republished with its full audience", document_id)
        return (await self._read(document_id))[1]

    async def _write(self, document_id: str, data: dict[str, Any], *, publish: bool) -> None:
        await self._strapi.update(
            self._settings.notification_collection,
            document_id,
            data,
            status=None if publish else "draft",
        )

    # -- announcing ------------------------------------------------------------------------

    async def _announce(self, published: Document) -> None:
        document_id = str(published["documentId"])
        if published.get("allUsers"):
            audience = set(await self._strapi.all_user_ids())
        else:
            audience = audience_ids(published, self._settings.audience_field)
        # A republish gives the published row a new id; a duplicate delivery, the reconciler or
        # the webhook of the sidecar's own publish bring back the row already announced.
        published_id = published.get("id")
        republished = isinstance(published_id, int) and bool(
            await self._announced.claim(document_id, {published_id})
        )
        if isinstance(published_id, int):
            self._known_ids.remember(published_id, document_id)
        if self._settings.renotify_on_republish and republished:
            fresh = audience
            await self._told.put(document_id, (await self._told.get(document_id) or set()) | audience)
        else:  # claimed in one step: a delivery handled by another process at once tells nobody twice
            fresh = await self._told.claim(document_id, audience)
        if not fresh:
            return
        rooms = await self._notifier.notify(fresh, wire_payload(published))
        logger.info("notification %s announced to %d users", document_id, rooms)


def _same_content(draft: Document, published: Document, *also: str) -> bool:
    """Whether publishing the draft would publish nothing but the sidecar's own change."""
    fields = (*CONTENT_FIELDS, *also)
    if any(_comparable(draft.get(name)) != _comparable(published.get(name)) for name in fields):
        return False
    return _media_id(draft.get("document")) == _media_id(published.get("document"))


def _comparable(value: object) -> object:
    if isinstance(value, list):
        return sorted(str(item.get("id")) if isinstance(item, dict) else str(item) for item in value)
    return value


def _media_id(value: object) -> object:
    return value.get("id") if isinstance(value, dict) else value
