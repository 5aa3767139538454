"""Reading a webhook's JSON body without building what nobody reads.

Strapi puts every selected user in a notification's delivery, each a full user object (~290 bytes:
id, documentId, username, email, provider, confirmed, blocked, dates...). Of those the sidecar
reads the ids alone, yet `json.loads` builds a dictionary and a dozen strings for each: for a
10,000-user publication that is most of the 12 ms it takes, spent before the first recipient
can be told (the publication waits for its body to be parsed), and ~100,000 objects for the
garbage collector.

`decode_webhook` decodes such relation lists (the entry's fields named in `id_lists`) with msgspec
into their ids only (`[{"id": 5}, ...]`; an item without an `id` becomes `{}`), and everything
else as `json.loads` would. A list whose items are not all objects with an integer id (or none)
is kept as it is. What msgspec refuses or reads differently is left to `json.loads` itself: a
body msgspec cannot decode (NaN, a byte order mark, a lone surrogate, a number out of range,
malformed JSON) or that is not Strapi's envelope (another top-level key, an entry that is not an
object) is decoded by `json.loads`, which accepts or refuses it as before, and its lists are
reduced the same way. So the result is always `json.loads(body)` with those lists reduced, and
a body `json.loads` refuses raises what it raises.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

import msgspec

__all__ = ["decode_webhook"]


class _Related(TypedDict, total=False):
    """A related entry, of which only the id is read: msgspec builds `{"id": 5}` (or `{}`)
    itself, skipping the other fields without building them."""

    id: int


class _Delivery(msgspec.Struct, forbid_unknown_fields=True):
    """Strapi's envelope, read in the same pass as the entry's fields (each kept undecoded)."""

    event: Any = msgspec.UNSET
    createdAt: Any = msgspec.UNSET
    model: Any = msgspec.UNSET
    uid: Any = msgspec.UNSET
    entry: dict[str, msgspec.Raw] | msgspec.UnsetType | None = msgspec.UNSET


_DELIVERY = msgspec.json.Decoder(_Delivery)
_RELATED = msgspec.json.Decoder(list[_Related])
_ANY = msgspec.json.Decoder()
# What msgspec raises for a body it will not decode; `json.loads` then decides.
_REFUSED = (msgspec.DecodeError, ValueError, RecursionError)


def decode_webhook(body: bytes | bytearray, id_lists: frozenset[str]) -> Any:
    """`json.loads(body)`, with the entry's `id_lists` fields reduced to their items' ids.

    Raises what `json.loads` raises for a body that is not JSON."""
    try:
        delivery = _DELIVERY.decode(body)
        decoded: dict[str, Any] = {}
        for name in _Delivery.__struct_fields__:
            value = getattr(delivery, name)
            if value is msgspec.UNSET:
                continue
            if name == "entry" and value is not None:
                value = {
                    key: _ids(raw) if key in id_lists else _ANY.decode(raw) for key, raw in value.items()
                }
            decoded[name] = value
    except _REFUSED:
        # Not JSON, not what msgspec reads, or not Strapi's envelope with an object or null entry
        # (another top-level key, an entry that is a list...): json.loads decides.
        return _reduced(json.loads(body), id_lists)
    return decoded


def _ids(raw: msgspec.Raw) -> Any:
    try:
        return _RELATED.decode(raw)
    except msgspec.ValidationError:  # not a list of objects with integer ids: kept as it is
        return _ANY.decode(raw)


def _reduced(raw: Any, id_lists: frozenset[str]) -> Any:
    entry = raw.get("entry") if isinstance(raw, dict) else None
    if isinstance(entry, dict):
        for name in id_lists & entry.keys():
            entry[name] = _only_ids(entry[name])
    return raw


def _only_ids(value: Any) -> Any:
    """A list of objects whose ids are integers (or absent) as those ids; anything else as it is."""
    if isinstance(value, list) and all(
        isinstance(item, dict) and ("id" not in item or type(item["id"]) is int) for item in value
    ):
        return [{"id": item["id"]} if "id" in item else {} for item in value]
    return value
