"""What the seed's Notification lifecycles did, re-thought for webhooks.

Webhooks arrive after the write, possibly out of order, possibly twice, and the entry they carry
may already be stale. So a webhook is a trigger: each notification's current state is re-read
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

The fast path (`announce_delivered`): an `entry.publish` delivery carries the published row with
its audience populated, so its selected users are told straight from it, before the sync's
re-reads (slow against a Strapi busy with the publication it just made). The sync still runs
after it and corrects. The rules, so that the fast path never tells anyone twice nor leaves a
notification on screen that is not published:
- One ledger: the fast path claims users in the same "told" ledger as the sync (in Redis when
  scaled out), in one atomic step, so between them each user is told once. A duplicate delivery
  claims nobody.
- Only what was selected: an `allUsers` notification whose selection is still incomplete is
  announced to the users its entry selects; the sync completes the selection and tells the rest.
- Stale deliveries are not announced: a delivery whose published row id is older than the newest
  one this process has announced, or not newer than a published row whose removal (unpublish,
  delete) it has received. Strapi gives every publication a new, higher row id.
- Whatever got past that is corrected by the sync the same delivery schedules: it re-reads
  Strapi after the fast path finished, and when the notification is no longer published it
  tells those who were told `notification:removed` (`_retract`). A removal delivered while the
  fast path runs waits for it (see `webhooks/dispatch.py`), so the removal comes last.
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
        # The fast path's view, in this process: the newest published row id announced, the
        # newest published row id whose removal was delivered, and the rows announced from a
        # delivery that no sync has re-read since.
        self._newest_ids: OrderedDict[str, int] = OrderedDict()
        self._removed_ids: OrderedDict[str, int] = OrderedDict()
        self._unconfirmed: OrderedDict[str, int] = OrderedDict()

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
        self._unconfirmed.pop(document_id, None)  # nothing left for a sync to take back
        await self._notifier.removed(document_id, told)

    async def reads_recorded(self, document_id: str, user_ids: set[int]) -> None:
        """A READNOTIFICATION changed in Strapi: echo reads this process did not record itself."""
        new = user_ids - (self._readers.get(document_id) or set())
        if new:
            self._readers.add(document_id, new)
            await self._notifier.read_elsewhere(document_id, new)

    def removal_delivered(self, document_id: str, published_id: int | None) -> None:
        """A removal (unpublish, delete) of the published row `published_id` was delivered:
        a publish delivery for that row or an older one, arriving later, is stale."""
        if published_id is not None:
            _remember_max(self._removed_ids, document_id, published_id, self._settings.emitted_ledger_size)

    async def announce_delivered(self, entry: Document) -> bool:
        """The fast path: tell the users an `entry.publish` delivery selects, straight from it.

        Returns whether the entry was used (False: not a usable published row, or stale); the
        sync that follows the delivery does the rest either way.
        """
        document_id, published_id = entry.get("documentId"), entry.get("id")
        related = entry.get(self._settings.audience_field)
        if not (
            isinstance(document_id, str)
            and isinstance(published_id, int)
            and entry.get("publishedAt")
            and isinstance(related, list)
        ):
            return False
        newest = self._newest_ids.get(document_id)
        removed = self._removed_ids.get(document_id)
        if (newest is not None and published_id < newest) or (
            removed is not None and published_id <= removed
        ):
            logger.info(
                "notification %s: publish delivery for row %d is stale, left to the sync",
                document_id,
                published_id,
            )
            return False
        # Only the users it selects: an `allUsers` selection may still be incomplete.
        await self._announce(entry, audience_ids(entry, self._settings.audience_field))
        _remember(self._unconfirmed, document_id, published_id, self._settings.emitted_ledger_size)
        return True

    async def sync(self, document_id: str, *, announce: bool) -> None:
        """Bring one notification's selection in line, then announce it if `announce`."""
        unconfirmed = self._unconfirmed.get(document_id)  # announced from a delivery before this read
        draft, published = await self._read(document_id)
        if unconfirmed is not None:
            if self._unconfirmed.get(document_id) == unconfirmed:
                del self._unconfirmed[document_id]
            if published is None:
                await self._retract(document_id, unconfirmed)
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

    async def _retract(self, document_id: str, published_id: int) -> None:
        """Announced from a delivery, found unpublished by the re-read: take it back."""
        told = await self._told.pop(document_id)
        if not told:
            return
        await self._notifier.removed(document_id, told)
        logger.info(
            "notification %s: row %d was announced from its webhook but is no longer published;"
            " told %d users it is removed",
            document_id,
            published_id,
            len(told),
        )

    async def _announce(self, published: Document, audience: set[int] | None = None) -> None:
        document_id = str(published["documentId"])
        if audience is None and published.get("allUsers"):
            audience = set(await self._strapi.all_user_ids())
        elif audience is None:
            audience = audience_ids(published, self._settings.audience_field)
        # A republish gives the published row a new id; a duplicate delivery, the reconciler or
        # the webhook of the sidecar's own publish bring back the row already announced.
        published_id = published.get("id")
        republished = isinstance(published_id, int) and bool(
            await self._announced.claim(document_id, {published_id})
        )
        if isinstance(published_id, int):
            self._known_ids.remember(published_id, document_id)
            _remember_max(self._newest_ids, document_id, published_id, self._settings.emitted_ledger_size)
        if self._settings.renotify_on_republish and republished:
            fresh = audience
            await self._told.put(document_id, (await self._told.get(document_id) or set()) | audience)
        else:  # claimed in one step: a delivery handled by another process at once tells nobody twice
            fresh = await self._told.claim(document_id, audience)
        if not fresh:
            return
        rooms = await self._notifier.notify(fresh, wire_payload(published))
        logger.info("notification %s announced to %d users", document_id, rooms)


def _remember(ids: OrderedDict[str, int], key: str, value: int, capacity: int) -> None:
    ids[key] = value
    ids.move_to_end(key)
    while len(ids) > capacity:
        ids.popitem(last=False)


def _remember_max(ids: OrderedDict[str, int], key: str, value: int, capacity: int) -> None:
    known = ids.get(key)
    _remember(ids, key, value if known is None else max(known, value), capacity)


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
