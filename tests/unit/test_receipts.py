"""Read receipts: the seed's READNOTIFICATION algorithm against a mocked Strapi."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from adapter.errors import InvalidPayload, NotificationNotFound, UpstreamError
from adapter.notifications import KnownIds
from adapter.receipts import ReadReceipts, parse_notification_ref
from adapter.strapi import StrapiClient, build_http_client
from tests.conftest import make_settings

BASE = "http://strapi.test"
NOTIFICATIONS = f"{BASE}/api/notifications"
READS = f"{BASE}/api/read-notifications"
NOTIFICATION_DOC = "adjutl3unow7mrzedbqgrovl"
READ_DOC = "z8cej69ixo40jwub822adnku"
OTHER_READ_DOC = "k2m9q0vnb7xw4e1r5t8y3u6i"
USER = 5


def documents(*items: dict[str, Any]) -> httpx.Response:
    """A Strapi list response."""
    pagination = {"page": 1, "pageSize": 25, "pageCount": 1, "total": len(items)}
    return httpx.Response(200, json={"data": list(items), "meta": {"pagination": pagination}})


def document(item: dict[str, Any]) -> httpx.Response:
    """A Strapi single-document response (what a write returns)."""
    return httpx.Response(200, json={"data": item, "meta": {}})


def strapi_error(status: int, message: str) -> httpx.Response:
    name = "ValidationError" if status < 500 else "InternalServerError"
    error = {"status": status, "name": name, "message": message, "details": {}}
    return httpx.Response(status, json={"data": None, "error": error})


def notification(**fields: Any) -> dict[str, Any]:
    return {"id": 8, "documentId": NOTIFICATION_DOC, **fields}


def receipt(document_id: str = READ_DOC, *user_ids: int) -> dict[str, Any]:
    return {"id": 4, "documentId": document_id, "users_permissions_users": [{"id": u} for u in user_ids]}


def params(request: httpx.Request) -> list[tuple[str, str]]:
    return sorted(request.url.params.multi_items())


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def lookup_params(key: str, value: object, user_id: int = USER) -> list[tuple[str, str]]:
    return sorted(
        [
            (f"filters[$and][0][{key}][$eq]", str(value)),
            ("filters[$and][1][$or][0][allUsers][$eq]", "true"),
            ("filters[$and][1][$or][1][notification_users][id][$eq]", str(user_id)),
            ("fields[0]", "documentId"),
            ("pagination[page]", "1"),
            ("pagination[pageSize]", "1"),
            ("status", "published"),
        ]
    )


@pytest.fixture
async def strapi() -> AsyncIterator[StrapiClient]:
    async with build_http_client(BASE, "tok", 5.0) as http:
        yield StrapiClient(http)


@pytest.fixture
def known_ids() -> KnownIds:
    return KnownIds(100)


@pytest.fixture
def receipts(strapi: StrapiClient, known_ids: KnownIds) -> ReadReceipts:
    return ReadReceipts(strapi, make_settings(), known_ids)


# -- parse_notification_ref ------------------------------------------------------------------


def test_parse_notification_ref_accepts_a_number() -> None:
    assert parse_notification_ref({"notificationId": 12}) == 12


@pytest.mark.parametrize("raw", ["12", " 12 ", "12\n"])
def test_parse_notification_ref_accepts_a_numeric_string_from_the_dom(raw: str) -> None:
    ref = parse_notification_ref({"notificationId": raw})
    assert ref == 12
    assert isinstance(ref, int)


def test_parse_notification_ref_accepts_a_document_id() -> None:
    assert parse_notification_ref({"notificationId": NOTIFICATION_DOC}) == NOTIFICATION_DOC


def test_parse_notification_ref_accepts_the_largest_safe_integer() -> None:
    assert parse_notification_ref({"notificationId": 2**53 - 1}) == 2**53 - 1


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(None, id="none"),
        pytest.param(12, id="bare-number"),
        pytest.param("12", id="bare-string"),
        pytest.param([12], id="list"),
        pytest.param({}, id="missing-key"),
        pytest.param({"id": 12}, id="wrong-key"),
    ],
)
def test_parse_notification_ref_refuses_anything_but_an_object_with_the_key(data: object) -> None:
    with pytest.raises(InvalidPayload):
        parse_notification_ref(data)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(12.0, id="float"),
        pytest.param(12.5, id="fraction"),
        pytest.param(None, id="null"),
        pytest.param([12], id="list"),
        pytest.param({"id": 12}, id="object"),
        pytest.param(0, id="zero"),
        pytest.param(-3, id="negative"),
        pytest.param("0", id="zero-string"),
        pytest.param("-3", id="negative-string"),
        pytest.param(2**53, id="beyond-safe-integer"),
        pytest.param(10**30, id="huge"),
        pytest.param("9" * 30, id="huge-string"),
        pytest.param("1" * 5000, id="longer-than-int-parsing-allows"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("12 34", id="inner-space"),
        pytest.param("abc def", id="words"),
        pytest.param("abc;drop", id="semicolon"),
        pytest.param("../admin", id="path"),
        pytest.param("a[b]", id="brackets"),
        pytest.param("abc\n", id="trailing-newline"),
        pytest.param("a" * 65, id="too-long"),
    ],
)
def test_parse_notification_ref_refuses_junk(value: object) -> None:
    with pytest.raises(InvalidPayload):
        parse_notification_ref({"notificationId": value})


DOM_STRINGS = st.one_of(
    st.text(),
    st.text(alphabet="0123456789abcXYZ-_ \n\t;.", max_size=80),
    st.builds(
        lambda digits, pad: pad + "9" * digits + pad,
        st.sampled_from([1, 15, 16, 17, 4299, 4301, 6000]),
        st.sampled_from(["", " ", "\n"]),
    ),
)


@given(DOM_STRINGS)
def test_parse_notification_ref_answers_any_string_with_a_ref_or_invalid_payload(value: str) -> None:
    try:
        ref = parse_notification_ref({"notificationId": value})
    except InvalidPayload:
        return
    if isinstance(ref, int):
        assert 0 < ref < 2**53
    else:
        assert ref == value
        assert 1 <= len(ref) <= 64
        assert ref.isascii()
        assert ref[0].isalnum()
        assert all(char.isalnum() or char in "_-" for char in ref)


# -- mark_read: finding the notification -----------------------------------------------------


async def test_mark_read_unknown_notification_is_not_found_and_writes_nothing(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    lookup = respx_mock.get(NOTIFICATIONS).mock(return_value=documents())

    with pytest.raises(NotificationNotFound):
        await receipts.mark_read(USER, 12)

    assert lookup.call_count == 1
    assert respx_mock.calls.call_count == 1


def _emulated_lookup(*rows: dict[str, Any]) -> Any:
    """GET /api/notifications applying the sidecar's filter the way Strapi would."""

    def handler(request: httpx.Request) -> httpx.Response:
        query = request.url.params
        user = int(query["filters[$and][1][$or][1][notification_users][id][$eq]"])
        assert query["filters[$and][1][$or][0][allUsers][$eq]"] == "true"
        wanted = {key: value for key, value in query.items() if key.startswith("filters[$and][0]")}

        def matches(row: dict[str, Any]) -> bool:
            keyed = {f"filters[$and][0][{k}][$eq]": str(row[k]) for k in ("id", "documentId")}
            addressed = row["allUsers"] or user in row["users"]
            return all(keyed.get(k) == v for k, v in wanted.items()) and addressed

        return documents(*({"id": r["id"], "documentId": r["documentId"]} for r in rows if matches(r)))

    return handler


async def test_mark_read_notification_addressed_to_someone_else_is_not_found(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    row = {"id": 12, "documentId": NOTIFICATION_DOC, "allUsers": False, "users": {7}}
    respx_mock.get(NOTIFICATIONS).mock(side_effect=_emulated_lookup(row))

    with pytest.raises(NotificationNotFound):
        await receipts.mark_read(USER, 12)
    with pytest.raises(NotificationNotFound):
        await receipts.mark_read(USER, NOTIFICATION_DOC)

    assert respx_mock.calls.call_count == 2


async def test_mark_read_all_users_notification_is_found_for_anyone(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    row = {"id": 12, "documentId": NOTIFICATION_DOC, "allUsers": True, "users": set()}
    respx_mock.get(NOTIFICATIONS).mock(side_effect=_emulated_lookup(row))
    respx_mock.get(READS).mock(return_value=documents(receipt(READ_DOC, USER)))

    result = await receipts.mark_read(USER, 12)

    assert result.ack() == {"ok": True, "notificationId": NOTIFICATION_DOC, "alreadyRead": True}


async def test_mark_read_sends_the_seed_lookups_with_exact_filters(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    lookup = respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    reads = respx_mock.get(READS).mock(return_value=documents(receipt(READ_DOC, USER)))

    await receipts.mark_read(USER, 12)

    assert params(lookup.calls.last.request) == lookup_params("id", 12)
    assert params(reads.calls.last.request) == sorted(
        [
            ("filters[notification][documentId][$eq]", NOTIFICATION_DOC),
            ("populate[users_permissions_users][filters][id][$eq]", str(USER)),
            ("populate[users_permissions_users][fields][0]", "id"),
            ("fields[0]", "documentId"),
            ("sort", "id:asc"),
            ("pagination[page]", "1"),
            ("pagination[pageSize]", "100"),
        ]
    )


async def test_mark_read_numeric_string_from_the_dom_is_looked_up_by_id(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    lookup = respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents(receipt(READ_DOC, USER)))

    await receipts.mark_read(USER, parse_notification_ref({"notificationId": "12"}))

    assert params(lookup.calls.last.request) == lookup_params("id", 12)


async def test_mark_read_by_document_id_filters_on_document_id(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    lookup = respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents(receipt(READ_DOC, USER)))

    result = await receipts.mark_read(USER, NOTIFICATION_DOC)

    assert params(lookup.calls.last.request) == lookup_params("documentId", NOTIFICATION_DOC)
    assert result.document_id == NOTIFICATION_DOC


# -- mark_read: the READNOTIFICATION branches ------------------------------------------------


async def test_mark_read_already_read_acks_without_writing(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents(receipt(READ_DOC, USER)))

    result = await receipts.mark_read(USER, 12)

    assert result.ack() == {"ok": True, "notificationId": NOTIFICATION_DOC, "alreadyRead": True}
    assert respx_mock.calls.call_count == 2


async def test_mark_read_already_read_in_a_later_duplicate_receipt_writes_nothing(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    # Older deployments may have left two READNOTIFICATIONs for one notification.
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents(receipt(READ_DOC), receipt(OTHER_READ_DOC, USER)))

    result = await receipts.mark_read(USER, 12)

    assert result.already_read is True
    assert respx_mock.calls.call_count == 2


async def test_mark_read_connects_the_user_to_another_users_receipt(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents(receipt(READ_DOC)))
    connect = respx_mock.put(f"{READS}/{READ_DOC}").mock(return_value=document(receipt(READ_DOC, USER)))

    result = await receipts.mark_read(USER, 12)

    assert result.ack() == {"ok": True, "notificationId": NOTIFICATION_DOC, "alreadyRead": False}
    request = connect.calls.last.request
    assert body(request) == {"data": {"users_permissions_users": {"connect": [{"id": 5}]}}}
    assert request.url.params.get("status") is None  # published, as the seed's write was
    assert respx_mock.calls.call_count == 3


async def test_mark_read_connects_to_the_first_of_several_receipts(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents(receipt(READ_DOC), receipt(OTHER_READ_DOC)))
    connect = respx_mock.put(f"{READS}/{READ_DOC}").mock(return_value=document(receipt(READ_DOC, USER)))

    await receipts.mark_read(USER, 12)

    assert connect.call_count == 1
    assert respx_mock.calls.call_count == 3


async def test_mark_read_creates_the_receipt_when_none_exists(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents())
    create = respx_mock.post(READS).mock(return_value=document(receipt(READ_DOC, USER)))

    result = await receipts.mark_read(USER, 12)

    assert result.ack() == {"ok": True, "notificationId": NOTIFICATION_DOC, "alreadyRead": False}
    request = create.calls.last.request
    assert body(request) == {
        "data": {
            "notification": {"connect": [{"documentId": NOTIFICATION_DOC}]},
            "users_permissions_users": {"connect": [{"id": 5}]},
        }
    }
    assert request.url.params.get("status") is None  # created published, as in the seed
    assert respx_mock.calls.call_count == 3


async def test_mark_read_numeric_id_of_a_republished_notification_resolves_through_known_ids(
    receipts: ReadReceipts, known_ids: KnownIds, respx_mock: respx.MockRouter
) -> None:
    # The client holds the id it was sent (8); a republish since gave the row a new id.
    known_ids.remember(8, NOTIFICATION_DOC)
    lookup = respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification(id=11)))
    respx_mock.get(READS).mock(return_value=documents())
    create = respx_mock.post(READS).mock(return_value=document(receipt(READ_DOC, USER)))

    result = await receipts.mark_read(USER, parse_notification_ref({"notificationId": "8"}))

    assert result.ack() == {"ok": True, "notificationId": NOTIFICATION_DOC, "alreadyRead": False}
    [first] = (call.request for call in lookup.calls)
    assert params(first) == lookup_params("documentId", NOTIFICATION_DOC)
    assert body(create.calls.last.request)["data"]["notification"] == {
        "connect": [{"documentId": NOTIFICATION_DOC}]
    }
    assert respx_mock.calls.call_count == 3  # a remembered id is looked up by its documentId at once


async def test_mark_read_remembered_id_whose_document_is_gone_falls_back_to_the_id(
    receipts: ReadReceipts, known_ids: KnownIds, respx_mock: respx.MockRouter
) -> None:
    known_ids.remember(8, NOTIFICATION_DOC)
    lookup = respx_mock.get(NOTIFICATIONS).mock(side_effect=[documents(), documents(notification(id=8))])
    respx_mock.get(READS).mock(return_value=documents())
    respx_mock.post(READS).mock(return_value=document(receipt(READ_DOC, USER)))

    result = await receipts.mark_read(USER, 8)

    assert result.already_read is False
    first, second = (call.request for call in lookup.calls)
    assert params(first) == lookup_params("documentId", NOTIFICATION_DOC)
    assert params(second) == lookup_params("id", 8)


async def test_mark_read_unknown_numeric_id_is_not_looked_up_again(
    receipts: ReadReceipts, known_ids: KnownIds, respx_mock: respx.MockRouter
) -> None:
    known_ids.remember(9, "someotherdoc0000000000000")
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents())

    with pytest.raises(NotificationNotFound):
        await receipts.mark_read(USER, 8)

    assert respx_mock.calls.call_count == 1


async def test_mark_read_remembered_id_no_longer_addressed_is_not_found(
    receipts: ReadReceipts, known_ids: KnownIds, respx_mock: respx.MockRouter
) -> None:
    known_ids.remember(8, NOTIFICATION_DOC)
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents())

    with pytest.raises(NotificationNotFound):
        await receipts.mark_read(USER, 8)

    assert respx_mock.calls.call_count == 2


# -- mark_read: failures ---------------------------------------------------------------------


async def test_mark_read_failed_connect_is_an_upstream_error_logged_as_the_seed_did(
    receipts: ReadReceipts, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents(receipt(READ_DOC)))
    respx_mock.put(f"{READS}/{READ_DOC}").mock(return_value=strapi_error(400, "Invalid relations"))

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"), pytest.raises(UpstreamError):
        await receipts.mark_read(USER, 12)

    assert [r.getMessage() for r in caplog.records if r.name == "adapter.receipts"] == [
        f"Error while add user to notification with user ID: 5 and notification ID: {READ_DOC}: "
        "Invalid relations"
    ]


async def test_mark_read_failed_create_is_an_upstream_error_logged_as_the_seed_did(
    receipts: ReadReceipts, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents())
    respx_mock.post(READS).mock(return_value=strapi_error(500, "Internal Server Error"))

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"), pytest.raises(UpstreamError):
        await receipts.mark_read(USER, 12)

    assert [r.getMessage() for r in caplog.records if r.name == "adapter.receipts"] == [
        "Error while create user to notification relation with user ID: 5 and notification ID: "
        f"{NOTIFICATION_DOC}: Internal Server Error"
    ]


async def test_mark_read_unreachable_strapi_on_write_is_an_upstream_error(
    receipts: ReadReceipts, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents())
    respx_mock.post(READS).mock(side_effect=httpx.ConnectError("connection refused"))

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"), pytest.raises(UpstreamError):
        await receipts.mark_read(USER, 12)

    assert [r.getMessage() for r in caplog.records if r.name == "adapter.receipts"] == [
        "Error while create user to notification relation with user ID: 5 and notification ID: "
        f"{NOTIFICATION_DOC}: unreachable: ConnectError"
    ]


async def test_mark_read_failed_notification_lookup_is_an_upstream_error_not_a_missing_one(
    receipts: ReadReceipts, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=strapi_error(503, "Service Unavailable"))

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"), pytest.raises(UpstreamError):
        await receipts.mark_read(USER, 12)

    assert [r.getMessage() for r in caplog.records if r.name == "adapter.receipts"] == [
        "Error while find notification with user ID: 5 and notification ID: 12: Service Unavailable"
    ]
    assert respx_mock.calls.call_count == 1


async def test_mark_read_failed_receipt_lookup_is_an_upstream_error_and_writes_nothing(
    receipts: ReadReceipts, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=strapi_error(503, "Service Unavailable"))

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"), pytest.raises(UpstreamError):
        await receipts.mark_read(USER, 12)

    assert [r.getMessage() for r in caplog.records if r.name == "adapter.receipts"] == [
        "Error while find notification with user ID: 5 and notification ID: "
        f"{NOTIFICATION_DOC}: Service Unavailable"
    ]
    assert respx_mock.calls.call_count == 2


async def test_mark_read_lock_is_released_after_a_failure(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents())
    respx_mock.post(READS).mock(
        side_effect=[strapi_error(500, "Internal Server Error"), document(receipt(READ_DOC, USER))]
    )

    with pytest.raises(UpstreamError):
        await receipts.mark_read(USER, 12)
    result = await asyncio.wait_for(receipts.mark_read(USER, 12), timeout=2)

    assert result.already_read is False


# -- mark_read: concurrency ------------------------------------------------------------------


class FakeReadNotifications:
    """Strapi's read-notifications collection, slow enough for two reads to interleave."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []  # {documentId, notification, users}

    async def find(self, request: httpx.Request) -> httpx.Response:
        query = request.url.params
        notification_doc = query["filters[notification][documentId][$eq]"]
        user = int(query["populate[users_permissions_users][filters][id][$eq]"])
        await asyncio.sleep(0.01)  # a real round trip: other reads run meanwhile
        rows = [row for row in self.rows if row["notification"] == notification_doc]
        # The populate filter keeps only this user, if the receipt holds them.
        return documents(
            *(
                {
                    "documentId": row["documentId"],
                    "users_permissions_users": [{"id": user}] if user in row["users"] else [],
                }
                for row in rows
            )
        )

    async def create(self, request: httpx.Request) -> httpx.Response:
        data = body(request)["data"]
        await asyncio.sleep(0.01)
        row = {
            "documentId": f"read{len(self.rows):020d}",
            "notification": data["notification"]["connect"][0]["documentId"],
            "users": {item["id"] for item in data["users_permissions_users"]["connect"]},
        }
        self.rows.append(row)
        return document({"documentId": row["documentId"]})

    async def connect(self, request: httpx.Request, document_id: str) -> httpx.Response:
        data = body(request)["data"]
        await asyncio.sleep(0.01)
        (row,) = [row for row in self.rows if row["documentId"] == document_id]
        row["users"] |= {item["id"] for item in data["users_permissions_users"]["connect"]}
        return document({"documentId": document_id})


async def test_mark_read_two_users_at_once_share_one_receipt(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    fake = FakeReadNotifications()
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(side_effect=fake.find)
    create = respx_mock.post(READS).mock(side_effect=fake.create)
    connect = respx_mock.put(url__regex=rf"{READS}/(?P<document_id>\w+)").mock(side_effect=fake.connect)

    first, second = await asyncio.gather(receipts.mark_read(5, 12), receipts.mark_read(6, 12))

    assert create.call_count == 1
    assert connect.call_count == 1
    assert [(row["notification"], row["users"]) for row in fake.rows] == [(NOTIFICATION_DOC, {5, 6})]
    assert (first.already_read, second.already_read) == (False, False)
