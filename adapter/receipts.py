"""Read receipts: the seed's READNOTIFICATION algorithm, through Strapi's REST API.

One READNOTIFICATION document per notification holds every user who read it:
1. find the published notification the client named (and that is addressed to this user);
2. if a READNOTIFICATION of it already has this user: done (`alreadyRead`);
3. else if one exists: connect the user to the first one;
4. else create one connecting the notification and the user.

Made exact under load:
- the notification (its documentId, `allUsers` and audience) is read once and cached briefly, so
  a burst of reads asks Strapi once to resolve it; one this process has just announced is not
  read at all by the users it was announced to (`announced`);
- writes for one notification are serialized (one lock per notification: in-process, or shared
  through Redis), and reads that arrive while a write is in flight are joined into the next
  single write (`connect: [many users]`): a burst of N reads costs a handful of requests;
- a Strapi outage is retried with backoff for `READ_RETRY_SECONDS`; the acknowledgement says
  `ok` only once Strapi has the read;
- duplicate READNOTIFICATIONs of one notification, if ever found, are merged into the first.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from adapter.errors import InvalidPayload, NotificationNotFound, StrapiError, StrapiUnavailable, UpstreamError
from adapter.locks import KeyedLock
from adapter.notifications import KnownIds, Ledger, audience_ids
from adapter.settings import Settings
from adapter.strapi import Document, Page, StrapiClient

__all__ = ["ReadReceipts", "ReadResult", "parse_notification_ref"]

logger = logging.getLogger(__name__)

DOCUMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # fullmatch: "$" would let "x\n" in
MAX_NUMERIC_ID = 2**53
READ_ALL_CONCURRENCY = 8
RECEIPT_BATCH = 100
CREATED_MEMORY = 10_000
CONTEXT_ADD = "add user to notification"
CONTEXT_CREATE = "create user to notification relation"
CONTEXT_FIND = "find notification"
CONTEXT_MERGE = "merge duplicate read notifications"
TARGET_TTL = 5.0  # seconds a resolved notification (audience) is trusted; webhooks invalidate it
TARGET_MEMORY = 10_000
ANNOUNCED_TTL = 60.0  # seconds the users a notification was announced to may read it unchecked
SMALL_BATCH = 50  # up to this many users, the readers lookup is filtered to them
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 3.0, 5.0)

T = TypeVar("T")
LockFactory = Callable[[str], AbstractAsyncContextManager[Any]]


@dataclass(frozen=True, slots=True)
class Target:
    """A published notification as far as reads need it.

    `partial`: known from an announcement, `audience` holds those it was announced to (maybe not
    all of it): for anyone else, ask Strapi.
    """

    document_id: str
    numeric_id: int | None
    all_users: bool
    audience: frozenset[int]
    expires: float
    partial: bool = False

    def addresses(self, user_id: int) -> bool:
        return self.all_users or user_id in self.audience

    def answers_for(self, user_id: int, now: float) -> bool:
        """Whether this cached view can decide a read by the user without asking Strapi."""
        return self.expires > now and (not self.partial or user_id in self.audience)


@dataclass(slots=True)
class _Batch:
    """Reads of one notification: those in the write under way, and those waiting for the next."""

    waiting: dict[int, asyncio.Future[bool]] = field(default_factory=dict)
    writing: dict[int, asyncio.Future[bool]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReadResult:
    document_id: str
    already_read: bool

    def ack(self) -> dict[str, Any]:
        return {"ok": True, "notificationId": self.document_id, "alreadyRead": self.already_read}


def parse_notification_ref(data: object) -> int | str:
    """`{notificationId}` as a number, a numeric string (from the DOM) or a documentId."""
    if not isinstance(data, dict) or "notificationId" not in data:
        raise InvalidPayload("expected an object with notificationId")
    value = data["notificationId"]
    if isinstance(value, bool):
        raise InvalidPayload("notificationId must be a number or a documentId")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdecimal():
        if len(value.strip()) > len(str(MAX_NUMERIC_ID)):  # int() refuses over 4300 digits
            raise InvalidPayload("notificationId is out of range")
        number = int(value.strip())
    elif isinstance(value, str) and DOCUMENT_ID.fullmatch(value):
        return value
    else:
        raise InvalidPayload("notificationId must be a number or a documentId")
    if not 0 < number < MAX_NUMERIC_ID:
        raise InvalidPayload("notificationId is out of range")
    return number


class ReadReceipts:
    """Marks notifications read for users, exactly as the seed did, plus the checks it lacked."""

    def __init__(
        self,
        strapi: StrapiClient,
        settings: Settings,
        known_ids: KnownIds,
        readers: Ledger | None = None,
        *,
        lock: LockFactory | None = None,
        retry_seconds: float | None = None,
    ):
        self._strapi = strapi
        self._settings = settings
        self._known_ids = known_ids
        # Who is known to have read what (bounded): READNOTIFICATION webhooks for reads recorded
        # here are not echoed to the users a second time.
        self.readers = readers if readers is not None else Ledger(settings.emitted_ledger_size)
        self._locked: LockFactory = lock if lock is not None else KeyedLock()
        self._retry_seconds = settings.read_retry_seconds if retry_seconds is None else retry_seconds
        self._targets: OrderedDict[str, Target] = OrderedDict()
        self._invalidations = 0  # a counter, and when each notification was last invalidated
        self._invalidated: OrderedDict[str, int] = OrderedDict()
        self._resolving: dict[int | str, asyncio.Task[Target | None]] = {}
        self._batches: dict[str, _Batch] = {}
        self._drains: set[asyncio.Task[None]] = set()
        # When this process last created a READNOTIFICATION per notification (a sequence
        # number): a batch lookup older than that is stale for it, so read-all looks again.
        self._sequence = 0
        self._created: OrderedDict[str, int] = OrderedDict()

    # -- reads -----------------------------------------------------------------------------

    async def mark_read(self, user_id: int, ref: int | str) -> ReadResult:
        target = await self._target(user_id, ref)
        if target is None or not target.addresses(user_id):
            raise NotificationNotFound("no published notification with that id for this user")
        already = await self._enqueue(target.document_id, user_id)
        self.readers.add(target.document_id, {user_id})
        return ReadResult(target.document_id, already_read=already)

    def announced(self, document_id: str, numeric_id: int | None, user_ids: Iterable[int]) -> None:
        """The published notification was just announced to `user_ids` (by this process or, with
        REDIS_URL, another): their reads of it in the next ANNOUNCED_TTL seconds need not ask
        Strapi whether it is published and theirs. A webhook about it drops that (`invalidate`)."""
        now = time.monotonic()
        audience = frozenset(user_ids)
        cached = self._targets.get(document_id)
        if cached is not None and cached.expires > now:
            audience |= cached.audience
        self._store(Target(document_id, numeric_id, False, audience, now + ANNOUNCED_TTL, partial=True))
        if numeric_id is not None:
            self._known_ids.remember(numeric_id, document_id)

    def invalidate(self, document_id: str) -> None:
        """The notification changed (a webhook): resolve it from Strapi again next time."""
        self._targets.pop(document_id, None)
        self._invalidations += 1
        self._invalidated[document_id] = self._invalidations
        self._invalidated.move_to_end(document_id)
        while len(self._invalidated) > TARGET_MEMORY:
            self._invalidated.popitem(last=False)

    @property
    def pending(self) -> int:
        """Reads accepted but not yet recorded in Strapi."""
        return sum(len(batch.writing) + len(batch.waiting) for batch in self._batches.values())

    async def drain(self, grace: float) -> None:
        """At shutdown: let pending reads finish; log every read that could not, by name."""
        if self._drains:
            await asyncio.wait(set(self._drains), timeout=grace)
        for document_id, batch in list(self._batches.items()):
            for user_id in (*batch.writing, *batch.waiting):
                log_read_failure(
                    RuntimeError("stopped before Strapi had it"), user_id, document_id, CONTEXT_ADD
                )
        unfinished = set(self._drains)
        for task in unfinished:
            task.cancel()
        if unfinished:  # each answers its readers (upstream_error) as it stops
            await asyncio.wait(unfinished, timeout=grace)

    async def mark_many(self, user_id: int, document_ids: list[str]) -> list[str]:
        """Mark notifications known to be addressed to the user and unread by them (read-all).

        READNOTIFICATIONs are looked up 100 notifications per request; Strapi's REST API has no
        bulk write, so each notification still costs one write (a connect, or a create).
        Returns the documentIds marked.
        """
        snapshot = self._sequence
        first_receipts = await self._first_receipts(document_ids)
        gate = asyncio.Semaphore(READ_ALL_CONCURRENCY)

        async def mark(document_id: str) -> str | None:
            async with gate, self._locked(document_id):
                receipt = first_receipts.get(document_id)
                try:
                    if receipt is None and self._created.get(document_id, -1) >= snapshot:
                        if await self._record(document_id, {user_id}):
                            return None
                    else:
                        await self._retrying(lambda: self._write_receipt(document_id, [user_id], receipt))
                except StrapiError as exc:  # the write failed (and was logged by nobody yet)
                    context = CONTEXT_ADD if receipt is not None else CONTEXT_CREATE
                    log_read_failure(exc, user_id, receipt or document_id, context)
                    return None
                except UpstreamError:
                    return None
                self.readers.add(document_id, {user_id})
                return document_id

        marked = await asyncio.gather(*(mark(document_id) for document_id in document_ids))
        return [document_id for document_id in marked if document_id is not None]

    # -- resolving the notification --------------------------------------------------------

    async def _target(self, user_id: int, ref: int | str) -> Target | None:
        # A numeric id this sidecar handed out may have gone stale (Strapi re-creates the
        # published row on every publish): those are looked up by their documentId.
        document_id = ref if isinstance(ref, str) else self._known_ids.document_id(ref)
        cached = self._targets.get(document_id) if document_id is not None else None
        if cached is not None and cached.answers_for(user_id, time.monotonic()):
            return cached
        key: int | str = document_id if document_id is not None else ref
        task = self._resolving.get(key)
        if task is None:
            task = asyncio.create_task(self._resolve(ref, document_id))
            self._resolving[key] = task
            task.add_done_callback(lambda _: self._resolving.pop(key, None))
        try:
            return await asyncio.shield(task)
        except StrapiError as exc:
            log_read_failure(exc, user_id, ref, CONTEXT_FIND)
            raise UpstreamError(f"Strapi failed: {exc.message}") from exc

    async def _resolve(self, ref: int | str, document_id: str | None) -> Target | None:
        started = self._invalidations
        found = await self._retrying(lambda: self._find_published(document_id or ref))
        if found is None and document_id is not None and isinstance(ref, int):
            found = await self._retrying(lambda: self._find_published(ref))
        if found is None:
            return None
        target = Target(
            document_id=str(found["documentId"]),
            numeric_id=found.get("id") if isinstance(found.get("id"), int) else None,
            all_users=bool(found.get("allUsers")),
            audience=frozenset(audience_ids(found, self._settings.audience_field)),
            expires=time.monotonic() + TARGET_TTL,
        )
        if self._invalidated.get(target.document_id, -1) > started:
            return target  # changed while it was being read: good for this read, not for the cache
        self._store(target)
        if target.numeric_id is not None:
            self._known_ids.remember(target.numeric_id, target.document_id)
        return target

    def _store(self, target: Target) -> None:
        """Cache a target; drop the oldest beyond TARGET_MEMORY, and expired ones at the front."""
        self._targets[target.document_id] = target
        self._targets.move_to_end(target.document_id)
        now = time.monotonic()
        while len(self._targets) > TARGET_MEMORY or next(iter(self._targets.values())).expires <= now:
            self._targets.popitem(last=False)

    async def _find_published(self, ref: int | str) -> Document | None:
        key = "id" if isinstance(ref, int) else "documentId"
        return await self._strapi.find_first(
            self._settings.notification_collection,
            filters={key: {"$eq": ref}},
            fields=["documentId", "allUsers"],
            populate={self._settings.audience_field: {"fields": ["id"]}},
            status="published",
        )

    # -- coalesced writes ------------------------------------------------------------------

    async def _enqueue(self, document_id: str, user_id: int) -> bool:
        """Join the next write for this notification; True when the user had read it already."""
        batch = self._batches.get(document_id)
        if batch is None:
            batch = self._batches[document_id] = _Batch()
            task = asyncio.create_task(self._drain(document_id, batch))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        future = batch.waiting.get(user_id)
        if future is None:
            future = batch.waiting[user_id] = asyncio.get_running_loop().create_future()
        return await asyncio.shield(future)

    async def _drain(self, document_id: str, batch: _Batch) -> None:
        try:
            async with self._locked(document_id):
                while batch.waiting:
                    batch.writing, batch.waiting = batch.waiting, {}
                    try:
                        already = await self._record(document_id, set(batch.writing))
                    except UpstreamError as exc:
                        for future in batch.writing.values():
                            _settle(future, exc)
                    else:
                        for user_id, future in batch.writing.items():
                            _settle(future, user_id in already)
                    batch.writing = {}
                del self._batches[document_id]  # nothing awaited since the check: no read is lost
        finally:
            if self._batches.get(document_id) is batch:  # cancelled at shutdown, or failed unexpectedly
                del self._batches[document_id]
                stopped = UpstreamError("stopped before Strapi had the read")
                for future in (*batch.writing.values(), *batch.waiting.values()):
                    _settle(future, stopped)

    async def _record(self, document_id: str, users: set[int]) -> set[int]:
        """Record `users` as readers; return those who were readers already."""
        try:
            return await self._retrying(lambda: self._record_once(document_id, users))
        except StrapiError as exc:
            # The seed's contexts: the write that failed says which (and which id it logged).
            context, logged = {
                "PUT": (CONTEXT_ADD, exc.path.rsplit("/", 1)[-1]),
                "POST": (CONTEXT_CREATE, document_id),
            }.get(exc.method, (CONTEXT_FIND, document_id))
            for user_id in sorted(users):
                log_read_failure(exc, user_id, logged, context)
            raise UpstreamError(f"Strapi failed: {exc.message}") from exc

    async def _record_once(self, document_id: str, users: set[int]) -> set[int]:
        receipts = await self._receipts_of(document_id, users)
        users_field = self._settings.read_users_field
        already = {int(user["id"]) for receipt in receipts for user in receipt.get(users_field) or []} & users
        new = sorted(users - already)
        if new:
            first = str(receipts[0]["documentId"]) if receipts else None
            await self._write_receipt(document_id, new, first)
        if len(receipts) > 1:
            await self._merge(document_id, receipts)
        return already

    async def _receipts_of(self, document_id: str, users: set[int]) -> list[Document]:
        """The READNOTIFICATIONs of a notification, oldest first, with (some of) their readers."""
        users_field = self._settings.read_users_field
        readers: dict[str, Any] = {"fields": ["id"]}
        if len(users) <= SMALL_BATCH:
            readers["filters"] = {"id": {"$in": sorted(users)}}
        page = await self._strapi.find(
            self._settings.read_collection,
            filters={self._settings.read_notification_field: {"documentId": {"$eq": document_id}}},
            populate={users_field: readers},
            fields=["documentId"],
            sort="id:asc",
            page_size=100,
        )
        return page.items

    async def _write_receipt(self, document_id: str, user_ids: list[int], receipt: str | None) -> None:
        """Connect users to the notification's first READNOTIFICATION, or create one."""
        # Known as readers before Strapi answers: its webhook for this write can arrive first,
        # and must not be echoed back as a read made elsewhere.
        self.readers.add(document_id, set(user_ids))
        try:
            await self._write_receipt_once(document_id, user_ids, receipt)
        except BaseException:
            self.readers.remove(document_id, set(user_ids))
            raise

    async def _write_receipt_once(self, document_id: str, user_ids: list[int], receipt: str | None) -> None:
        users_field = self._settings.read_users_field
        connect = {"connect": [{"id": user_id} for user_id in user_ids]}
        if receipt is not None:
            await self._strapi.update(self._settings.read_collection, receipt, {users_field: connect})
            return
        data = {
            self._settings.read_notification_field: {"connect": [{"documentId": document_id}]},
            users_field: connect,
        }
        await self._strapi.create(self._settings.read_collection, data)
        self._created[document_id] = self._sequence
        self._created.move_to_end(document_id)
        self._sequence += 1
        while len(self._created) > CREATED_MEMORY:
            self._created.popitem(last=False)

    async def _merge(self, document_id: str, receipts: list[Document]) -> None:
        """Repair: fold duplicate READNOTIFICATIONs of one notification into the first."""
        users_field = self._settings.read_users_field
        first, duplicates = str(receipts[0]["documentId"]), [str(r["documentId"]) for r in receipts[1:]]
        try:
            page = await self._strapi.find(
                self._settings.read_collection,
                filters={"documentId": {"$in": duplicates}},
                populate={users_field: {"fields": ["id"]}},
                fields=["documentId"],
                page_size=100,
            )
            users = sorted({int(u["id"]) for r in page.items for u in r.get(users_field) or []})
            if users:
                await self._write_receipt(document_id, users, first)
            for duplicate in duplicates:
                await self._strapi.delete(self._settings.read_collection, duplicate)
        except StrapiError as exc:
            log_read_failure(exc, 0, document_id, CONTEXT_MERGE)
            return
        logger.warning(
            "notification %s had %d duplicate READNOTIFICATIONs: merged into %s",
            document_id,
            len(duplicates),
            first,
        )

    async def _first_receipts(self, document_ids: list[str]) -> dict[str, str]:
        """The first READNOTIFICATION (lowest id) of each notification that has one."""
        field = self._settings.read_notification_field
        first: dict[str, str] = {}
        for start in range(0, len(document_ids), RECEIPT_BATCH):
            batch = document_ids[start : start + RECEIPT_BATCH]
            page_number, page_count = 1, 1
            while page_number <= page_count:
                try:
                    page = await self._retrying(self._receipts_page(batch, page_number))
                except StrapiError as exc:
                    raise UpstreamError(f"Strapi failed: {exc.message}") from exc
                for receipt in page.items:
                    target = receipt.get(field)
                    if isinstance(target, dict):
                        first.setdefault(str(target["documentId"]), str(receipt["documentId"]))
                page_number, page_count = page_number + 1, page.page_count
        return first

    def _receipts_page(self, document_ids: list[str], page: int) -> Callable[[], Awaitable[Page]]:
        field = self._settings.read_notification_field
        return lambda: self._strapi.find(
            self._settings.read_collection,
            filters={field: {"documentId": {"$in": document_ids}}},
            populate={field: {"fields": ["documentId"]}},
            fields=["documentId"],
            sort="id:asc",
            page=page,
            page_size=RECEIPT_BATCH,
        )

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt`, retrying a Strapi outage with backoff and jitter for a bounded time."""
        deadline = time.monotonic() + self._retry_seconds
        for delay in (*RETRY_DELAYS, None):
            try:
                return await attempt()
            except StrapiUnavailable as exc:
                if delay is None or time.monotonic() + delay > deadline:
                    raise
                logger.warning("Strapi unavailable, retrying a read in %.1f s: %s", delay, exc)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
        raise AssertionError("unreachable")


def _settle(future: asyncio.Future[bool], outcome: bool | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
        future.exception()  # retrieved: a reader that went away must not log an unretrieved error
    else:
        future.set_result(outcome)


def log_read_failure(error: Exception, user_id: int, notification_id: object, context: str) -> None:
    """The seed's exact log line shape, kept so existing log alerts keep matching."""
    message = error.message if isinstance(error, StrapiError) else str(error)
    logger.error(
        "Error while %s with user ID: %s and notification ID: %s: %s",
        context,
        user_id,
        notification_id,
        message,
    )
