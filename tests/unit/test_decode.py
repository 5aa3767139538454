"""webhooks/decode.py: a webhook body decodes as `json.loads` would, except that the relation
lists named (the audience, the readers) hold only their items' ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.unit.test_hostile import DELIVERIES, FUZZ, JSON_VALUES
from webhooks.decode import decode_webhook

ID_LISTS = frozenset({"notification_users", "users_permissions_users"})
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "webhook-samples.jsonl"


def expected(body: bytes) -> Any:
    """`json.loads(body)`, with each named list of objects whose ids are integers (or absent)
    reduced to those ids: the documented result, written out independently."""
    raw = json.loads(body)
    entry = raw.get("entry") if isinstance(raw, dict) else None
    if isinstance(entry, dict):
        for name in ID_LISTS & entry.keys():
            items = entry[name]
            if isinstance(items, list) and all(
                isinstance(item, dict) and (type(item.get("id")) is int or "id" not in item) for item in items
            ):
                entry[name] = [{"id": item["id"]} if "id" in item else {} for item in items]
    return raw


def _user(user_id: int) -> dict[str, Any]:
    return {
        "id": user_id,
        "documentId": f"user{user_id:020d}",
        "username": f"user{user_id}",
        "email": f"user{user_id}@example.com",
        "provider": "local",
        "confirmed": True,
        "blocked": False,
        "createdAt": "2026-11-25T18:42:10.393Z",
    }


def test_a_publication_keeps_every_field_and_its_audience_as_ids_in_order() -> None:
    entry = {
        "id": 12,
        "documentId": "doc12",
        "message": "Hola ñandú \u2603",
        "url": "/x",
        "date": "2026-01-01",
        "allUsers": False,
        "publishedAt": "2026-11-25T18:42:10.410Z",
        "document": {"id": 3, "url": "/uploads/a.pdf", "name": "a.pdf"},
        "notification_users": [_user(7), _user(3), _user(5)],
    }
    body = json.dumps(
        {"event": "entry.publish", "createdAt": "t", "model": "notification", "uid": "u", "entry": entry}
    )

    decoded = decode_webhook(body.encode(), ID_LISTS)

    assert decoded["entry"]["notification_users"] == [{"id": 7}, {"id": 3}, {"id": 5}]
    assert {k: v for k, v in decoded["entry"].items() if k != "notification_users"} == {
        k: v for k, v in entry.items() if k != "notification_users"
    }
    assert {k: v for k, v in decoded.items() if k != "entry"} == {
        "event": "entry.publish",
        "createdAt": "t",
        "model": "notification",
        "uid": "u",
    }


@pytest.mark.parametrize("line", SAMPLES.read_text().splitlines())
def test_strapis_own_deliveries_decode_as_json_with_ids(line: str) -> None:
    body = json.dumps(json.loads(line)["body"]).encode()
    assert decode_webhook(body, ID_LISTS) == expected(body)


@pytest.mark.parametrize(
    "users",
    [
        [{"id": 5, "username": "a"}, {"id": "6"}],  # an id that is not a number
        [{"id": 5}, {"id": True}],  # a boolean is not an id
        [{"id": 5}, {"id": 6.0}],
        [{"id": 5}, 6],  # an item that is not an object
        [{"id": 10**30}],  # beyond 64 bits: only the id, so the same
        {"id": 5},
        "everyone",
        None,
    ],
)
def test_lists_that_are_not_objects_with_integer_ids_are_decoded_as_they_are(users: object) -> None:
    body = json.dumps(
        {"event": "entry.publish", "uid": "u", "entry": {"documentId": "d", "notification_users": users}}
    )
    decoded = decode_webhook(body.encode(), ID_LISTS)
    assert decoded["entry"]["notification_users"] == users


def test_ids_beyond_64_bits_are_ids_too() -> None:
    body = json.dumps(
        {"event": "entry.publish", "entry": {"notification_users": [{"id": 10**30, "username": "a"}]}}
    )
    assert decode_webhook(body.encode(), ID_LISTS)["entry"]["notification_users"] == [{"id": 10**30}]


def test_items_without_an_id_become_empty_objects() -> None:
    body = json.dumps(
        {
            "event": "entry.update",
            "uid": "u",
            "entry": {"users_permissions_users": [{"username": "a"}, {"id": 4}]},
        }
    )
    assert decode_webhook(body.encode(), ID_LISTS)["entry"]["users_permissions_users"] == [{}, {"id": 4}]


@pytest.mark.parametrize(
    "body",
    [
        b'{"event": "entry.create", "entry": {"a": NaN}}',  # json.loads takes NaN, msgspec does not
        b'\xef\xbb\xbf{"event": "entry.create"}',  # a byte order mark
        b'{"event": "entry.create\\ud800"}',  # a lone surrogate
        b'{"event": "entry.create", "entry": {"a": 1e400}}',
        b'{"event": "entry.create", "extra": 1, "entry": {"notification_users": [{"id": 1, "x": 2}]}}',
        b'{"event": "entry.create", "entry": [1, 2]}',
        b'{"event": "entry.create", "entry": null}',
        b"[1, 2]",
        b'"entry"',
        b"  {}  ",
    ],
)
def test_what_msgspec_refuses_or_reads_differently_is_decoded_by_json(body: bytes) -> None:
    assert decode_webhook(body, ID_LISTS) == expected(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"event": "x"} trailing',
        b'{"event": "\xff"}',  # not UTF-8
        b'{"entry": {"id": ' + b"9" * 5000 + b"}}",  # json refuses integers over 4,300 digits
        b'{"entry": {"notification_users": [{"id": ' + b"9" * 5000 + b"}]}}",
        b'{"entry": {"a": ' + b"[" * 20_000 + b"]" * 20_000 + b"}}",
        b'{"entry": {"notification_users": ' + b"[" * 20_000 + b"]" * 20_000 + b"}}",
    ],
)
def test_what_json_refuses_is_refused_with_jsons_errors(body: bytes) -> None:
    with pytest.raises((ValueError, RecursionError)):
        json.loads(body)
    with pytest.raises((ValueError, RecursionError)):
        decode_webhook(body, ID_LISTS)


USERS = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"id": st.integers(min_value=-(2**70), max_value=2**70)}, optional={"username": JSON_VALUES}
        ),
        st.fixed_dictionaries({}, optional={"id": JSON_VALUES, "documentId": JSON_VALUES}),
        JSON_VALUES,
    ),
    max_size=5,
)
BODIES = st.one_of(
    DELIVERIES.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries(
        {
            "event": st.just("entry.publish"),
            "entry": st.fixed_dictionaries({"notification_users": USERS}, optional={"id": JSON_VALUES}),
        },
        optional={"uid": JSON_VALUES},
    ).map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=60),
)


@FUZZ
@given(body=BODIES)
@example(body=b'{"event": "entry.publish", "entry": {"notification_users": [{"id": 1}, {"id": false}]}}')
def test_any_body_decodes_as_json_with_ids_or_is_refused_as_json_refuses_it(body: bytes) -> None:
    try:
        wanted = expected(body)
    except (ValueError, RecursionError):
        with pytest.raises((ValueError, RecursionError)):
            decode_webhook(body, ID_LISTS)
        return
    assert decode_webhook(body, ID_LISTS) == wanted
