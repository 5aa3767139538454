"""The inbox (unread notifications, newest first, and the unread count) against a mocked Strapi.

`FakeStrapi` answers the sidecar's REST queries from one state, applying filters, sort and
pagination the way Strapi does; the gateway and read-all tests reuse it.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from adapter.errors import InvalidPayload, StrapiUnavailable
from adapter.inbox import Inbox, parse_cursor
from adapter.notifications import KnownIds
from adapter.strapi import StrapiClient, build_http_client
from tests.conftest import STRAPI_URL, make_settings

USER = 5
OTHER_USER = 6
Hook = Callable[[httpx.Request], Awaitable[httpx.Response | None]]


def at(minute: int, second: int = 0) -> str:
    """A publishedAt as Strapi writes it."""
    return f"2026-11-25T18:{minute:02d}:{second:02d}.000Z"


def doc(number: int) -> str:
    """A documentId (24 characters, like Strapi's)."""
    return f"n{number:023d}"


# -- a Strapi that applies the queries it is sent ----------------------------------------------


def parse_query(params: httpx.QueryParams) -> dict[str, Any]:
    """Strapi's `qs` reading of `filters[$and][0][x][$eq]=1`: nested objects, and lists."""
    root: dict[str, Any] = {}
    for key, value in params.multi_items():
        head, _, rest = key.partition("[")
        path = [head, *re.findall(r"([^\[\]]*)\]", rest)]
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {key: _listify(value) for key, value in node.items()}
    if items and all(key.isdecimal() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


def _text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _compare(value: object, operator: str, wanted: Any) -> bool:
    if operator == "$eq":
        return _text(value) == wanted
    if operator == "$in":
        return _text(value) in wanted
    if operator in {"$lt", "$gt"}:
        if value is None:
            return False
        mine, theirs = (value, int(wanted)) if isinstance(value, int) else (str(value), wanted)
        return mine < theirs if operator == "$lt" else mine > theirs
    raise AssertionError(f"operator the fake does not know: {operator}")


def matches(row: dict[str, Any] | None, condition: dict[str, Any]) -> bool:
    """Whether a row (relations as nested rows) satisfies a Strapi filter object."""
    if row is None:
        return False
    for key, wanted in condition.items():
        if key == "$and":
            ok = all(matches(row, part) for part in wanted)
        elif key == "$or":
            ok = any(matches(row, part) for part in wanted)
        elif isinstance(wanted, dict) and all(
            name.startswith("$") and name not in {"$and", "$or"} for name in wanted
        ):
            ok = all(_compare(row.get(key), operator, value) for operator, value in wanted.items())
        else:
            related = row.get(key)
            rows = related if isinstance(related, list) else [related]
            ok = any(matches(item, wanted) for item in rows)
        if not ok:
            return False
    return True


class FakeStrapi:
    """Published notifications, READNOTIFICATIONs and users, behind Strapi's REST API.

    Drafts are not kept: a query for drafts finds none.

    `hooks` run before each request: one may wait (to interleave work) or answer instead.
    """

    def __init__(self, users: Iterable[int] = (USER, OTHER_USER)) -> None:
        self.users = {
            user_id: {"id": user_id, "username": f"user{user_id}", "blocked": False} for user_id in users
        }
        self.notifications: list[dict[str, Any]] = []
        self.receipts: list[dict[str, Any]] = []  # {id, documentId, notification, users}
        self.requests: list[httpx.Request] = []
        self.hooks: list[Hook] = []
        self._last_id = 100

    # -- state -----------------------------------------------------------------------------

    def publish(
        self,
        number: int,
        *,
        minute: int,
        second: int = 0,
        users: Iterable[int] = (USER,),
        all_users: bool = False,
    ) -> dict[str, Any]:
        row = {
            "id": self._new_id(),
            "documentId": doc(number),
            "message": f"Notification {number}",
            "url": f"/news/{number}",
            "date": "2026-11-25",
            "allUsers": all_users,
            "document": None,
            "publishedAt": at(minute, second),
            "notification_users": [{"id": user_id} for user_id in sorted(users)],
        }
        self.notifications.append(row)
        return row

    def read(self, document_id: str, *user_ids: int) -> None:
        """Readers recorded in Strapi (by the sidecar, an editor, another service)."""
        existing = self.receipts_of(document_id)
        if existing:
            existing[0]["users"] |= set(user_ids)
        else:
            self.add_receipt(document_id, set(user_ids))

    def receipts_of(self, document_id: str) -> list[dict[str, Any]]:
        return [receipt for receipt in self.receipts if receipt["notification"] == document_id]

    def readers(self, document_id: str) -> set[int]:
        return {user_id for receipt in self.receipts_of(document_id) for user_id in receipt["users"]}

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    @property
    def writes(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method in {"POST", "PUT", "DELETE"}]

    # -- the REST API ----------------------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for hook in list(self.hooks):
            answer = await hook(request)
            if answer is not None:
                return answer
        return self.answer(request)

    def answer(self, request: httpx.Request) -> httpx.Response:
        """The answer from the current state (a hook may take it now and return it later)."""
        path, method = request.url.path, request.method
        if method == "GET" and (user := re.fullmatch(r"/api/users/(\d+)", path)):
            found = self.users.get(int(user[1]))
            return httpx.Response(200, json=found) if found else error(404, "Not Found")
        if method == "GET" and path == "/api/users":  # users-permissions: a bare array
            query = parse_query(request.url.params)
            found_users = [u for u in self.users.values() if matches(u, query.get("filters") or {})]
            start, limit = int(query.get("start", 0)), int(query.get("limit", 100))
            return httpx.Response(200, json=found_users[start : start + limit])
        if method == "GET" and path == "/api/notifications":
            published = [] if request.url.params.get("status") == "draft" else self.notifications
            return self._list(published, request, self._render_notification)
        if method == "GET" and path == "/api/read-notifications":
            rows = [self._receipt_row(receipt) for receipt in self.receipts]
            return self._list(rows, request, self._render_receipt)
        if method == "POST" and path == "/api/read-notifications":
            data = json.loads(request.content)["data"]
            target = data["notification"]["connect"][0]["documentId"]
            users = {item["id"] for item in data["users_permissions_users"]["connect"]}
            return single({"documentId": self.add_receipt(target, users)["documentId"]})
        receipt_path = re.fullmatch(r"/api/read-notifications/(\w+)", path)
        if receipt_path and method == "PUT":
            data = json.loads(request.content)["data"]
            (receipt,) = (r for r in self.receipts if r["documentId"] == receipt_path[1])
            receipt["users"] |= {item["id"] for item in data["users_permissions_users"]["connect"]}
            return single({"documentId": receipt["documentId"]})
        if receipt_path and method == "DELETE":
            self.receipts = [r for r in self.receipts if r["documentId"] != receipt_path[1]]
            return httpx.Response(204)
        raise AssertionError(f"unexpected request: {method} {request.url}")

    def _list(
        self, rows: list[dict[str, Any]], request: httpx.Request, render: Callable[..., dict[str, Any]]
    ) -> httpx.Response:
        query = parse_query(request.url.params)
        found = [row for row in rows if matches(row, query.get("filters") or {})]
        sort = query.get("sort") or []
        for key in reversed(sort if isinstance(sort, list) else [sort]):
            name, _, direction = key.partition(":")
            found.sort(key=lambda row, name=name: row.get(name) or "", reverse=direction == "desc")
        pagination = query.get("pagination") or {}
        page, size = int(pagination.get("page", 1)), int(pagination.get("pageSize", 25))
        assert size <= 100, "Strapi's maxLimit is 100"
        chunk = found[(page - 1) * size : page * size]
        meta = {
            "page": page,
            "pageSize": size,
            "pageCount": math.ceil(len(found) / size),
            "total": len(found),
        }
        populate = query.get("populate") or {}
        items = [render(row, populate) for row in chunk]
        return httpx.Response(200, json={"data": items, "meta": {"pagination": meta}})

    def _receipt_row(self, receipt: dict[str, Any]) -> dict[str, Any]:
        targets = [n for n in self.notifications if n["documentId"] == receipt["notification"]]
        return {
            "id": receipt["id"],
            "documentId": receipt["documentId"],
            "notification": targets[0] if targets else None,
            "users_permissions_users": [{"id": user_id} for user_id in sorted(receipt["users"])],
        }

    @staticmethod
    def _render_notification(row: dict[str, Any], populate: dict[str, Any]) -> dict[str, Any]:
        rendered = {key: value for key, value in row.items() if key not in {"notification_users", "document"}}
        if "document" in populate:
            rendered["document"] = row["document"]
        if "notification_users" in populate:
            rendered["notification_users"] = row["notification_users"]
        return rendered

    @staticmethod
    def _render_receipt(row: dict[str, Any], populate: dict[str, Any]) -> dict[str, Any]:
        rendered: dict[str, Any] = {"id": row["id"], "documentId": row["documentId"]}
        if "notification" in populate and row["notification"] is not None:
            rendered["notification"] = {k: row["notification"][k] for k in ("id", "documentId")}
        readers = populate.get("users_permissions_users")
        if readers is not None:
            wanted = readers.get("filters") if isinstance(readers, dict) else None
            users = row["users_permissions_users"]
            rendered["users_permissions_users"] = [u for u in users if matches(u, wanted or {})]
        return rendered

    def add_receipt(self, document_id: str, users: set[int]) -> dict[str, Any]:
        """A READNOTIFICATION as stored (another one for the same notification is a duplicate)."""
        number = self._new_id()
        receipt = {"id": number, "documentId": f"r{number:023d}", "notification": document_id, "users": users}
        self.receipts.append(receipt)
        return receipt

    def _new_id(self) -> int:
        self._last_id += 1
        return self._last_id


def single(item: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"data": item, "meta": {}})


def error(status: int, message: str) -> httpx.Response:
    body = {"data": None, "error": {"status": status, "name": "Error", "message": message, "details": {}}}
    return httpx.Response(status, json=body)


def params(request: httpx.Request) -> list[tuple[str, str]]:
    return sorted(request.url.params.multi_items())


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def fake(respx_mock: respx.MockRouter) -> FakeStrapi:
    fake = FakeStrapi()
    respx_mock.route(host="strapi.test").mock(side_effect=fake.handle)
    return fake


@pytest.fixture
async def strapi() -> AsyncIterator[StrapiClient]:
    async with build_http_client(STRAPI_URL, "tok", 5.0) as http:
        yield StrapiClient(http)


@pytest.fixture
def known_ids() -> KnownIds:
    return KnownIds(1000)


@pytest.fixture
def inbox(strapi: StrapiClient, known_ids: KnownIds) -> Inbox:
    return Inbox(strapi, make_settings(), known_ids)


def notification_pages(fake: FakeStrapi) -> list[httpx.Request]:
    """The inbox's pages of notifications (not its totals, nor other parts' queries)."""
    pages = fake.calls("GET", "/api/notifications")
    return [r for r in pages if r.url.params.get("sort[0]") == "publishedAt:desc"]


def documents_of(items: list[dict[str, Any]]) -> list[str]:
    return [str(item["documentId"]) for item in items]


# -- the queries -----------------------------------------------------------------------------

ADDRESSED_TO_USER = [
    ("filters[$and][0][$or][0][allUsers][$eq]", "true"),
    ("filters[$and][0][$or][1][notification_users][id][$eq]", str(USER)),
]


async def test_page_asks_for_published_notifications_addressed_to_the_user_newest_first(
    fake: FakeStrapi, inbox: Inbox
) -> None:
    fake.publish(1, minute=1)

    await inbox.page(USER, cursor=None, limit=20)

    (request,) = notification_pages(fake)
    assert params(request) == sorted(
        [
            *ADDRESSED_TO_USER,
            ("populate[document]", "true"),
            ("sort[0]", "publishedAt:desc"),
            ("sort[1]", "documentId:desc"),
            ("pagination[page]", "1"),
            ("pagination[pageSize]", "20"),
            ("status", "published"),
        ]
    )


async def test_page_with_a_cursor_asks_only_for_older_notifications(fake: FakeStrapi, inbox: Inbox) -> None:
    fake.publish(1, minute=1)

    await inbox.page(USER, cursor=(at(30), doc(9)), limit=20)

    (request,) = notification_pages(fake)
    assert params(request) == sorted(
        [
            *ADDRESSED_TO_USER,
            ("filters[$and][1][$or][0][publishedAt][$lt]", at(30)),
            ("filters[$and][1][$or][1][publishedAt][$eq]", at(30)),
            ("filters[$and][1][$or][1][documentId][$lt]", doc(9)),
            ("populate[document]", "true"),
            ("sort[0]", "publishedAt:desc"),
            ("sort[1]", "documentId:desc"),
            ("pagination[page]", "1"),
            ("pagination[pageSize]", "20"),
            ("status", "published"),
        ]
    )


async def test_page_asks_which_of_the_page_the_user_read_in_one_request(
    fake: FakeStrapi, inbox: Inbox
) -> None:
    fake.publish(1, minute=1)
    fake.publish(2, minute=2)

    await inbox.page(USER, cursor=None, limit=20)

    among = [
        r
        for r in fake.calls("GET", "/api/read-notifications")
        if "populate[notification][fields][0]" in r.url.params
    ]
    (request,) = among
    assert params(request) == sorted(
        [
            ("filters[users_permissions_users][id][$eq]", str(USER)),
            ("filters[notification][documentId][$in][0]", doc(2)),
            ("filters[notification][documentId][$in][1]", doc(1)),
            ("populate[notification][fields][0]", "documentId"),
            ("fields[0]", "documentId"),
            ("pagination[page]", "1"),
            ("pagination[pageSize]", "100"),
        ]
    )


async def test_unread_count_asks_for_two_totals_with_exact_filters(fake: FakeStrapi, inbox: Inbox) -> None:
    await inbox.unread_count(USER)

    (addressed,) = fake.calls("GET", "/api/notifications")
    (read,) = fake.calls("GET", "/api/read-notifications")
    assert params(addressed) == sorted(
        [
            ("filters[$or][0][allUsers][$eq]", "true"),
            ("filters[$or][1][notification_users][id][$eq]", str(USER)),
            ("fields[0]", "documentId"),
            ("pagination[page]", "1"),
            ("pagination[pageSize]", "1"),
            ("status", "published"),
        ]
    )
    assert params(read) == sorted(
        [
            ("filters[users_permissions_users][id][$eq]", str(USER)),
            ("filters[notification][$or][0][allUsers][$eq]", "true"),
            ("filters[notification][$or][1][notification_users][id][$eq]", str(USER)),
            ("fields[0]", "documentId"),
            ("pagination[page]", "1"),
            ("pagination[pageSize]", "1"),
        ]
    )


# -- the unread count ------------------------------------------------------------------------


async def test_unread_count_is_addressed_minus_read_by_the_user(fake: FakeStrapi, inbox: Inbox) -> None:
    for number in range(1, 6):
        fake.publish(number, minute=number)
    fake.publish(6, minute=6, users=(), all_users=True)
    fake.publish(7, minute=7, users=(OTHER_USER,))  # not addressed to the user
    fake.read(doc(1), USER)
    fake.read(doc(2), USER, OTHER_USER)
    fake.read(doc(3), OTHER_USER)  # someone else's read
    fake.read(doc(6), USER)
    fake.read(doc(7), USER)  # read once, then taken out of the user's audience

    assert await inbox.unread_count(USER) == 3  # 3, 4 and 5; the read of 7 no longer counts
    assert await inbox.unread_count(OTHER_USER) == 2  # 6 (all users) and 7; 2 and 3 are not theirs


async def test_unread_count_never_goes_below_zero(respx_mock: respx.MockRouter, inbox: Inbox) -> None:
    def total(count: int) -> httpx.Response:
        meta = {"page": 1, "pageSize": 1, "pageCount": count, "total": count}
        return httpx.Response(200, json={"data": [], "meta": {"pagination": meta}})

    respx_mock.get(f"{STRAPI_URL}/api/notifications").mock(return_value=total(2))
    respx_mock.get(f"{STRAPI_URL}/api/read-notifications").mock(return_value=total(3))

    assert await inbox.unread_count(USER) == 0


# -- pages -----------------------------------------------------------------------------------


async def test_page_lists_unread_notifications_newest_first_with_the_users_unread_count(
    fake: FakeStrapi, inbox: Inbox
) -> None:
    for number in range(1, 6):
        fake.publish(number, minute=number)
    fake.read(doc(4), USER)

    page = await inbox.page(USER, cursor=None, limit=2)

    assert documents_of(page.items) == [doc(5), doc(3)]
    assert page.items[0]["message"] == "Notification 5"
    assert page.unread == 4
    assert page.has_more is True
    assert page.cursor == f"{at(3)}~{doc(3)}"


async def test_page_skips_read_items_and_scans_on_until_it_has_limit_unread(
    fake: FakeStrapi, inbox: Inbox
) -> None:
    for number in range(1, 7):
        fake.publish(number, minute=number)
    for number in (6, 5, 4):
        fake.read(doc(number), USER)

    page = await inbox.page(USER, cursor=None, limit=2)

    assert documents_of(page.items) == [doc(3), doc(2)]
    assert len(notification_pages(fake)) == 3  # 6, 5 (both read); 4 (read), 3; 2
    assert page.has_more is True
    assert page.cursor == f"{at(2)}~{doc(2)}"
    assert page.unread == 3


async def test_page_has_no_more_and_no_cursor_when_nothing_older_remains(
    fake: FakeStrapi, inbox: Inbox
) -> None:
    for number in range(1, 4):
        fake.publish(number, minute=number)

    page = await inbox.page(USER, cursor=None, limit=10)

    assert documents_of(page.items) == [doc(3), doc(2), doc(1)]
    assert (page.has_more, page.cursor) == (False, None)


async def test_page_exactly_filled_by_the_last_notifications_has_no_more(
    fake: FakeStrapi, inbox: Inbox
) -> None:
    for number in range(1, 3):
        fake.publish(number, minute=number)

    page = await inbox.page(USER, cursor=None, limit=2)

    assert documents_of(page.items) == [doc(2), doc(1)]
    assert (page.has_more, page.cursor) == (False, None)


async def test_page_of_an_inbox_read_to_the_end_is_empty(fake: FakeStrapi, inbox: Inbox) -> None:
    for number in range(1, 4):
        fake.publish(number, minute=number)
        fake.read(doc(number), USER)

    page = await inbox.page(USER, cursor=None, limit=2)

    assert (page.items, page.unread, page.has_more, page.cursor) == ([], 0, False, None)


async def test_page_following_cursors_walks_every_unread_notification_once(
    fake: FakeStrapi, inbox: Inbox
) -> None:
    # Same publishedAt for several: the documentId breaks the tie.
    for number in range(1, 13):
        fake.publish(number, minute=number // 3, second=0)
    for number in (2, 7, 8, 11):
        fake.read(doc(number), USER)
    expected = [
        row["documentId"]
        for row in sorted(fake.notifications, key=lambda r: (r["publishedAt"], r["documentId"]), reverse=True)
    ]
    expected = [d for d in expected if USER not in fake.readers(d)]

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await inbox.page(USER, cursor=parse_cursor(cursor), limit=3)
        seen += documents_of(page.items)
        assert page.unread == 8
        cursor = page.cursor
        if not page.has_more:
            break

    assert seen == expected
    assert cursor is None


async def test_page_gives_up_scanning_after_ten_pages_and_says_there_is_more(
    fake: FakeStrapi, inbox: Inbox
) -> None:
    for number in range(1, 31):
        fake.publish(number, minute=number)
        fake.read(doc(number), USER)

    page = await inbox.page(USER, cursor=None, limit=2)

    assert page.items == []
    assert len(notification_pages(fake)) == 10
    assert page.has_more is True
    assert page.cursor == f"{at(11)}~{doc(11)}"  # the next page resumes after the 20 scanned


async def test_page_with_limit_zero_sends_only_the_count(fake: FakeStrapi, inbox: Inbox) -> None:
    fake.publish(1, minute=1)

    page = await inbox.page(USER, cursor=None, limit=0)

    assert (page.items, page.unread, page.has_more, page.cursor) == ([], 1, False, None)
    assert notification_pages(fake) == []


async def test_page_reaches_all_users_notifications_but_not_other_users(
    fake: FakeStrapi, inbox: Inbox
) -> None:
    fake.publish(1, minute=1, users=(), all_users=True)
    fake.publish(2, minute=2, users=(OTHER_USER,))
    fake.publish(3, minute=3, users=(USER, OTHER_USER))

    page = await inbox.page(USER, cursor=None, limit=10)

    assert documents_of(page.items) == [doc(3), doc(1)]
    assert page.unread == 2


async def test_page_remembers_the_ids_it_hands_out(
    fake: FakeStrapi, inbox: Inbox, known_ids: KnownIds
) -> None:
    first = fake.publish(1, minute=1)
    second = fake.publish(2, minute=2)

    await inbox.page(USER, cursor=None, limit=10)

    assert known_ids.document_id(first["id"]) == doc(1)
    assert known_ids.document_id(second["id"]) == doc(2)


async def test_page_passes_a_strapi_failure_on(respx_mock: respx.MockRouter, inbox: Inbox) -> None:
    respx_mock.get(f"{STRAPI_URL}/api/notifications").mock(return_value=error(503, "Service Unavailable"))

    with pytest.raises(StrapiUnavailable):
        await inbox.page(USER, cursor=None, limit=10)


# -- every unread notification, for mark-all-read --------------------------------------------


async def test_unread_batches_pages_through_every_unread_notification(fake: FakeStrapi, inbox: Inbox) -> None:
    for number in range(1, 251):
        fake.publish(number, minute=number // 10, second=number % 60)
    read = {number for number in range(1, 251) if number % 7 == 0}
    for number in read:
        fake.read(doc(number), USER)

    batches = [batch async for batch in inbox.unread_batches(USER)]

    expected = [
        row["documentId"]
        for row in sorted(fake.notifications, key=lambda r: (r["publishedAt"], r["documentId"]), reverse=True)
        if USER not in fake.readers(row["documentId"])
    ]
    assert [d for batch in batches for d in documents_of(batch)] == expected
    assert len(expected) == 250 - len(read)
    assert all(len(batch) <= 100 for batch in batches)
    assert len(notification_pages(fake)) == 3


async def test_unread_batches_of_an_inbox_without_unread_yields_nothing(
    fake: FakeStrapi, inbox: Inbox
) -> None:
    fake.publish(1, minute=1)
    fake.read(doc(1), USER)

    assert [batch async for batch in inbox.unread_batches(USER)] == []
    assert [batch async for batch in inbox.unread_batches(OTHER_USER)] == []


# -- cursors ---------------------------------------------------------------------------------


async def test_parse_cursor_accepts_the_cursor_a_page_hands_out(fake: FakeStrapi, inbox: Inbox) -> None:
    fake.publish(1, minute=1)
    row = fake.publish(2, minute=2)
    row["publishedAt"] = "2026-11-25T18:42:12.665Z"

    page = await inbox.page(USER, cursor=None, limit=1)

    assert page.cursor is not None
    assert parse_cursor(page.cursor) == ("2026-11-25T18:42:12.665Z", doc(2))


def test_parse_cursor_of_nothing_is_the_first_page() -> None:
    assert parse_cursor(None) is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("abc", id="no-separator"),
        pytest.param(f"{at(1)}~", id="no-document"),
        pytest.param(f"~{doc(1)}", id="no-date"),
        pytest.param(f"{at(1)}~{doc(1)}~x", id="two-separators"),
        pytest.param(f"{at(1)}~{doc(1)}\n", id="trailing-newline"),
        pytest.param(f"{at(1)} ~{doc(1)}", id="space"),
        pytest.param(f"{at(1)}~a b", id="space-in-document"),
        pytest.param(f"{at(1)}~{'a' * 65}", id="document-too-long"),
        pytest.param(f"{at(1)}~-abc", id="document-starting-with-dash"),
        pytest.param("2026-11-25'OR'1'='1~abc", id="quotes"),
        pytest.param("2026-11-25~a[b]", id="brackets"),
        pytest.param("----------~abc", id="dashes-for-a-date"),
        pytest.param("9999-99-99T99:99:99Z~abc", id="impossible-date"),
        pytest.param(5, id="number"),
        pytest.param(["2026-11-25", "abc"], id="list"),
        pytest.param({"at": at(1), "doc": doc(1)}, id="object"),
    ],
)
def test_parse_cursor_refuses_junk(value: object) -> None:
    with pytest.raises(InvalidPayload):
        parse_cursor(value)


@given(st.one_of(st.text(), st.text(alphabet="0123456789-:.TZ+~abcXYZ_ \n", max_size=60)))
def test_parse_cursor_answers_any_string_with_a_position_or_invalid_payload(value: str) -> None:
    try:
        position = parse_cursor(value)
    except InvalidPayload:
        return
    assert position is not None
    published_at, document_id = position
    assert f"{published_at}~{document_id}" == value
    assert re.fullmatch(r"[0-9T:.\-+Z]+", published_at)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", document_id)


# -- what a page costs -------------------------------------------------------------------------


async def test_page_holding_every_addressed_notification_costs_two_requests(
    fake: FakeStrapi, inbox: Inbox
) -> None:
    for number in range(1, 5):
        fake.publish(number, minute=number)
    fake.publish(9, minute=9, users=(OTHER_USER,))
    fake.read(doc(2), USER)
    fake.read(doc(9), OTHER_USER)

    page = await inbox.page(USER, cursor=None, limit=10)

    assert documents_of(page.items) == [doc(4), doc(3), doc(1)]
    assert page.unread == 3
    assert len(fake.requests) == 2  # the page, then which of it the user read: no count needed


async def test_page_of_an_empty_inbox_costs_one_request(fake: FakeStrapi, inbox: Inbox) -> None:
    fake.publish(9, minute=9, users=(OTHER_USER,))

    page = await inbox.page(USER, cursor=None, limit=10)

    assert (page.items, page.unread, page.has_more) == ([], 0, False)
    assert len(fake.requests) == 1


async def test_page_not_holding_every_addressed_notification_counts_the_reads(
    fake: FakeStrapi, inbox: Inbox
) -> None:
    for number in range(1, 6):
        fake.publish(number, minute=number)
    fake.read(doc(1), USER)
    fake.read(doc(5), USER)

    page = await inbox.page(USER, cursor=None, limit=2)

    assert documents_of(page.items) == [doc(4), doc(3)]
    assert page.unread == 3  # 5 addressed, 2 read: one of them beyond this page
    # read among 5, 4; read among 3, 2 (5 was read: a second page); then the read total
    assert len(fake.calls("GET", "/api/read-notifications")) == 3


# -- catch-ups, batched ------------------------------------------------------------------------

THIRD_USER = 7


@pytest.fixture
def three_users(respx_mock: respx.MockRouter) -> FakeStrapi:
    fake = FakeStrapi(users=(USER, OTHER_USER, THIRD_USER))
    respx_mock.route(host="strapi.test").mock(side_effect=fake.handle)
    return fake


def _mixed_inboxes(fake: FakeStrapi) -> None:
    fake.publish(1, minute=1, users=(USER, OTHER_USER))
    fake.publish(2, minute=2, users=(OTHER_USER,))
    fake.publish(3, minute=3, users=(USER, THIRD_USER))
    fake.publish(4, minute=4, users=(USER,))
    fake.publish(5, minute=5, all_users=True, users=())
    fake.read(doc(1), USER, OTHER_USER)
    fake.read(doc(2), OTHER_USER)
    fake.read(doc(5), THIRD_USER)


@pytest.mark.parametrize("limit", [1, 2, 10])
async def test_catch_ups_asked_together_are_the_same_pages_in_two_requests(
    three_users: FakeStrapi, inbox: Inbox, limit: int
) -> None:
    _mixed_inboxes(three_users)
    users = (USER, OTHER_USER, THIRD_USER)
    expected = [await inbox.page(user, cursor=None, limit=limit) for user in users]
    three_users.requests.clear()

    pages = await asyncio.gather(*(inbox.catch_up(user, limit) for user in users))

    assert pages == expected
    assert [page.unread for page in expected] == [3, 1, 1]  # 5, 4, 3 | 5 | 3
    assert len(three_users.requests) == 2


async def test_catch_ups_beyond_one_page_of_notifications_go_one_user_at_a_time(
    three_users: FakeStrapi, inbox: Inbox
) -> None:
    for number in range(1, 102):
        three_users.publish(number, minute=number // 60, second=number % 60, users=(USER, OTHER_USER))
    three_users.read(doc(101), USER)
    expected = [await inbox.page(user, cursor=None, limit=3) for user in (USER, OTHER_USER)]
    three_users.requests.clear()

    pages = await asyncio.gather(inbox.catch_up(USER, 3), inbox.catch_up(OTHER_USER, 3))

    assert pages == expected
    assert (pages[0].unread, pages[1].unread, pages[0].has_more) == (100, 101, True)
    # the batch's page; then each alone: user 5 (101 read: two pages, reads among each, read
    # total), user 6 (a page, reads among it, read total)
    assert len(three_users.requests) == 1 + 5 + 3


async def test_catch_ups_of_empty_inboxes_cost_one_request(three_users: FakeStrapi, inbox: Inbox) -> None:
    three_users.publish(1, minute=1, users=(99,))

    pages = await asyncio.gather(*(inbox.catch_up(user, 5) for user in (USER, OTHER_USER)))

    assert [(p.items, p.unread, p.has_more, p.cursor) for p in pages] == [([], 0, False, None)] * 2
    assert len(three_users.requests) == 1


async def test_a_catch_up_no_longer_wanted_asks_nothing(three_users: FakeStrapi, inbox: Inbox) -> None:
    _mixed_inboxes(three_users)

    gone, kept = await asyncio.gather(inbox.catch_up(USER, 5, lambda: False), inbox.catch_up(OTHER_USER, 5))

    assert gone is None
    assert kept is not None
    assert kept.unread == 1
    assert all(
        ("filters[$or][1][notification_users][id][$in][0]", str(OTHER_USER)) in r.url.params.multi_items()
        for r in notification_pages_or_totals(three_users)
    )


def notification_pages_or_totals(fake: FakeStrapi) -> list[httpx.Request]:
    return fake.calls("GET", "/api/notifications")


async def test_catch_ups_failing_in_strapi_fail_every_one_of_the_batch(
    respx_mock: respx.MockRouter, inbox: Inbox
) -> None:
    respx_mock.get(f"{STRAPI_URL}/api/notifications").respond(503, json={"error": {"message": "down"}})

    results = await asyncio.gather(
        *(inbox.catch_up(user, 5) for user in (USER, OTHER_USER)), return_exceptions=True
    )

    assert all(isinstance(result, StrapiUnavailable) for result in results)


async def test_catch_ups_remember_the_ids_they_hand_out(
    three_users: FakeStrapi, inbox: Inbox, known_ids: KnownIds
) -> None:
    row = three_users.publish(1, minute=1, users=(USER,))

    await asyncio.gather(inbox.catch_up(USER, 5), inbox.catch_up(OTHER_USER, 5))

    assert known_ids.document_id(row["id"]) == doc(1)


async def test_catch_ups_whose_batched_query_is_refused_go_one_user_at_a_time(
    three_users: FakeStrapi, inbox: Inbox
) -> None:
    _mixed_inboxes(three_users)
    users = (USER, OTHER_USER, THIRD_USER)
    expected = [await inbox.page(user, cursor=None, limit=2) for user in users]

    async def too_long(request: httpx.Request) -> httpx.Response | None:
        batched = any(
            "[$in]" in key for key, _ in request.url.params.multi_items() if "notification_users" in key
        )
        return httpx.Response(414, text="URI Too Long") if batched else None

    three_users.hooks.append(too_long)

    pages = await asyncio.gather(*(inbox.catch_up(user, 2) for user in users))

    assert pages == expected
