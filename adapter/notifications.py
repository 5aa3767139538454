"""Notifications as the sidecar sees them: the seed's wire payload and the ids handed out.

Strapi re-creates the published row, with a new numeric `id`, on every publish; `documentId` is
the only stable key. Clients of the seed only know the numeric id, so every id the sidecar hands
out is remembered (boundedly) against its documentId.
"""

from __future__ import annotations

from collections import OrderedDict
from operator import itemgetter
from typing import Any

from adapter.strapi import Document

__all__ = ["KnownIds", "Ledger", "audience_ids", "wire_payload"]


def wire_payload(notification: Document) -> dict[str, Any]:
    """The seed's `notificacion` payload, plus `documentId`.

    The seed sends `title: date` on purpose; existing frontends read it there.
    """
    return {
        "mensaje": notification.get("message"),
        "id": notification.get("id"),
        "url": notification.get("url") or None,
        "document": notification.get("document"),
        "title": notification.get("date") or None,
        "documentId": notification.get("documentId"),
    }


def audience_ids(notification: Document, field: str) -> set[int]:
    """The ids of the users a notification's relation field selects."""
    related = notification.get(field) or []
    if not isinstance(related, list):
        return set()
    # What Strapi sends (and webhooks/decode.py makes of it): objects with integer ids. Read in
    # C, a third of the loop below for a 10,000-user publication, whose first recipient waits.
    try:
        ids = set(map(_ID, related))
    except (KeyError, TypeError):  # an item without an id, or not an object
        pass
    else:
        if set(map(type, ids)) <= {int}:
            return ids
    return {int(user["id"]) for user in related if isinstance(user, dict) and "id" in user}


_ID = itemgetter("id")


class KnownIds:
    """A bounded map from numeric ids the sidecar handed out to their documentId."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._ids: OrderedDict[int, str] = OrderedDict()

    def remember(self, numeric_id: int, document_id: str) -> None:
        self._ids[numeric_id] = document_id
        self._ids.move_to_end(numeric_id)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    def document_id(self, numeric_id: int) -> str | None:
        return self._ids.get(numeric_id)


class Ledger:
    """A bounded map documentId -> set of ints, least recently touched dropped first."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._items: OrderedDict[str, set[int]] = OrderedDict()

    def get(self, key: str) -> set[int] | None:
        return self._items.get(key)

    def put(self, key: str, value: set[int]) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def discard(self, key: str) -> None:
        self._items.pop(key, None)

    def add(self, key: str, values: set[int]) -> None:
        self.put(key, (self.get(key) or set()) | values)

    def remove(self, key: str, values: set[int]) -> None:
        current = self.get(key)
        if current is not None:
            current -= values
