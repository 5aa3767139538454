"""Read receipts: the seed's READNOTIFICATION algorithm, through Strapi's REST API.

One READNOTIFICATION document per notification holds every user who read it:
1. find the published notification the client named (and that is addressed to this user);
2. if a READNOTIFICATION of it already has this user: done (`alreadyRead`);
3. else if one exists: connect the user to the first one;
4. else create one connecting the notification and the user.
Reads of one notification are serialized inside the process, so two users reading the same
notification at once cannot create two READNOTIFICATIONs.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from adapter.errors import InvalidPayload, NotificationNotFound, StrapiError, UpstreamError
from adapter.locks import KeyedLock
from adapter.notifications import KnownIds, Ledger
from adapter.settings import Settings
from adapter.strapi import Document, StrapiClient

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
        self, strapi: StrapiClient, settings: Settings, known_ids: KnownIds, readers: Ledger | None = None
    ):
        self._strapi = strapi
        self._settings = settings
        self._known_ids = known_ids
        # Who is known to have read what (bounded): READNOTIFICATION webhooks for reads recorded
        # here are not echoed to the users a second time.
        self.readers = readers if readers is not None else Ledger(settings.emitted_ledger_size)
        self._locked = KeyedLock()
        # When this process last created a READNOTIFICATION per notification (a sequence
        # number): a batch lookup older than that is stale for it, so read-all looks again.
        self._sequence = 0
        self._created: OrderedDict[str, int] = OrderedDict()

    async def mark_read(self, user_id: int, ref: int | str) -> ReadResult:
        notification = await self._find_addressed(user_id, ref)
        document_id = str(notification["documentId"])
        async with self._locked(document_id):
            result = await self._record(user_id, document_id)
        self.readers.add(document_id, {user_id})
        return result

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
                try:
                    receipt = first_receipts.get(document_id)
                    if receipt is None and self._created.get(document_id, -1) >= snapshot:
                        return (
                            None if (await self._record(user_id, document_id)).already_read else document_id
                        )
                    await self._write_receipt(user_id, document_id, receipt)
                except UpstreamError:
                    return None
                self.readers.add(document_id, {user_id})
                return document_id

        marked = await asyncio.gather(*(mark(document_id) for document_id in document_ids))
        return [document_id for document_id in marked if document_id is not None]

    async def _find_addressed(self, user_id: int, ref: int | str) -> Document:
        # A numeric id this sidecar handed out may have gone stale (Strapi re-creates the
        # published row on every publish): look those up by their documentId.
        remembered = self._known_ids.document_id(ref) if isinstance(ref, int) else None
        try:
            found = await self._find_published(user_id, remembered or ref)
            if found is None and remembered is not None:
                found = await self._find_published(user_id, ref)
        except StrapiError as exc:
            log_read_failure(exc, user_id, ref, CONTEXT_FIND)
            raise UpstreamError(f"Strapi failed: {exc.message}") from exc
        if found is None:
            raise NotificationNotFound("no published notification with that id for this user")
        return found

    async def _find_published(self, user_id: int, ref: int | str) -> Document | None:
        key = "id" if isinstance(ref, int) else "documentId"
        audience = self._settings.audience_field
        filters = {
            "$and": [
                {key: {"$eq": ref}},
                {"$or": [{"allUsers": {"$eq": True}}, {audience: {"id": {"$eq": user_id}}}]},
            ]
        }
        return await self._strapi.find_first(
            self._settings.notification_collection,
            filters=filters,
            fields=["documentId"],
            status="published",
        )

    async def _record(self, user_id: int, document_id: str) -> ReadResult:
        receipts = await self._receipts_of(user_id, document_id)
        if any(receipt.get(self._settings.read_users_field) for receipt in receipts):
            return ReadResult(document_id, already_read=True)
        first = str(receipts[0]["documentId"]) if receipts else None
        await self._write_receipt(user_id, document_id, first)
        return ReadResult(document_id, already_read=False)

    async def _write_receipt(self, user_id: int, document_id: str, receipt: str | None) -> None:
        """Connect the user to the notification's first READNOTIFICATION, or create one."""
        users_field = self._settings.read_users_field
        if receipt is not None:
            write = self._strapi.update(
                self._settings.read_collection, receipt, {users_field: {"connect": [{"id": user_id}]}}
            )
            await self._write(CONTEXT_ADD, user_id, receipt, write)
            return
        data = {
            self._settings.read_notification_field: {"connect": [{"documentId": document_id}]},
            users_field: {"connect": [{"id": user_id}]},
        }
        await self._write(
            CONTEXT_CREATE, user_id, document_id, self._strapi.create(self._settings.read_collection, data)
        )
        self._created[document_id] = self._sequence
        self._created.move_to_end(document_id)
        self._sequence += 1
        while len(self._created) > CREATED_MEMORY:
            self._created.popitem(last=False)

    async def _first_receipts(self, document_ids: list[str]) -> dict[str, str]:
        """The first READNOTIFICATION (lowest id) of each notification that has one."""
        field = self._settings.read_notification_field
        first: dict[str, str] = {}
        for start in range(0, len(document_ids), RECEIPT_BATCH):
            batch = document_ids[start : start + RECEIPT_BATCH]
            page_number = 1
            while True:
                try:
                    page = await self._strapi.find(
                        self._settings.read_collection,
                        filters={field: {"documentId": {"$in": batch}}},
                        populate={field: {"fields": ["documentId"]}},
                        fields=["documentId"],
                        sort="id:asc",
                        page=page_number,
                        page_size=RECEIPT_BATCH,
                    )
                except StrapiError as exc:
                    raise UpstreamError(f"Strapi failed: {exc.message}") from exc
                for receipt in page.items:
                    target = receipt.get(field)
                    if isinstance(target, dict):
                        first.setdefault(str(target["documentId"]), str(receipt["documentId"]))
                if page_number >= page.page_count:
                    break
                page_number += 1
        return first

    async def _receipts_of(self, user_id: int, document_id: str) -> list[Document]:
        """The READNOTIFICATIONs of a notification, each with this user populated if present."""
        users_field = self._settings.read_users_field
        try:
            page = await self._strapi.find(
                self._settings.read_collection,
                filters={self._settings.read_notification_field: {"documentId": {"$eq": document_id}}},
                populate={users_field: {"filters": {"id": {"$eq": user_id}}, "fields": ["id"]}},
                fields=["documentId"],
                sort="id:asc",
                page_size=100,
            )
        except StrapiError as exc:
            log_read_failure(exc, user_id, document_id, CONTEXT_FIND)
            raise UpstreamError(f"Strapi failed: {exc.message}") from exc
        return page.items

    @staticmethod
    async def _write(context: str, user_id: int, logged_id: str, write: Any) -> None:
        try:
            await write
        except StrapiError as exc:
            log_read_failure(exc, user_id, logged_id, context)
            raise UpstreamError(f"Strapi failed: {exc.message}") from exc


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
