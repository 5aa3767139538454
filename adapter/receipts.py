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

import logging
import re
from dataclasses import dataclass
from typing import Any

from adapter.errors import InvalidPayload, NotificationNotFound, StrapiError, UpstreamError
from adapter.locks import KeyedLock
from adapter.notifications import KnownIds
from adapter.settings import Settings
from adapter.strapi import Document, StrapiClient

__all__ = ["ReadReceipts", "ReadResult", "parse_notification_ref"]

logger = logging.getLogger(__name__)

DOCUMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # fullmatch: "$" would let "x\n" in
MAX_NUMERIC_ID = 2**53
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

    def __init__(self, strapi: StrapiClient, settings: Settings, known_ids: KnownIds):
        self._strapi = strapi
        self._settings = settings
        self._known_ids = known_ids
        self._locked = KeyedLock()

    async def mark_read(self, user_id: int, ref: int | str) -> ReadResult:
        notification = await self._find_addressed(user_id, ref)
        document_id = str(notification["documentId"])
        async with self._locked(document_id):
            return await self._record(user_id, document_id)

    async def _find_addressed(self, user_id: int, ref: int | str) -> Document:
        try:
            found = await self._find_published(user_id, ref)
            if found is None and isinstance(ref, int):
                remembered = self._known_ids.document_id(ref)
                if remembered is not None:
                    found = await self._find_published(user_id, remembered)
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
        users_field = self._settings.read_users_field
        if any(receipt.get(users_field) for receipt in receipts):
            return ReadResult(document_id, already_read=True)
        if receipts:
            target = str(receipts[0]["documentId"])
            await self._write(
                CONTEXT_ADD,
                user_id,
                target,
                self._strapi.update(
                    self._settings.read_collection,
                    target,
                    {users_field: {"connect": [{"id": user_id}]}},
                ),
            )
        else:
            data = {
                self._settings.read_notification_field: {"connect": [{"documentId": document_id}]},
                users_field: {"connect": [{"id": user_id}]},
            }
            await self._write(
                CONTEXT_CREATE,
                user_id,
                document_id,
                self._strapi.create(self._settings.read_collection, data),
            )
        return ReadResult(document_id, already_read=False)

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
