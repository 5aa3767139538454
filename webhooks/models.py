"""Webhook payloads, modelled on real Strapi 5.54 deliveries.

Every delivery is `{event, createdAt, model, uid, entry}`. `entry` is the sanitized row: for
create/update/publish with relations populated one level deep, for delete/unpublish scalars only,
and it has been seen `null` on publish. Unknown keys are kept, not refused: Strapi adds fields.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EntryRef", "WebhookPayload"]

EVENT_PATTERN = r"^[a-z][a-z-]*\.[a-z][a-z-]*$"
# Strapi's documentIds are 24 lowercase letters and digits; what the sidecar puts in a Strapi
# URL path must not be able to leave it ("../users/5", "?status=draft", "%2e%2e").
DOCUMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


class EntryRef(BaseModel):
    """The part of any content-type entry the sidecar relies on."""

    model_config = ConfigDict(extra="allow")

    id: int | None = None
    document_id: str = Field(alias="documentId", min_length=1, max_length=64, pattern=DOCUMENT_ID_PATTERN)
    published_at: str | None = Field(None, alias="publishedAt")


class WebhookPayload(BaseModel):
    """One Strapi webhook delivery."""

    model_config = ConfigDict(extra="allow")

    event: str = Field(pattern=EVENT_PATTERN, max_length=64)
    created_at: str | None = Field(None, alias="createdAt")
    model: str | None = None
    uid: str | None = Field(None, max_length=200)
    entry: dict[str, Any] | None = None

    @property
    def is_entry_event(self) -> bool:
        return self.event.startswith("entry.")

    def entry_ref(self) -> EntryRef | None:
        """The entry's id and documentId, or None when Strapi sent no usable entry."""
        if self.entry is None:
            return None
        return EntryRef.model_validate(self.entry)
