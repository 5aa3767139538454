"""Read receipts: the seed's READNOTIFICATION algorithm against a mocked Strapi.

Two kinds of Strapi stand-in: plain respx routes where the exact request matters, and
`FakeStrapi`, a stateful emulation of the notifications and read-notifications collections that
answers the sidecar's query shapes the way Strapi does, for what ends up stored under load,
outages and shutdown.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
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
STOPPED = "stopped before Strapi had it"


def documents(
    *items: dict[str, Any], page: int = 1, page_size: int = 25, total: int | None = None
) -> httpx.Response:
    """A Strapi list response."""
    total = len(items) if total is None else total
    pagination = {"page": page, "pageSize": page_size, "pageCount": -(-total // page_size), "total": total}
    return httpx.Response(200, json={"data": list(items), "meta": {"pagination": pagination}})


def document(item: dict[str, Any]) -> httpx.Response:
    """A Strapi single-document response (what a write returns)."""
    return httpx.Response(200, json={"data": item, "meta": {}})


def strapi_error(status: int, message: str) -> httpx.Response:
    name = "ValidationError" if status < 500 else "InternalServerError"
    error = {"status": status, "name": name, "message": message, "details": {}}
    return httpx.Response(status, json={"data": None, "error": error})


def notification(audience: Iterable[int] = (USER,), **fields: Any) -> dict[str, Any]:
    """A published notification as the sidecar's lookup gets it back."""
    return {
        "id": 12,
        "documentId": NOTIFICATION_DOC,
        "allUsers": False,
        "notification_users": [{"id": user} for user in audience],
        **fields,
    }


def receipt(document_id: str = READ_DOC, *user_ids: int) -> dict[str, Any]:
    return {"id": 4, "documentId": document_id, "users_permissions_users": [{"id": u} for u in user_ids]}


def params(request: httpx.Request) -> list[tuple[str, str]]:
    return sorted(request.url.params.multi_items())


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def lookup_params(key: str, value: object) -> list[tuple[str, str]]:
    """The notification lookup: by id or documentId, published, with its audience."""
    return sorted(
        [
            (f"filters[{key}][$eq]", str(value)),
            ("fields[0]", "documentId"),
            ("fields[1]", "allUsers"),
            ("populate[notification_users][fields][0]", "id"),
            ("pagination[page]", "1"),
            ("pagination[pageSize]", "1"),
            ("status", "published"),
        ]
    )


def readers_params(*users: int, document_id: str = NOTIFICATION_DOC) -> list[tuple[str, str]]:
    """The READNOTIFICATIONs lookup; with users, the populated readers are filtered to them."""
    return sorted(
        [
            ("filters[notification][documentId][$eq]", document_id),
            ("populate[users_permissions_users][fields][0]", "id"),
            *(
                (f"populate[users_permissions_users][filters][id][$in][{i}]", str(u))
                for i, u in enumerate(users)
            ),
            ("fields[0]", "documentId"),
            ("sort", "id:asc"),
            ("pagination[page]", "1"),
            ("pagination[pageSize]", "100"),
        ]
    )


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "adapter.receipts" and r.levelno >= logging.ERROR
    ]


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "adapter.receipts" and r.levelno == logging.WARNING
    ]


async def until(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.001)


# -- a stateful Strapi -----------------------------------------------------------------------


def _in_list(query: dict[str, str], prefix: str) -> list[str]:
    """The values of a qs-encoded `$in` list (`prefix[0]`, `prefix[1]`, ...), in index order."""
    pattern = re.compile(re.escape(prefix) + r"\[(\d+)\]")
    indexed = sorted(
        (int(m.group(1)), value) for key, value in query.items() if (m := pattern.fullmatch(key))
    )
    assert [index for index, _ in indexed] == list(range(len(indexed)))
    return [value for _, value in indexed]


def _shape(query: dict[str, str]) -> set[str]:
    """The query's keys with `$in` indices folded: what does not vary with the data."""
    return {re.sub(r"\[\$in\]\[\d+\]$", "[$in][]", key) for key in query}


NOTIFICATION_QUERY = {k: v for k, v in lookup_params("id", 0) if not k.startswith("filters")}
RECEIPTS_QUERY = {
    "populate[users_permissions_users][fields][0]": "id",
    "fields[0]": "documentId",
    "sort": "id:asc",
    "pagination[page]": "1",
    "pagination[pageSize]": "100",
}


class FakeStrapi:
    """Strapi's notifications and read-notifications collections behind the sidecar's routes.

    Answers only the query shapes the sidecar sends (anything else fails the test), applies
    filters and populate filters the way Strapi does, and can delay, hold or fail requests.
    """

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self.receipts: list[dict[str, Any]] = []  # {id, documentId, notification, users}
        self.requests: list[httpx.Request] = []
        self.failures: dict[str, list[httpx.Response | Exception]] = {}  # "METHOD /path" -> next answers
        self.write_delay = 0.0
        self.writes_wait_for: asyncio.Event | None = None
        self.write_started = asyncio.Event()
        self.batched_lookup_gate: asyncio.Event | None = None
        self._ids = itertools.count(100)

    # -- state -------------------------------------------------------------------------------

    def publish(
        self,
        numeric_id: int = 12,
        document_id: str = NOTIFICATION_DOC,
        *,
        audience: Iterable[int] = (USER,),
        all_users: bool = False,
    ) -> None:
        self.notifications.append(
            {"id": numeric_id, "documentId": document_id, "allUsers": all_users, "audience": set(audience)}
        )

    def add_receipt(self, notification_doc: str, *users: int, document_id: str | None = None) -> str:
        number = next(self._ids)
        document_id = document_id or f"read{number:020d}"
        self.receipts.append(
            {"id": number, "documentId": document_id, "notification": notification_doc, "users": set(users)}
        )
        return document_id

    def readers(self, notification_doc: str = NOTIFICATION_DOC) -> list[set[int]]:
        """The users of each READNOTIFICATION of a notification, oldest first."""
        return [set(r["users"]) for r in self.receipts if r["notification"] == notification_doc]

    def count(self, method: str, path: str = "/") -> int:
        return sum(1 for r in self.requests if r.method == method and r.url.path.startswith(path))

    @property
    def writes(self) -> int:
        return sum(self.count(method) for method in ("POST", "PUT", "DELETE"))

    # -- the REST routes ---------------------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        self.requests.append(request)
        if method != "GET":
            self.write_started.set()
            if self.writes_wait_for is not None:
                await self.writes_wait_for.wait()
            await asyncio.sleep(self.write_delay)  # a real round trip: other reads run meanwhile
        queued = self.failures.get(f"{method} {path}")
        if queued:
            failure = queued.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        query = dict(request.url.params.multi_items())
        one = "/api/read-notifications/"
        if (method, path) == ("GET", "/api/notifications"):
            return self._find_notification(query)
        if (method, path) == ("GET", "/api/read-notifications"):
            return await self._find_receipts(query)
        if (method, path) == ("POST", "/api/read-notifications"):
            return self._create(request)
        if method == "PUT" and path.startswith(one):
            return self._connect(request, path.removeprefix(one))
        if method == "DELETE" and path.startswith(one):
            return self._delete(path.removeprefix(one))
        raise AssertionError(f"unexpected request {method} {request.url}")

    def _find_notification(self, query: dict[str, str]) -> httpx.Response:
        by = {"filters[id][$eq]": "id", "filters[documentId][$eq]": "documentId"}
        [key] = [key for key in query if key in by]
        assert query == {key: query[key], **NOTIFICATION_QUERY}
        rows = [n for n in self.notifications if str(n[by[key]]) == query[key]]
        return documents(
            *(
                {
                    "id": n["id"],
                    "documentId": n["documentId"],
                    "allUsers": n["allUsers"],
                    "notification_users": [{"id": user} for user in sorted(n["audience"])],
                }
                for n in rows[:1]
            )
        )

    async def _find_receipts(self, query: dict[str, str]) -> httpx.Response:
        rows = sorted(self.receipts, key=lambda r: r["id"])
        if "filters[notification][documentId][$eq]" in query:  # one notification's, with readers
            wanted = _in_list(query, "populate[users_permissions_users][filters][id][$in]")
            filtered = {"populate[users_permissions_users][filters][id][$in][]"} if wanted else set()
            assert _shape(query) == {"filters[notification][documentId][$eq]", *RECEIPTS_QUERY, *filtered}
            assert {key: query[key] for key in RECEIPTS_QUERY} == RECEIPTS_QUERY
            of = query["filters[notification][documentId][$eq]"]
            keep = {int(user) for user in wanted}
            return documents(
                *(
                    {
                        "id": r["id"],
                        "documentId": r["documentId"],
                        "users_permissions_users": [
                            {"id": user} for user in sorted(r["users"]) if not wanted or user in keep
                        ],
                    }
                    for r in rows
                    if r["notification"] == of
                ),
                page_size=100,
            )
        if "filters[documentId][$in][0]" in query:  # duplicates, with all their readers
            assert _shape(query) == {
                "filters[documentId][$in][]",
                "populate[users_permissions_users][fields][0]",
                "fields[0]",
                "pagination[page]",
                "pagination[pageSize]",
            }
            wanted_docs = set(_in_list(query, "filters[documentId][$in]"))
            return documents(
                *(
                    {
                        "id": r["id"],
                        "documentId": r["documentId"],
                        "users_permissions_users": [{"id": user} for user in sorted(r["users"])],
                    }
                    for r in rows
                    if r["documentId"] in wanted_docs
                ),
                page_size=100,
            )
        # read-all: the first READNOTIFICATIONs of many notifications, a page at a time
        assert _shape(query) == {
            "filters[notification][documentId][$in][]",
            "populate[notification][fields][0]",
            "fields[0]",
            "sort",
            "pagination[page]",
            "pagination[pageSize]",
        }
        assert query["sort"] == "id:asc"
        of_any = set(_in_list(query, "filters[notification][documentId][$in]"))
        page, size = int(query["pagination[page]"]), int(query["pagination[pageSize]"])
        matching = [r for r in rows if r["notification"] in of_any]
        answer = documents(
            *(
                {
                    "id": r["id"],
                    "documentId": r["documentId"],
                    "notification": {"documentId": r["notification"]},
                }
                for r in matching[(page - 1) * size : page * size]
            ),
            page=page,
            page_size=size,
            total=len(matching),
        )
        if self.batched_lookup_gate is not None:
            await self.batched_lookup_gate.wait()  # answered from the state it was asked in
        return answer

    def _create(self, request: httpx.Request) -> httpx.Response:
        data = body(request)["data"]
        assert set(data) == {"notification", "users_permissions_users"}
        [target] = data["notification"]["connect"]
        users = [item["id"] for item in data["users_permissions_users"]["connect"]]
        document_id = self.add_receipt(target["documentId"], *users)
        return document({"documentId": document_id})

    def _connect(self, request: httpx.Request, document_id: str) -> httpx.Response:
        data = body(request)["data"]
        assert set(data) == {"users_permissions_users"}
        found = [r for r in self.receipts if r["documentId"] == document_id]
        if not found:
            return strapi_error(404, "Not Found")
        found[0]["users"] |= {item["id"] for item in data["users_permissions_users"]["connect"]}
        return document({"documentId": document_id})

    def _delete(self, document_id: str) -> httpx.Response:
        self.receipts = [r for r in self.receipts if r["documentId"] != document_id]
        return httpx.Response(204)


# -- fixtures --------------------------------------------------------------------------------


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


@pytest.fixture
def no_retry(strapi: StrapiClient, known_ids: KnownIds) -> ReadReceipts:
    """Read receipts that give up on the first Strapi outage (READ_RETRY_SECONDS=0)."""
    return ReadReceipts(strapi, make_settings(read_retry_seconds=0), known_ids)


@pytest.fixture
def fake(respx_mock: respx.MockRouter) -> FakeStrapi:
    fake = FakeStrapi()
    respx_mock.route(host="strapi.test").mock(side_effect=fake.handle)
    return fake


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


async def test_mark_read_notification_addressed_to_someone_else_is_not_found_and_writes_nothing(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish(audience={7})

    with pytest.raises(NotificationNotFound):
        await receipts.mark_read(USER, 12)
    with pytest.raises(NotificationNotFound):
        await receipts.mark_read(USER, NOTIFICATION_DOC)

    assert fake.count("GET", "/api/read-notifications") == 0
    assert fake.writes == 0
    assert fake.receipts == []
    assert USER not in (receipts.readers.get(NOTIFICATION_DOC) or set())


async def test_mark_read_all_users_notification_is_found_for_anyone(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish(audience=(), all_users=True)

    result = await receipts.mark_read(USER, 12)

    assert result.ack() == {"ok": True, "notificationId": NOTIFICATION_DOC, "alreadyRead": False}
    assert fake.readers() == [{USER}]


async def test_mark_read_sends_the_seed_lookups_with_exact_params(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    lookup = respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    reads = respx_mock.get(READS).mock(return_value=documents(receipt(READ_DOC, USER)))

    await receipts.mark_read(USER, 12)

    assert params(lookup.calls.last.request) == lookup_params("id", 12)
    assert params(reads.calls.last.request) == readers_params(USER)


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


async def test_mark_read_readers_lookup_of_up_to_fifty_users_is_filtered_to_them(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    users = list(range(1, 51))
    fake.publish(audience=users)
    fake.add_receipt(NOTIFICATION_DOC, 99)

    await asyncio.gather(*(receipts.mark_read(user, 12) for user in reversed(users)))

    [lookup] = [r for r in fake.requests if r.url.path == "/api/read-notifications" and r.method == "GET"]
    assert params(lookup) == readers_params(*users)
    assert fake.readers() == [{99, *users}]


async def test_mark_read_readers_lookup_of_more_than_fifty_users_asks_for_all_readers(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    users = list(range(1, 52))
    fake.publish(audience=users)
    fake.add_receipt(NOTIFICATION_DOC, 7, 99)

    results = await asyncio.gather(*(receipts.mark_read(user, 12) for user in users))

    [lookup] = [r for r in fake.requests if r.url.path == "/api/read-notifications" and r.method == "GET"]
    assert params(lookup) == readers_params()
    assert [r.already_read for r in results] == [user == 7 for user in users]
    assert fake.readers() == [{99, *users}]


# -- mark_read: the READNOTIFICATION branches ------------------------------------------------


async def test_mark_read_already_read_acks_without_writing(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents(receipt(READ_DOC, USER)))

    result = await receipts.mark_read(USER, 12)

    assert result.ack() == {"ok": True, "notificationId": NOTIFICATION_DOC, "alreadyRead": True}
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
    assert receipts.readers.get(NOTIFICATION_DOC) == {USER}


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


async def test_mark_read_same_user_twice_at_once_is_recorded_once(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish()

    first, second = await asyncio.gather(receipts.mark_read(USER, 12), receipts.mark_read(USER, 12))

    assert fake.readers() == [{USER}]
    assert fake.writes == 1
    assert body(fake.requests[-1])["data"]["users_permissions_users"] == {"connect": [{"id": USER}]}
    assert False in (first.already_read, second.already_read)


async def test_mark_read_connects_to_the_first_receipt_and_merges_the_duplicates_into_it(
    receipts: ReadReceipts, fake: FakeStrapi, caplog: pytest.LogCaptureFixture
) -> None:
    # Older deployments (or a race without the lock) may have left two for one notification.
    fake.publish(audience={1, 2, 3, USER})
    fake.add_receipt(NOTIFICATION_DOC, 1, document_id=READ_DOC)
    fake.add_receipt(NOTIFICATION_DOC, 2, 3, document_id=OTHER_READ_DOC)

    with caplog.at_level(logging.WARNING, logger="adapter.receipts"):
        result = await receipts.mark_read(USER, 12)

    assert result.already_read is False
    assert [(r["documentId"], r["users"]) for r in fake.receipts] == [(READ_DOC, {1, 2, 3, USER})]
    assert fake.count("PUT", f"/api/read-notifications/{OTHER_READ_DOC}") == 0
    assert fake.count("DELETE", f"/api/read-notifications/{OTHER_READ_DOC}") == 1
    assert warnings_logged(caplog) == [
        f"notification {NOTIFICATION_DOC} had 1 duplicate READNOTIFICATIONs: merged into {READ_DOC}"
    ]
    assert errors_logged(caplog) == []


async def test_mark_read_already_read_in_a_later_duplicate_receipt_is_already_read(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish(audience={1, USER})
    fake.add_receipt(NOTIFICATION_DOC, 1, document_id=READ_DOC)
    fake.add_receipt(NOTIFICATION_DOC, USER, document_id=OTHER_READ_DOC)

    result = await receipts.mark_read(USER, 12)

    assert result.already_read is True
    assert [(r["documentId"], r["users"]) for r in fake.receipts] == [(READ_DOC, {1, USER})]


async def test_mark_read_failed_merge_still_acks_the_read_and_is_logged(
    receipts: ReadReceipts, fake: FakeStrapi, caplog: pytest.LogCaptureFixture
) -> None:
    fake.publish()
    fake.add_receipt(NOTIFICATION_DOC, document_id=READ_DOC)
    fake.add_receipt(NOTIFICATION_DOC, 2, document_id=OTHER_READ_DOC)
    fake.failures[f"DELETE /api/read-notifications/{OTHER_READ_DOC}"] = [strapi_error(400, "Forbidden")]

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"):
        result = await receipts.mark_read(USER, 12)

    assert result.already_read is False
    assert USER in fake.readers()[0]
    [line] = errors_logged(caplog)
    assert line.startswith("Error while merge duplicate read notifications with user ID: ")
    assert line.endswith(f" and notification ID: {NOTIFICATION_DOC}: Forbidden")


# -- mark_read: ids handed out before a republish --------------------------------------------


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
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification(audience=[7], id=11)))

    with pytest.raises(NotificationNotFound):
        await receipts.mark_read(USER, 8)

    assert respx_mock.calls.call_count == 1  # found, just not for this user: no second lookup, no write


async def test_mark_read_remembers_the_numeric_id_it_resolved(
    receipts: ReadReceipts, known_ids: KnownIds, fake: FakeStrapi
) -> None:
    fake.publish(12, audience={5, 6})

    await receipts.mark_read(5, 12)
    await receipts.mark_read(6, 12)

    assert known_ids.document_id(12) == NOTIFICATION_DOC
    assert fake.count("GET", "/api/notifications") == 1
    assert fake.readers() == [{5, 6}]


# -- mark_read: the resolved notification is cached ------------------------------------------


async def test_mark_read_resolves_a_notification_once_while_it_is_cached(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish(audience={5, 6, 7})

    await receipts.mark_read(5, 12)
    await receipts.mark_read(6, NOTIFICATION_DOC)
    await receipts.mark_read(7, 12)

    assert fake.count("GET", "/api/notifications") == 1
    assert fake.readers() == [{5, 6, 7}]


async def test_mark_read_after_invalidate_resolves_the_notification_again(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish(audience={5})
    await receipts.mark_read(5, 12)
    fake.notifications[0]["audience"].add(6)  # an editor adds user 6; the webhook invalidates

    receipts.invalidate(NOTIFICATION_DOC)
    result = await receipts.mark_read(6, 12)

    assert result.already_read is False
    assert fake.count("GET", "/api/notifications") == 2
    assert fake.readers() == [{5, 6}]


async def test_mark_read_after_invalidate_of_an_unpublished_notification_is_not_found(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish(audience={5, 6})
    await receipts.mark_read(5, 12)
    fake.notifications.clear()  # unpublished; the webhook invalidates

    receipts.invalidate(NOTIFICATION_DOC)
    with pytest.raises(NotificationNotFound):
        await receipts.mark_read(6, 12)

    assert fake.readers() == [{5}]


async def test_mark_read_cached_notification_is_resolved_again_once_it_expires(
    receipts: ReadReceipts, fake: FakeStrapi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("adapter.receipts.TARGET_TTL", 0.05)
    fake.publish(audience={5, 6})

    await receipts.mark_read(5, 12)
    await asyncio.sleep(0.1)
    await receipts.mark_read(6, 12)

    assert fake.count("GET", "/api/notifications") == 2


async def test_mark_read_of_a_notification_just_announced_to_the_user_skips_the_lookup(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish(audience={5, 6})
    receipts.announced(NOTIFICATION_DOC, 12, [5])

    by_id = await receipts.mark_read(5, 12)  # the numeric id it was announced with

    assert by_id.document_id == NOTIFICATION_DOC
    assert by_id.already_read is False
    assert fake.count("GET", "/api/notifications") == 0
    assert len(fake.requests) == 2  # the readers lookup, the create
    assert fake.readers() == [{5}]


async def test_mark_read_of_an_announced_notification_by_someone_not_told_here_asks_strapi(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish(audience={5, 6})
    receipts.announced(NOTIFICATION_DOC, 12, [5])  # user 6 was told by another process, say

    await receipts.mark_read(6, NOTIFICATION_DOC)
    with pytest.raises(NotificationNotFound):
        await receipts.mark_read(7, NOTIFICATION_DOC)

    assert fake.count("GET", "/api/notifications") == 1  # then known in full, briefly
    assert fake.readers() == [{6}]


async def test_mark_read_of_an_announced_notification_unpublished_since_is_not_found(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish(audience={5})
    receipts.announced(NOTIFICATION_DOC, 12, [5])
    fake.notifications.clear()  # unpublished; the webhook invalidates

    receipts.invalidate(NOTIFICATION_DOC)
    with pytest.raises(NotificationNotFound):
        await receipts.mark_read(5, NOTIFICATION_DOC)

    assert fake.readers() == []


async def test_mark_read_announcement_is_trusted_for_a_bounded_time(
    receipts: ReadReceipts, fake: FakeStrapi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("adapter.receipts.ANNOUNCED_TTL", 0.05)
    fake.publish(audience={6})  # user 5 was taken out of the audience meanwhile
    receipts.announced(NOTIFICATION_DOC, 12, [5])
    await asyncio.sleep(0.1)

    with pytest.raises(NotificationNotFound):
        await receipts.mark_read(5, NOTIFICATION_DOC)


# -- mark_read: failures ---------------------------------------------------------------------


async def test_mark_read_failed_connect_is_an_upstream_error_logged_as_the_seed_did_and_not_retried(
    receipts: ReadReceipts, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents(receipt(READ_DOC)))
    connect = respx_mock.put(f"{READS}/{READ_DOC}").mock(return_value=strapi_error(400, "Invalid relations"))

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"), pytest.raises(UpstreamError):
        await receipts.mark_read(USER, 12)

    assert errors_logged(caplog) == [
        f"Error while add user to notification with user ID: 5 and notification ID: {READ_DOC}: "
        "Invalid relations"
    ]
    assert connect.call_count == 1
    assert USER not in (receipts.readers.get(NOTIFICATION_DOC) or set())


async def test_mark_read_failed_create_is_an_upstream_error_logged_as_the_seed_did(
    no_retry: ReadReceipts, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents())
    respx_mock.post(READS).mock(return_value=strapi_error(500, "Internal Server Error"))

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"), pytest.raises(UpstreamError):
        await no_retry.mark_read(USER, 12)

    assert errors_logged(caplog) == [
        "Error while create user to notification relation with user ID: 5 and notification ID: "
        f"{NOTIFICATION_DOC}: Internal Server Error"
    ]


async def test_mark_read_permanently_refused_create_is_not_retried(
    receipts: ReadReceipts, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents())
    create = respx_mock.post(READS).mock(return_value=strapi_error(400, "Invalid key notification"))

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"), pytest.raises(UpstreamError):
        await receipts.mark_read(USER, 12)

    assert create.call_count == 1
    assert errors_logged(caplog) == [
        "Error while create user to notification relation with user ID: 5 and notification ID: "
        f"{NOTIFICATION_DOC}: Invalid key notification"
    ]


async def test_mark_read_unreachable_strapi_on_write_is_an_upstream_error(
    no_retry: ReadReceipts, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents())
    respx_mock.post(READS).mock(side_effect=httpx.ConnectError("connection refused"))

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"), pytest.raises(UpstreamError):
        await no_retry.mark_read(USER, 12)

    assert errors_logged(caplog) == [
        "Error while create user to notification relation with user ID: 5 and notification ID: "
        f"{NOTIFICATION_DOC}: unreachable: ConnectError"
    ]


async def test_mark_read_failed_notification_lookup_is_an_upstream_error_not_a_missing_one(
    no_retry: ReadReceipts, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=strapi_error(503, "Service Unavailable"))

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"), pytest.raises(UpstreamError):
        await no_retry.mark_read(USER, 12)

    assert errors_logged(caplog) == [
        "Error while find notification with user ID: 5 and notification ID: 12: Service Unavailable"
    ]
    assert respx_mock.calls.call_count == 1


async def test_mark_read_failed_receipt_lookup_is_an_upstream_error_and_writes_nothing(
    no_retry: ReadReceipts, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=strapi_error(503, "Service Unavailable"))

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"), pytest.raises(UpstreamError):
        await no_retry.mark_read(USER, 12)

    assert errors_logged(caplog) == [
        "Error while find notification with user ID: 5 and notification ID: "
        f"{NOTIFICATION_DOC}: Service Unavailable"
    ]
    assert respx_mock.calls.call_count == 2


async def test_mark_read_failed_write_logs_the_seed_line_for_every_user_of_the_batch(
    receipts: ReadReceipts, fake: FakeStrapi, caplog: pytest.LogCaptureFixture
) -> None:
    fake.publish(audience={5, 6, 7})
    fake.add_receipt(NOTIFICATION_DOC, 1, document_id=READ_DOC)
    fake.failures[f"PUT /api/read-notifications/{READ_DOC}"] = [strapi_error(400, "Invalid relations")]

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"):
        outcomes = await asyncio.gather(
            *(receipts.mark_read(u, 12) for u in (7, 5, 6)), return_exceptions=True
        )

    assert [type(outcome) for outcome in outcomes] == [UpstreamError] * 3
    assert errors_logged(caplog) == [
        f"Error while add user to notification with user ID: {u} and notification ID: {READ_DOC}: "
        "Invalid relations"
        for u in (5, 6, 7)
    ]
    assert fake.readers() == [{1}]


@pytest.mark.parametrize(
    "outage",
    [
        pytest.param(strapi_error(503, "Service Unavailable"), id="503"),
        pytest.param(httpx.ConnectError("connection refused"), id="connect-error"),
    ],
)
async def test_mark_read_strapi_outage_on_the_write_is_retried_and_the_read_recorded(
    receipts: ReadReceipts, fake: FakeStrapi, caplog: pytest.LogCaptureFixture, outage: Any
) -> None:
    fake.publish()
    fake.failures["POST /api/read-notifications"] = [outage]

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"):
        result = await receipts.mark_read(USER, 12)

    assert result.ack() == {"ok": True, "notificationId": NOTIFICATION_DOC, "alreadyRead": False}
    assert fake.count("POST") == 2
    assert fake.readers() == [{USER}]
    assert errors_logged(caplog) == []


async def test_mark_read_strapi_outage_on_the_notification_lookup_is_retried(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish()
    fake.failures["GET /api/notifications"] = [strapi_error(502, "Bad Gateway")]

    result = await receipts.mark_read(USER, 12)

    assert result.already_read is False
    assert fake.count("GET", "/api/notifications") == 2
    assert fake.readers() == [{USER}]


async def test_mark_read_outage_longer_than_the_retry_window_is_an_upstream_error(
    strapi: StrapiClient, known_ids: KnownIds, fake: FakeStrapi, caplog: pytest.LogCaptureFixture
) -> None:
    receipts = ReadReceipts(strapi, make_settings(), known_ids, retry_seconds=0.3)
    fake.publish()
    fake.failures["POST /api/read-notifications"] = [
        strapi_error(503, "Service Unavailable") for _ in range(100)
    ]

    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="adapter.receipts"), pytest.raises(UpstreamError):
        await receipts.mark_read(USER, 12)

    assert time.monotonic() - started < 1.5
    assert fake.count("POST") >= 2  # retried, then given up
    assert errors_logged(caplog) == [
        "Error while create user to notification relation with user ID: 5 and notification ID: "
        f"{NOTIFICATION_DOC}: Service Unavailable"
    ]
    assert fake.receipts == []


async def test_mark_read_retry_window_comes_from_the_settings(
    strapi: StrapiClient, known_ids: KnownIds, fake: FakeStrapi
) -> None:
    receipts = ReadReceipts(strapi, make_settings(read_retry_seconds=0), known_ids)
    fake.publish()
    fake.failures["POST /api/read-notifications"] = [strapi_error(503, "Service Unavailable")]

    with pytest.raises(UpstreamError):
        await receipts.mark_read(USER, 12)

    assert fake.count("POST") == 1


async def test_mark_read_unexpected_answer_fails_the_batch_without_blocking_later_reads(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish(audience={5, 6})
    malformed = documents({"id": 1, "users_permissions_users": []})  # no documentId
    fake.failures["GET /api/read-notifications"] = [malformed]

    with pytest.raises(UpstreamError):
        await asyncio.wait_for(receipts.mark_read(5, 12), timeout=2)
    result = await asyncio.wait_for(receipts.mark_read(6, 12), timeout=2)

    assert result.already_read is False
    assert fake.readers() == [{6}]
    assert receipts.pending == 0


# -- mark_read: the per-notification lock ----------------------------------------------------


async def test_mark_read_lock_is_released_after_a_failure(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(return_value=documents(notification()))
    respx_mock.get(READS).mock(return_value=documents())
    respx_mock.post(READS).mock(
        side_effect=[strapi_error(400, "Invalid relations"), document(receipt(READ_DOC, USER))]
    )

    with pytest.raises(UpstreamError):
        await receipts.mark_read(USER, 12)
    result = await asyncio.wait_for(receipts.mark_read(USER, 12), timeout=2)

    assert result.already_read is False


async def test_mark_read_writes_only_while_holding_the_notifications_lock(
    strapi: StrapiClient, known_ids: KnownIds, fake: FakeStrapi
) -> None:
    fake.publish()
    shared = asyncio.Lock()  # as another replica would hold it through Redis
    keys: list[str] = []

    @asynccontextmanager
    async def lock(key: str) -> AsyncIterator[None]:
        keys.append(key)
        async with shared:
            yield

    receipts = ReadReceipts(strapi, make_settings(), known_ids, lock=lock)
    async with shared:
        task = asyncio.create_task(receipts.mark_read(USER, 12))
        await until(lambda: keys == [NOTIFICATION_DOC])
        await asyncio.sleep(0.02)
        assert fake.count("GET", "/api/read-notifications") == 0
        assert fake.writes == 0
        assert receipts.pending == 1
    result = await asyncio.wait_for(task, timeout=2)

    assert result.already_read is False
    assert fake.readers() == [{USER}]
    assert receipts.pending == 0


# -- mark_read: concurrent reads of one notification -----------------------------------------


async def test_mark_read_two_users_at_once_share_one_receipt(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish(audience={5, 6})
    fake.write_delay = 0.01

    first, second = await asyncio.gather(receipts.mark_read(5, 12), receipts.mark_read(6, 12))

    assert fake.readers() == [{5, 6}]
    assert (first.already_read, second.already_read) == (False, False)


async def test_mark_read_user_arriving_during_the_create_is_connected_to_the_same_receipt(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish(audience={5, 6})
    strapi_answers = fake.writes_wait_for = asyncio.Event()

    first = asyncio.create_task(receipts.mark_read(5, 12))
    await asyncio.wait_for(fake.write_started.wait(), timeout=2)
    second = asyncio.create_task(receipts.mark_read(6, 12))
    await asyncio.sleep(0.02)  # user 6 is waiting behind the create
    strapi_answers.set()
    results = await asyncio.wait_for(asyncio.gather(first, second), timeout=2)

    assert fake.readers() == [{5, 6}]
    assert [r.already_read for r in results] == [False, False]


async def test_mark_read_burst_of_200_users_ends_in_one_receipt_for_a_few_requests(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    users = range(1, 201)
    fake.publish(audience=users)
    fake.write_delay = 0.01

    results = await asyncio.gather(*(receipts.mark_read(user, 12) for user in users))

    assert fake.readers() == [set(users)]
    assert [r.ack() for r in results] == [
        {"ok": True, "notificationId": NOTIFICATION_DOC, "alreadyRead": False}
    ] * 200
    assert len(fake.requests) <= 8
    assert fake.count("GET", "/api/notifications") == 1
    assert receipts.readers.get(NOTIFICATION_DOC) == set(users)
    assert receipts.pending == 0


async def test_mark_read_burst_of_200_users_again_is_already_read_without_a_write(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    users = range(1, 201)
    fake.publish(audience=users)
    fake.write_delay = 0.01
    await asyncio.gather(*(receipts.mark_read(user, 12) for user in users))
    writes = fake.writes

    again = await asyncio.gather(*(receipts.mark_read(user, 12) for user in users))

    assert [r.already_read for r in again] == [True] * 200
    assert fake.writes == writes
    assert fake.readers() == [set(users)]


# -- drain (shutdown) ------------------------------------------------------------------------


async def test_drain_logs_the_reads_that_could_not_finish_and_answers_their_callers(
    receipts: ReadReceipts, fake: FakeStrapi, caplog: pytest.LogCaptureFixture
) -> None:
    fake.publish(audience={5, 6, 7})
    fake.writes_wait_for = asyncio.Event()  # Strapi never answers the write
    writing = [asyncio.create_task(receipts.mark_read(user, 12)) for user in (5, 6)]
    await asyncio.wait_for(fake.write_started.wait(), timeout=2)
    queued = asyncio.create_task(receipts.mark_read(7, 12))
    await until(lambda: receipts.pending == 3)

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"):
        await asyncio.wait_for(receipts.drain(0.1), timeout=2)

    assert sorted(errors_logged(caplog)) == [
        f"Error while add user to notification with user ID: {user} and notification ID: "
        f"{NOTIFICATION_DOC}: {STOPPED}"
        for user in (5, 6, 7)
    ]
    outcomes = await asyncio.wait_for(asyncio.gather(*writing, queued, return_exceptions=True), timeout=2)
    assert [type(outcome) for outcome in outcomes] == [UpstreamError] * 3
    assert receipts.pending == 0


async def test_drain_waits_for_a_read_that_finishes_within_the_grace(
    receipts: ReadReceipts, fake: FakeStrapi, caplog: pytest.LogCaptureFixture
) -> None:
    fake.publish()
    fake.write_delay = 0.05
    task = asyncio.create_task(receipts.mark_read(USER, 12))
    await until(lambda: receipts.pending == 1)

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"):
        await receipts.drain(2.0)

    assert task.done()
    assert task.result().already_read is False
    assert fake.readers() == [{USER}]
    assert errors_logged(caplog) == []
    assert receipts.pending == 0


async def test_drain_with_nothing_pending_returns_at_once(
    receipts: ReadReceipts, fake: FakeStrapi, caplog: pytest.LogCaptureFixture
) -> None:
    fake.publish()
    await receipts.mark_read(USER, 12)

    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="adapter.receipts"):
        await receipts.drain(5.0)

    assert time.monotonic() - started < 0.5
    assert errors_logged(caplog) == []


# -- mark_many (read-all) --------------------------------------------------------------------


def note(index: int) -> str:
    return f"note{index:020d}"


async def test_mark_many_looks_up_the_receipts_of_many_notifications_in_one_request(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    docs = [note(i) for i in range(3)]
    for index, doc in enumerate(docs):
        fake.publish(20 + index, doc)
    fake.add_receipt(docs[1], 6)

    marked = await receipts.mark_many(USER, docs)

    assert marked == docs
    [lookup] = [r for r in fake.requests if r.method == "GET"]
    assert params(lookup) == sorted(
        [
            *((f"filters[notification][documentId][$in][{i}]", doc) for i, doc in enumerate(docs)),
            ("populate[notification][fields][0]", "documentId"),
            ("fields[0]", "documentId"),
            ("sort", "id:asc"),
            ("pagination[page]", "1"),
            ("pagination[pageSize]", "100"),
        ]
    )
    assert [fake.readers(doc) for doc in docs] == [[{USER}], [{6, USER}], [{USER}]]
    assert (fake.count("POST"), fake.count("PUT")) == (2, 1)
    assert all(receipts.readers.get(doc) == {USER} for doc in docs)


async def test_mark_many_asks_a_hundred_notifications_per_lookup(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    docs = [note(i) for i in range(150)]
    for doc in docs[::2]:
        fake.add_receipt(doc, 6)

    marked = await receipts.mark_many(USER, docs)

    assert sorted(marked) == docs
    lookups = [r for r in fake.requests if r.method == "GET"]
    in_lists = [
        _in_list(dict(r.url.params.multi_items()), "filters[notification][documentId][$in]") for r in lookups
    ]
    assert in_lists == [docs[:100], docs[100:]]
    assert all(len(fake.readers(doc)) == 1 and USER in fake.readers(doc)[0] for doc in docs)


async def test_mark_many_failed_write_skips_that_notification_and_is_logged_as_the_seed_did(
    receipts: ReadReceipts, fake: FakeStrapi, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = note(1), note(2)
    fake.add_receipt(first, 6, document_id=READ_DOC)
    fake.failures[f"PUT /api/read-notifications/{READ_DOC}"] = [strapi_error(400, "Invalid relations")]

    with caplog.at_level(logging.ERROR, logger="adapter.receipts"):
        marked = await receipts.mark_many(USER, [first, second])

    assert marked == [second]
    assert fake.readers(first) == [{6}]
    assert fake.readers(second) == [{USER}]
    assert errors_logged(caplog) == [
        f"Error while add user to notification with user ID: 5 and notification ID: {READ_DOC}: "
        "Invalid relations"
    ]


async def test_mark_many_failed_lookup_is_an_upstream_error_and_writes_nothing(
    no_retry: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.failures["GET /api/read-notifications"] = [strapi_error(503, "Service Unavailable")]

    with pytest.raises(UpstreamError):
        await no_retry.mark_many(USER, [note(1), note(2)])

    assert fake.writes == 0


async def test_mark_many_does_not_duplicate_a_receipt_created_by_a_read_meanwhile(
    receipts: ReadReceipts, fake: FakeStrapi
) -> None:
    fake.publish(audience={5, 6})
    fake.batched_lookup_gate = asyncio.Event()
    read_all = asyncio.create_task(receipts.mark_many(5, [NOTIFICATION_DOC]))
    await until(lambda: fake.count("GET", "/api/read-notifications") == 1)

    await receipts.mark_read(6, 12)  # creates the READNOTIFICATION the read-all lookup missed
    fake.batched_lookup_gate.set()
    marked = await asyncio.wait_for(read_all, timeout=2)

    assert marked == [NOTIFICATION_DOC]
    assert fake.readers() == [{5, 6}]


async def test_mark_read_invalidation_during_a_lookup_keeps_the_old_answer_out_of_the_cache(
    receipts: ReadReceipts, respx_mock: respx.MockRouter
) -> None:
    lookup_started, release = asyncio.Event(), asyncio.Event()

    async def slow_lookup(request: httpx.Request) -> httpx.Response:
        if not lookup_started.is_set():
            lookup_started.set()
            await release.wait()
        return documents(notification())

    lookup = respx_mock.get(NOTIFICATIONS).mock(side_effect=slow_lookup)
    respx_mock.get(READS).mock(return_value=documents(receipt(READ_DOC, USER)))

    first = asyncio.create_task(receipts.mark_read(USER, NOTIFICATION_DOC))
    await lookup_started.wait()
    receipts.invalidate(NOTIFICATION_DOC)  # a webhook says it changed while it was being read
    release.set()
    await first
    await receipts.mark_read(USER, NOTIFICATION_DOC)

    assert lookup.call_count == 2
