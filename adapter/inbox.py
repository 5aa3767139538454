"""A user's inbox, computed from Strapi alone: unread notifications, newest first, and the count.

A notification is in a user's inbox when it is published and addressed to them (in the audience
relation, or `allUsers`); it is unread while no READNOTIFICATION of it holds the user. Strapi has
no inverse relation from notifications to their READNOTIFICATIONs, so a page of the inbox is two
requests: a page of addressed notifications, then which of those the user has read (a third
counts the reads when the page does not hold every addressed notification).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapter.errors import InvalidPayload, StrapiError
from adapter.notifications import KnownIds, audience_ids
from adapter.settings import Settings
from adapter.strapi import Document, StrapiClient

__all__ = ["Inbox", "InboxPage", "parse_cursor"]

logger = logging.getLogger(__name__)

SORT = ["publishedAt:desc", "documentId:desc"]
MAX_PAGE = 100  # Strapi's default api.rest.maxLimit
MAX_SCAN_PAGES = 10
# Users whose catch-ups are asked of Strapi together. The reads query names them twice and up
# to 100 documentIds: ~12.5 KB of URL with 25, under Node's 16 KB limit on a request's head.
CATCH_UP_BATCH = 25
CATCH_UP_BATCHES_IN_FLIGHT = 2
BATCH_REFUSED = {400, 413, 414, 431}  # Strapi (or a proxy) would not take the batched query
CURSOR = re.compile(r"(?P<at>[0-9T:.\-+Z]{10,40})~(?P<doc>[A-Za-z0-9][A-Za-z0-9_-]{0,63})")


@dataclass(frozen=True, slots=True)
class InboxPage:
    items: list[Document]
    unread: int
    has_more: bool
    cursor: str | None


def parse_cursor(value: object) -> tuple[str, str] | None:
    """An opaque cursor from a previous page (`<publishedAt>~<documentId>`), or None."""
    if value is None:
        return None
    match = CURSOR.fullmatch(value) if isinstance(value, str) else None
    if match is None or not _is_datetime(match["at"]):
        raise InvalidPayload("cursor is not one this server handed out")
    return match["at"], match["doc"]


def _is_datetime(value: str) -> bool:
    """Strapi answers a filter on a date it cannot parse with a 500 (and logs an error)."""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


class Inbox:
    """Reads a user's unread notifications and unread count from Strapi."""

    def __init__(
        self,
        strapi: StrapiClient,
        settings: Settings,
        known_ids: KnownIds,
        *,
        batch_size: int = CATCH_UP_BATCH,
        batches_in_flight: int = CATCH_UP_BATCHES_IN_FLIGHT,
    ):
        self._strapi = strapi
        self._settings = settings
        self._known_ids = known_ids
        self._batch_size = batch_size
        self._batches_in_flight = batches_in_flight
        self._waiting: list[_CatchUp] = []
        self._batches: set[asyncio.Task[None]] = set()
        self._pump_scheduled = False

    def addressed_to(self, user_id: int) -> dict[str, Any]:
        """The filter: notifications addressed to the user, directly or through `allUsers`."""
        audience = self._settings.audience_field
        return {"$or": [{"allUsers": {"$eq": True}}, {audience: {"id": {"$eq": user_id}}}]}

    async def unread_count(self, user_id: int) -> int:
        addressed, read = await asyncio.gather(self._addressed_total(user_id), self._read_total(user_id))
        return max(0, addressed - read)

    async def page(self, user_id: int, *, cursor: tuple[str, str] | None, limit: int) -> InboxPage:
        """Up to `limit` unread notifications older than `cursor`, newest first.

        `has_more` says older notifications remain to be scanned (some may turn out read).
        """
        items: list[Document] = []
        addressed_total: int | None = None
        unread: int | None = None
        has_more = False
        for _ in range(MAX_SCAN_PAGES if limit else 0):
            found = await self._addressed_page(user_id, cursor, limit)
            if addressed_total is None and cursor is None:
                addressed_total = found.total
            read = await self._read_among(user_id, [str(n["documentId"]) for n in found.items])
            if unread is None and cursor is None and found.total <= len(found.items):
                unread = found.total - len(read)  # the page holds every addressed notification
            consumed, last = _take_unread(found.items, read, limit, items)
            cursor = last or cursor
            has_more = found.total > consumed
            if len(items) == limit or not has_more:
                break
        self._remember(items)
        if unread is None:
            unread = await self._unread_given(user_id, addressed_total)
        next_cursor = f"{cursor[0]}~{cursor[1]}" if has_more and cursor is not None else None
        return InboxPage(items=items, unread=unread, has_more=has_more, cursor=next_cursor)

    async def catch_up(
        self, user_id: int, limit: int, wanted: Callable[[], bool] = lambda: True
    ) -> InboxPage | None:
        """The first page of the inbox (as `page(cursor=None)`), asked of Strapi together with
        the catch-ups of other users waiting meanwhile: two requests for a whole batch when
        their notifications fit in one page of 100, else a `page()` each.

        `wanted()` is asked when the batch is formed: False (the socket left) skips the user;
        the answer is then None.
        """
        if limit <= 0:
            return await self.page(user_id, cursor=None, limit=limit)
        answer: asyncio.Future[InboxPage | None] = asyncio.get_running_loop().create_future()
        answer.add_done_callback(_retrieve)
        self._waiting.append(_CatchUp(user_id, limit, wanted, answer))
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)
        return await asyncio.shield(answer)

    def _pump(self) -> None:
        self._pump_scheduled = False
        while self._waiting and len(self._batches) < self._batches_in_flight:
            batch: list[_CatchUp] = []
            while self._waiting and len(batch) < self._batch_size:
                entry = self._waiting.pop(0)
                if entry.answer.done():
                    continue
                if not entry.wanted():
                    entry.answer.set_result(None)
                    continue
                batch.append(entry)
            if not batch:
                continue
            task = asyncio.create_task(self._catch_up_batch(batch))
            self._batches.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        if self._waiting and not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    async def _catch_up_batch(self, batch: list[_CatchUp]) -> None:
        try:
            limit = batch[0].limit
            same_limit = all(entry.limit == limit for entry in batch)
            pages = await self._batched_pages(sorted({e.user_id for e in batch}), limit) if same_limit else {}
            for entry in batch:
                if entry.user_id in pages:
                    self._remember(pages[entry.user_id].items)
                    _settle(entry.answer, pages[entry.user_id])
                else:  # more than one page of notifications: on its own
                    try:
                        _settle(entry.answer, await self.page(entry.user_id, cursor=None, limit=entry.limit))
                    except Exception as exc:
                        _settle(entry.answer, exc)
        except BaseException as exc:
            for entry in batch:
                if isinstance(exc, Exception):
                    _settle(entry.answer, exc)
                else:
                    entry.answer.cancel()
            if not isinstance(exc, Exception):
                raise

    async def _batched_pages(self, user_ids: list[int], limit: int) -> dict[int, InboxPage]:
        """`_first_pages`, or {} (one page each) when Strapi refuses the batched query itself
        (a proxy's URL limit, say: 414, 431, 400); Strapi unreachable fails the whole batch."""
        try:
            return await self._first_pages(user_ids, limit)
        except StrapiError as exc:
            if exc.status not in BATCH_REFUSED:
                raise
            logger.warning("batched catch-up refused, asking user by user: %s", exc)
            return {}

    async def _first_pages(self, user_ids: list[int], limit: int) -> dict[int, InboxPage]:
        """Each user's first page, from one page of the notifications addressed to any of them
        and one of their reads among those; {} when either does not fit in one page."""
        audience = self._settings.audience_field
        found = await self._strapi.find(
            self._settings.notification_collection,
            filters={"$or": [{"allUsers": {"$eq": True}}, {audience: {"id": {"$in": user_ids}}}]},
            populate={"document": True, audience: {"fields": ["id"], "filters": {"id": {"$in": user_ids}}}},
            sort=SORT,
            page_size=MAX_PAGE,
            status="published",
        )
        if found.total > len(found.items):
            return {}
        read: dict[int, set[str]] = {user_id: set() for user_id in user_ids}
        if found.items:
            receipts = await self._reads_of(user_ids, [str(n["documentId"]) for n in found.items])
            if receipts is None:
                return {}
            for user_id, document_id in receipts:
                if user_id in read:
                    read[user_id].add(document_id)
        pages: dict[int, InboxPage] = {}
        for user_id in user_ids:
            addressed = [
                {key: value for key, value in n.items() if key != audience}
                for n in found.items
                if n.get("allUsers") is True or user_id in audience_ids(n, audience)
            ]
            pages[user_id] = _first_page(addressed, read[user_id], limit)
        return pages

    async def _reads_of(self, user_ids: list[int], document_ids: list[str]) -> list[tuple[int, str]] | None:
        """(user, documentId) for each read by these users among these notifications; None when
        the READNOTIFICATIONs do not fit in one page."""
        users = self._settings.read_users_field
        field = self._settings.read_notification_field
        found = await self._strapi.find(
            self._settings.read_collection,
            filters={users: {"id": {"$in": user_ids}}, field: {"documentId": {"$in": document_ids}}},
            populate={
                field: {"fields": ["documentId"]},
                users: {"fields": ["id"], "filters": {"id": {"$in": user_ids}}},
            },
            fields=["documentId"],
            page_size=MAX_PAGE,
        )
        if found.total > len(found.items):
            return None
        return [
            (user_id, str(receipt[field]["documentId"]))
            for receipt in found.items
            if isinstance(receipt.get(field), dict)
            for user_id in audience_ids(receipt, users)
        ]

    async def unread_batches(self, user_id: int) -> AsyncIterator[list[Document]]:
        """Every unread notification of the user, a page (up to 100) at a time, newest first."""
        cursor: tuple[str, str] | None = None
        while True:
            found = await self._addressed_page(user_id, cursor, MAX_PAGE)
            if not found.items:
                return
            read = await self._read_among(user_id, [str(n["documentId"]) for n in found.items])
            unread = [n for n in found.items if n["documentId"] not in read]
            if unread:
                yield unread
            if found.total <= len(found.items):
                return
            last = found.items[-1]
            cursor = (str(last.get("publishedAt")), str(last["documentId"]))

    # -- Strapi queries --------------------------------------------------------------------

    async def _addressed_page(self, user_id: int, cursor: tuple[str, str] | None, size: int) -> Any:
        conditions: list[dict[str, Any]] = [self.addressed_to(user_id)]
        if cursor is not None:
            at, document_id = cursor
            conditions.append(
                {
                    "$or": [
                        {"publishedAt": {"$lt": at}},
                        {"publishedAt": {"$eq": at}, "documentId": {"$lt": document_id}},
                    ]
                }
            )
        return await self._strapi.find(
            self._settings.notification_collection,
            filters={"$and": conditions},
            populate={"document": True},
            sort=SORT,
            page_size=min(size, MAX_PAGE),
            status="published",
        )

    async def _read_among(self, user_id: int, document_ids: list[str]) -> set[str]:
        """Which of these notifications the user has read."""
        if not document_ids:
            return set()
        field = self._settings.read_notification_field
        found = await self._strapi.find(
            self._settings.read_collection,
            filters={
                self._settings.read_users_field: {"id": {"$eq": user_id}},
                field: {"documentId": {"$in": document_ids}},
            },
            populate={field: {"fields": ["documentId"]}},
            fields=["documentId"],
            page_size=MAX_PAGE,
        )
        return {
            str(receipt[field]["documentId"])
            for receipt in found.items
            if isinstance(receipt.get(field), dict)
        }

    async def _addressed_total(self, user_id: int) -> int:
        found = await self._strapi.find(
            self._settings.notification_collection,
            filters=self.addressed_to(user_id),
            fields=["documentId"],
            page_size=1,
            status="published",
        )
        return found.total

    async def _read_total(self, user_id: int) -> int:
        found = await self._strapi.find(
            self._settings.read_collection,
            filters={
                self._settings.read_users_field: {"id": {"$eq": user_id}},
                self._settings.read_notification_field: self.addressed_to(user_id),
            },
            fields=["documentId"],
            page_size=1,
        )
        return found.total

    async def _unread_given(self, user_id: int, addressed_total: int | None) -> int:
        if addressed_total is None:
            return await self.unread_count(user_id)
        return max(0, addressed_total - await self._read_total(user_id))

    def _remember(self, items: list[Document]) -> None:
        for item in items:
            if isinstance(item.get("id"), int):
                self._known_ids.remember(item["id"], str(item["documentId"]))


@dataclass(slots=True)
class _CatchUp:
    user_id: int
    limit: int
    wanted: Callable[[], bool]
    answer: asyncio.Future[InboxPage | None]


def _retrieve(answer: asyncio.Future[InboxPage | None]) -> None:
    """A failure nobody waits for any more (the socket left) is not an 'unretrieved' error."""
    if not answer.cancelled():
        answer.exception()


def _settle(answer: asyncio.Future[InboxPage | None], outcome: InboxPage | BaseException) -> None:
    if answer.done():
        return
    if isinstance(outcome, BaseException):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)


def _take_unread(
    notifications: list[Document], read: set[str], limit: int, items: list[Document]
) -> tuple[int, tuple[str, str] | None]:
    """Append the unread of `notifications` (newest first) to `items` until it holds `limit`.

    Returns how many notifications were looked at, and the cursor of the last one (None: none).
    """
    consumed = 0
    cursor: tuple[str, str] | None = None
    for notification in notifications:
        consumed += 1
        cursor = (str(notification.get("publishedAt")), str(notification["documentId"]))
        if notification["documentId"] not in read:
            items.append(notification)
        if len(items) == limit:
            break
    return consumed, cursor


def _first_page(addressed: list[Document], read: set[str], limit: int) -> InboxPage:
    """What `Inbox.page(cursor=None)` makes of every addressed notification (newest first)."""
    items: list[Document] = []
    consumed, cursor = _take_unread(addressed, read, limit, items)
    has_more = len(addressed) > consumed
    unread = len(addressed) - sum(1 for n in addressed if n["documentId"] in read)
    next_cursor = f"{cursor[0]}~{cursor[1]}" if has_more and cursor is not None else None
    return InboxPage(items=items, unread=unread, has_more=has_more, cursor=next_cursor)
