"""The notification lifecycle against a small stateful fake of Strapi's REST API."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx

from adapter.notifications import KnownIds
from adapter.strapi import StrapiClient, build_http_client
from tests.conftest import make_settings
from webhooks.lifecycle import NotificationLifecycle, SelectionFix, decide_selection

BASE = "http://strapi.test"
DOC = "adjutl3unow7mrzedbqgrovl"
OTHER_DOC = "q4w8e2r6t0y5u9i3o7p1a5sd"
NOTIFICATION_PATH = re.compile(r"/api/notifications/(?P<document_id>[^/]+)")
EVERYONE = {1, 2, 3, 4, 5}


@dataclass
class Write:
    document_id: str
    status: str | None
    data: dict[str, Any]


class FakeStrapi:
    """Draft and published versions of notifications, and the users, as Strapi 5 keeps them.

    A PUT with `?status=draft` changes the draft; a PUT without status changes the draft and
    publishes it, re-creating the published row with a new numeric id.
    """

    def __init__(self, users: Iterable[int] = EVERYONE):
        self.users = sorted(users)
        self.drafts: dict[str, dict[str, Any]] = {}
        self.published: dict[str, dict[str, Any]] = {}
        self.writes: list[Write] = []
        self._last_id = 0

    # -- what editors do ---------------------------------------------------------------------

    def create(self, document_id: str = DOC, *, publish: bool, **fields: Any) -> None:
        draft = {
            "documentId": document_id,
            "message": "Hola",
            "url": "/inbox",
            "date": "2026-11-25",
            "allUsers": False,
            "document": None,
            "users": set(),
            **fields,
        }
        draft["users"] = set(draft["users"])
        self.drafts[document_id] = {**draft, "id": self._new_id(), "publishedAt": None}
        if publish:
            self.publish(document_id)

    def edit(self, document_id: str = DOC, *, publish: bool, **changes: Any) -> None:
        if "users" in changes:
            changes["users"] = set(changes["users"])
        self.drafts[document_id].update(changes)
        if publish:
            self.publish(document_id)

    def publish(self, document_id: str = DOC) -> None:
        row = copy.deepcopy(self.drafts[document_id])
        self.published[document_id] = {**row, "id": self._new_id(), "publishedAt": "2026-11-25T18:42:12Z"}

    def published_id(self, document_id: str = DOC) -> int:
        return int(self.published[document_id]["id"])

    # -- the REST API ------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        query, path = request.url.params, request.url.path
        if request.method == "GET" and path == "/api/users/count":
            return httpx.Response(200, json=len(self.users))
        if request.method == "GET" and path == "/api/users":
            start, limit = int(query["start"]), int(query["limit"])
            return httpx.Response(200, json=[{"id": uid} for uid in self.users[start : start + limit]])
        found = NOTIFICATION_PATH.fullmatch(path)
        if found and request.method == "GET":
            return self._get(found["document_id"], query)
        if found and request.method == "PUT":
            return self._put(found["document_id"], query.get("status"), json.loads(request.content)["data"])
        raise AssertionError(f"unexpected request: {request.method} {request.url}")

    def _get(self, document_id: str, query: httpx.QueryParams) -> httpx.Response:
        versions = self.drafts if query.get("status") == "draft" else self.published
        row = versions.get(document_id)
        if row is None:
            error = {"status": 404, "name": "NotFoundError", "message": "Not Found", "details": {}}
            return httpx.Response(404, json={"data": None, "error": error})
        return httpx.Response(200, json={"data": self._render(row, query), "meta": {}})

    def _put(self, document_id: str, status: str | None, data: dict[str, Any]) -> httpx.Response:
        self.writes.append(Write(document_id, status, data))
        draft = self.drafts[document_id]
        for name, value in data.items():
            if name == "notification_users":
                draft["users"] |= {item["id"] for item in value.get("connect", [])}
                draft["users"] -= {item["id"] for item in value.get("disconnect", [])}
            else:
                draft[name] = value
        if status != "draft":
            self.publish(document_id)
            return httpx.Response(200, json={"data": self._render(self.published[document_id]), "meta": {}})
        return httpx.Response(200, json={"data": self._render(draft), "meta": {}})

    def _render(self, row: dict[str, Any], query: httpx.QueryParams | None = None) -> dict[str, Any]:
        """A row as Strapi returns it: relations and media only when populated."""
        query = query or httpx.QueryParams()
        rendered = {key: value for key, value in row.items() if key not in {"users", "document"}}
        if query.get("populate[notification_users][fields][0]") == "id":
            rendered["notification_users"] = [
                {"id": uid} for uid in sorted(row["users"]) if uid in self.users
            ]
        if query.get("populate[document]") == "true":
            rendered["document"] = row["document"]
        return rendered

    def _new_id(self) -> int:
        self._last_id += 1
        return self._last_id


class RecordingNotifier:
    def __init__(self) -> None:
        self.calls: list[tuple[set[int], dict[str, Any]]] = []

    async def notify(self, user_ids: Iterable[int], payload: dict[str, Any]) -> int:
        users = set(user_ids)
        self.calls.append((users, payload))
        return len(users)


@pytest.fixture
async def strapi() -> AsyncIterator[StrapiClient]:
    async with build_http_client(BASE, "tok", 5.0) as http:
        yield StrapiClient(http)


@pytest.fixture
def fake(respx_mock: respx.MockRouter) -> FakeStrapi:
    fake = FakeStrapi()
    respx_mock.route(host="strapi.test").mock(side_effect=fake.handle)
    return fake


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def known_ids() -> KnownIds:
    return KnownIds(100)


@pytest.fixture
def lifecycle(
    strapi: StrapiClient, notifier: RecordingNotifier, known_ids: KnownIds
) -> NotificationLifecycle:
    return NotificationLifecycle(strapi, make_settings(), notifier, known_ids)


def chunked_lifecycle(
    strapi: StrapiClient, notifier: RecordingNotifier, known_ids: KnownIds
) -> NotificationLifecycle:
    return NotificationLifecycle(strapi, make_settings(connect_chunk_size=2), notifier, known_ids)


# -- decide_selection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selected", "previous", "total"),
    [
        pytest.param({1}, {1}, 3, id="nobody-removed"),
        pytest.param({1}, None, 3, id="never-seen"),
        pytest.param(set(), set(), 3, id="nobody-selected"),
        pytest.param({1, 2}, {1}, 3, id="someone-added"),
        pytest.param({1, 2, 3}, {1, 2, 3}, 4, id="new-user-registered"),
    ],
)
def test_decide_selection_all_users_on_and_incomplete_connects_the_missing(
    selected: set[int], previous: set[int] | None, total: int
) -> None:
    assert decide_selection(True, selected, previous, total) == SelectionFix(connect_missing=True)


@pytest.mark.parametrize(
    ("selected", "previous"),
    [
        pytest.param({1, 2}, {1, 2, 3}, id="one-removed-from-everyone"),
        pytest.param({1}, {1, 2}, id="one-removed-from-some"),
        pytest.param({2, 4}, {1, 2}, id="one-swapped"),
    ],
)
def test_decide_selection_someone_removed_turns_all_users_off(selected: set[int], previous: set[int]) -> None:
    assert decide_selection(True, selected, previous, 4) == SelectionFix(all_users=False)


@pytest.mark.parametrize("previous", [None, {1, 2}, {1, 2, 3, 4}])
def test_decide_selection_everyone_selected_turns_all_users_on(previous: set[int] | None) -> None:
    assert decide_selection(False, {1, 2, 3}, previous, 3) == SelectionFix(all_users=True)


@pytest.mark.parametrize("all_users", [True, False])
def test_decide_selection_without_users_does_nothing(all_users: bool) -> None:
    assert decide_selection(all_users, set(), None, 0) is None
    assert decide_selection(all_users, set(), set(), 0) is None


@pytest.mark.parametrize(
    ("all_users", "selected", "previous"),
    [
        pytest.param(True, {1, 2, 3}, None, id="all-and-everyone"),
        pytest.param(True, {1, 2, 3}, {1, 2}, id="all-and-everyone-after-a-fix"),
        pytest.param(False, {1}, None, id="some"),
        pytest.param(False, {1}, {1, 2}, id="some-after-a-removal"),
        pytest.param(False, set(), None, id="none"),
    ],
)
def test_decide_selection_consistent_states_need_nothing(
    all_users: bool, selected: set[int], previous: set[int] | None
) -> None:
    assert decide_selection(all_users, selected, previous, 3) is None


# -- sync: the "all users" selection ---------------------------------------------------------


async def test_sync_all_users_on_create_selects_every_user_in_the_draft(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: RecordingNotifier
) -> None:
    fake.create(publish=False, allUsers=True, users={1})

    await lifecycle.sync(DOC, announce=False)

    assert fake.drafts[DOC]["users"] == EVERYONE
    assert fake.drafts[DOC]["allUsers"] is True
    assert notifier.calls == []


async def test_sync_never_publishes_a_draft_only_notification(
    fake: FakeStrapi, lifecycle: NotificationLifecycle
) -> None:
    fake.create(publish=False, allUsers=True, users={1})
    fake.create(OTHER_DOC, publish=False, allUsers=False, users=EVERYONE)

    await lifecycle.sync(DOC, announce=False)
    await lifecycle.sync(OTHER_DOC, announce=False)

    assert [(w.document_id, w.status) for w in fake.writes] == [(DOC, "draft"), (OTHER_DOC, "draft")]
    assert fake.published == {}
    assert fake.drafts[OTHER_DOC]["allUsers"] is True


async def test_sync_connects_in_chunks_and_publishes_with_the_last_only(
    fake: FakeStrapi, strapi: StrapiClient, notifier: RecordingNotifier, known_ids: KnownIds
) -> None:
    fake.create(publish=True, allUsers=True, users=set())
    lifecycle = chunked_lifecycle(strapi, notifier, known_ids)

    await lifecycle.sync(DOC, announce=False)

    assert fake.writes == [
        Write(DOC, "draft", {"notification_users": {"connect": [{"id": 1}, {"id": 2}]}}),
        Write(DOC, "draft", {"notification_users": {"connect": [{"id": 3}, {"id": 4}]}}),
        Write(DOC, None, {"notification_users": {"connect": [{"id": 5}]}, "allUsers": True}),
    ]
    assert fake.published[DOC]["users"] == EVERYONE


async def test_sync_connects_only_the_users_not_yet_selected(
    fake: FakeStrapi, strapi: StrapiClient, notifier: RecordingNotifier, known_ids: KnownIds
) -> None:
    fake.create(publish=True, allUsers=True, users={2, 4})
    lifecycle = chunked_lifecycle(strapi, notifier, known_ids)

    await lifecycle.sync(DOC, announce=False)

    connected = [item["id"] for w in fake.writes for item in w.data["notification_users"]["connect"]]
    assert connected == [1, 3, 5]
    assert [w.status for w in fake.writes] == ["draft", None]


async def test_sync_keeps_an_editors_unpublished_edit_unpublished(
    fake: FakeStrapi, lifecycle: NotificationLifecycle
) -> None:
    fake.create(publish=True, allUsers=True, users=set(), message="Published text")
    published_id = fake.published_id()
    fake.edit(publish=False, message="Work in progress")

    await lifecycle.sync(DOC, announce=False)

    assert [w.status for w in fake.writes] == ["draft"]
    assert fake.published[DOC]["message"] == "Published text"
    assert fake.published[DOC]["users"] == set()
    assert fake.published_id() == published_id
    assert fake.drafts[DOC]["message"] == "Work in progress"
    assert fake.drafts[DOC]["users"] == EVERYONE


async def test_sync_does_not_publish_an_unpublished_all_users_toggle(
    fake: FakeStrapi, lifecycle: NotificationLifecycle
) -> None:
    fake.create(publish=True, allUsers=False, users={1})
    fake.edit(publish=False, allUsers=True)

    await lifecycle.sync(DOC, announce=False)

    assert [w.status for w in fake.writes] == ["draft"]
    assert fake.published[DOC]["allUsers"] is False
    assert fake.published[DOC]["users"] == {1}


async def test_sync_removing_one_user_turns_all_users_off_instead_of_re_adding(
    fake: FakeStrapi, lifecycle: NotificationLifecycle
) -> None:
    fake.create(publish=True, allUsers=True, users=EVERYONE)
    await lifecycle.sync(DOC, announce=False)
    fake.edit(publish=True, users=EVERYONE - {3})

    await lifecycle.sync(DOC, announce=False)

    assert fake.writes == [Write(DOC, None, {"allUsers": False})]
    for version in (fake.drafts[DOC], fake.published[DOC]):
        assert version["allUsers"] is False
        assert version["users"] == EVERYONE - {3}


async def test_sync_removal_saved_as_draft_only_changes_the_draft(
    fake: FakeStrapi, lifecycle: NotificationLifecycle
) -> None:
    fake.create(publish=True, allUsers=True, users=EVERYONE)
    await lifecycle.sync(DOC, announce=False)
    fake.edit(publish=False, users=EVERYONE - {3})

    await lifecycle.sync(DOC, announce=False)

    assert fake.writes == [Write(DOC, "draft", {"allUsers": False})]
    assert fake.published[DOC]["allUsers"] is True
    assert fake.published[DOC]["users"] == EVERYONE


async def test_sync_everyone_selected_by_hand_turns_all_users_on(
    fake: FakeStrapi, lifecycle: NotificationLifecycle
) -> None:
    fake.create(publish=True, allUsers=False, users=EVERYONE)

    await lifecycle.sync(DOC, announce=False)

    assert fake.writes == [Write(DOC, None, {"allUsers": True})]
    assert fake.published[DOC]["allUsers"] is True


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"allUsers": True, "users": set()}, id="all-users-connect"),
        pytest.param({"allUsers": False, "users": EVERYONE}, id="everyone-selected"),
        pytest.param({"allUsers": False, "users": {1, 2}}, id="already-consistent"),
    ],
)
async def test_sync_of_a_consistent_state_writes_nothing(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, fields: dict[str, Any]
) -> None:
    fake.create(publish=True, **fields)
    await lifecycle.sync(DOC, announce=True)
    writes = len(fake.writes)
    published_id = fake.published_id()

    # The sidecar's own write comes back as entry.update + entry.publish webhooks.
    await lifecycle.sync(DOC, announce=False)
    await lifecycle.sync(DOC, announce=True)

    assert len(fake.writes) == writes
    assert fake.published_id() == published_id


async def test_sync_completes_a_publish_that_raced_the_selection(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: RecordingNotifier
) -> None:
    # Strapi published the draft just before the sidecar's connect landed on it.
    fake.create(publish=True, allUsers=True, users={1})
    fake.edit(publish=False, users=EVERYONE)

    await lifecycle.sync(DOC, announce=False)

    assert fake.writes == [Write(DOC, None, {})]
    assert fake.published[DOC]["users"] == EVERYONE
    assert [users for users, _ in notifier.calls] == [EVERYONE]


async def test_sync_of_a_deleted_notification_does_nothing(
    fake: FakeStrapi,
    lifecycle: NotificationLifecycle,
    notifier: RecordingNotifier,
    respx_mock: respx.MockRouter,
) -> None:
    await lifecycle.sync(DOC, announce=True)

    assert fake.writes == []
    assert notifier.calls == []
    assert respx_mock.calls.call_count == 2  # the draft and the published version, both 404


# -- sync: announcing ------------------------------------------------------------------------


async def test_sync_announce_emits_the_seed_payload_once(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: RecordingNotifier
) -> None:
    media = {"id": 3, "name": "informe.pdf", "url": "/uploads/informe.pdf"}
    fake.create(publish=True, users={1, 2}, message="Nuevo aviso", url="", date="2026-11-25", document=media)

    await lifecycle.sync(DOC, announce=True)

    assert notifier.calls == [
        (
            {1, 2},
            {
                "mensaje": "Nuevo aviso",
                "id": fake.published_id(),
                "url": None,
                "document": media,
                "title": "2026-11-25",
                "documentId": DOC,
            },
        )
    ]


async def test_sync_announce_carries_the_published_rows_id_not_the_drafts(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: RecordingNotifier
) -> None:
    fake.create(publish=True, users={1})

    await lifecycle.sync(DOC, announce=True)

    ((_, payload),) = notifier.calls
    assert payload["id"] == fake.published_id()
    assert payload["id"] != fake.drafts[DOC]["id"]
    assert payload["url"] == "/inbox"


async def test_sync_announce_to_all_users_reaches_users_not_selected(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: RecordingNotifier
) -> None:
    # Published as "all users" with one user selected; the editor's unpublished edit keeps the
    # sidecar from publishing its selection, yet the published flag says everyone.
    fake.create(publish=True, allUsers=True, users={1})
    fake.edit(publish=False, message="Work in progress")

    await lifecycle.sync(DOC, announce=True)

    assert [users for users, _ in notifier.calls] == [EVERYONE]
    assert notifier.calls[0][1]["mensaje"] == "Hola"


async def test_sync_announce_without_all_users_reaches_only_the_selected(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: RecordingNotifier
) -> None:
    fake.create(publish=True, allUsers=False, users={2, 4})

    await lifecycle.sync(DOC, announce=True)

    assert [users for users, _ in notifier.calls] == [{2, 4}]


async def test_sync_announce_after_selecting_all_users_uses_the_republished_id(
    fake: FakeStrapi, strapi: StrapiClient, notifier: RecordingNotifier, known_ids: KnownIds
) -> None:
    fake.create(publish=True, allUsers=True, users=set())
    first_id = fake.published_id()
    lifecycle = chunked_lifecycle(strapi, notifier, known_ids)

    await lifecycle.sync(DOC, announce=True)

    ((users, payload),) = notifier.calls
    assert users == EVERYONE
    assert payload["id"] == fake.published_id() != first_id
    assert known_ids.document_id(payload["id"]) == DOC


async def test_sync_duplicate_webhooks_do_not_tell_a_user_twice(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: RecordingNotifier
) -> None:
    fake.create(publish=True, users={1, 2})

    await lifecycle.sync(DOC, announce=True)
    await lifecycle.sync(DOC, announce=True)
    fake.publish()  # republished unchanged: a new id, same audience
    await lifecycle.sync(DOC, announce=True)

    assert [users for users, _ in notifier.calls] == [{1, 2}]


async def test_sync_republish_tells_only_the_newly_added_user(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: RecordingNotifier
) -> None:
    fake.create(publish=True, users={1, 2})
    await lifecycle.sync(DOC, announce=True)
    fake.edit(publish=True, users={1, 2, 3})

    await lifecycle.sync(DOC, announce=True)

    assert [users for users, _ in notifier.calls] == [{1, 2}, {3}]
    assert notifier.calls[1][1]["id"] == fake.published_id()


async def test_sync_without_announce_emits_nothing(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: RecordingNotifier
) -> None:
    fake.create(publish=True, allUsers=False, users={1, 2})

    await lifecycle.sync(DOC, announce=False)

    assert notifier.calls == []


async def test_sync_announce_of_a_draft_only_notification_emits_nothing(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, notifier: RecordingNotifier
) -> None:
    fake.create(publish=False, allUsers=False, users={1, 2})

    await lifecycle.sync(DOC, announce=True)

    assert notifier.calls == []


async def test_sync_remembers_every_id_it_hands_out(
    fake: FakeStrapi, lifecycle: NotificationLifecycle, known_ids: KnownIds
) -> None:
    fake.create(publish=True, users={1})
    await lifecycle.sync(DOC, announce=True)
    first_id = fake.published_id()
    fake.publish()

    await lifecycle.sync(DOC, announce=True)

    assert known_ids.document_id(first_id) == DOC
    assert known_ids.document_id(fake.published_id()) == DOC
