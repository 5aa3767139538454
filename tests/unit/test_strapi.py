"""adapter/strapi.py: the query encoder and the REST client, against a respx-mocked Strapi."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from adapter.errors import StrapiError, StrapiNotFound, StrapiUnavailable
from adapter.strapi import Page, StrapiClient, build_http_client, encode_query
from tests.serving import serve

BASE = "http://strapi.test"
TOKEN = "tok"


@pytest.fixture
async def strapi() -> AsyncIterator[StrapiClient]:
    async with build_http_client(BASE, TOKEN, 5.0) as http:
        yield StrapiClient(http)


def _sent(route: respx.Route, index: int = -1) -> httpx.Request:
    request: httpx.Request = route.calls[index].request
    return request


def _query(route: respx.Route, index: int = -1) -> list[tuple[str, str]]:
    return list(_sent(route, index).url.params.multi_items())


def _strapi_error(status: int, message: str, name: str = "ApplicationError") -> httpx.Response:
    body = {"data": None, "error": {"status": status, "name": name, "message": message, "details": {}}}
    return httpx.Response(status, json=body)


# -- encode_query ------------------------------------------------------------------------------


def test_encode_query_nests_filters_in_brackets() -> None:
    query = {
        "filters": {"notification": {"documentId": {"$eq": "abc"}}},
        "populate": {"users": {"fields": ["id"]}},
    }

    assert encode_query(query) == [
        ("filters[notification][documentId][$eq]", "abc"),
        ("populate[users][fields][0]", "id"),
    ]


def test_encode_query_indexes_and_or_lists() -> None:
    query = {
        "filters": {
            "$or": [{"id": {"$eq": 1}}, {"id": {"$in": [2, 3]}}],
            "$and": [{"title": {"$contains": "x"}}],
        }
    }

    assert encode_query(query) == [
        ("filters[$or][0][id][$eq]", "1"),
        ("filters[$or][1][id][$in][0]", "2"),
        ("filters[$or][1][id][$in][1]", "3"),
        ("filters[$and][0][title][$contains]", "x"),
    ]


def test_encode_query_booleans_are_true_and_false() -> None:
    query = {"filters": {"blocked": {"$eq": False}, "confirmed": {"$eq": True}}}

    assert encode_query(query) == [("filters[blocked][$eq]", "false"), ("filters[confirmed][$eq]", "true")]


def test_encode_query_drops_none_but_keeps_zero() -> None:
    query = {"status": None, "filters": {"id": None, "count": {"$gt": 0}}, "fields": [None, "id"], "start": 0}

    assert encode_query(query) == [("filters[count][$gt]", "0"), ("fields[1]", "id"), ("start", "0")]


def test_encode_query_keeps_strings_whole() -> None:
    assert encode_query({"sort": "id:asc", "fields": ["documentId"]}) == [
        ("sort", "id:asc"),
        ("fields[0]", "documentId"),
    ]


# -- documents ---------------------------------------------------------------------------------


async def test_strapi_find_sends_the_exact_query_and_parses_the_page(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    items = [{"id": 11, "documentId": "a"}, {"id": 12, "documentId": "b"}]
    meta = {"pagination": {"page": 2, "pageSize": 10, "pageCount": 3, "total": 22}}
    route = respx_mock.get(f"{BASE}/api/notifications").respond(json={"data": items, "meta": meta})

    page = await strapi.find(
        "notifications",
        filters={"notification_users": {"id": {"$eq": 5}}},
        fields=["documentId"],
        sort=["id:desc"],
        page=2,
        page_size=10,
        status="published",
    )

    assert page == Page(items=items, page=2, page_size=10, page_count=3, total=22)
    assert _query(route) == [
        ("filters[notification_users][id][$eq]", "5"),
        ("fields[0]", "documentId"),
        ("sort[0]", "id:desc"),
        ("pagination[page]", "2"),
        ("pagination[pageSize]", "10"),
        ("status", "published"),
    ]


async def test_strapi_requests_carry_the_api_token(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    route = respx_mock.get(f"{BASE}/api/notifications").respond(json={"data": [], "meta": {}})

    await strapi.find("notifications")

    assert _sent(route).headers["Authorization"] == f"Bearer {TOKEN}"


async def test_strapi_find_first_asks_for_one_and_returns_it(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    document = {"id": 7, "documentId": "r1"}
    meta = {"pagination": {"page": 1, "pageSize": 1, "pageCount": 4, "total": 4}}
    route = respx_mock.get(f"{BASE}/api/read-notifications").respond(json={"data": [document], "meta": meta})

    found = await strapi.find_first(
        "read-notifications", filters={"notification": {"documentId": {"$eq": "n1"}}}
    )

    assert found == document
    assert _query(route) == [
        ("filters[notification][documentId][$eq]", "n1"),
        ("pagination[page]", "1"),
        ("pagination[pageSize]", "1"),
    ]


async def test_strapi_find_first_returns_none_when_nothing_matches(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    meta = {"pagination": {"page": 1, "pageSize": 1, "pageCount": 0, "total": 0}}
    respx_mock.get(f"{BASE}/api/read-notifications").respond(json={"data": [], "meta": meta})

    assert await strapi.find_first("read-notifications") is None


async def test_strapi_find_one_returns_the_document(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    document = {"id": 3, "documentId": "n1", "message": "hola"}
    route = respx_mock.get(f"{BASE}/api/notifications/n1").respond(json={"data": document, "meta": {}})

    found = await strapi.find_one(
        "notifications", "n1", populate={"notification_users": {"fields": ["id"]}}, status="published"
    )

    assert found == document
    assert _query(route) == [("populate[notification_users][fields][0]", "id"), ("status", "published")]


async def test_strapi_find_one_missing_returns_none(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    respx_mock.get(f"{BASE}/api/notifications/gone").mock(
        return_value=_strapi_error(404, "Not Found", "NotFoundError")
    )

    assert await strapi.find_one("notifications", "gone") is None


async def test_strapi_create_posts_a_data_envelope_with_status(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    data = {"notification": "n1", "users_permissions_users": {"connect": [5]}}
    created = {"id": 9, "documentId": "r9", "publishedAt": "2025-01-01T00:00:00.000Z"}
    route = respx_mock.post(f"{BASE}/api/read-notifications").respond(201, json={"data": created, "meta": {}})

    result = await strapi.create("read-notifications", data, status="published")

    assert result == created
    assert _query(route) == [("status", "published")]
    assert json.loads(_sent(route).content) == {"data": data}


async def test_strapi_create_without_status_sends_no_query(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    route = respx_mock.post(f"{BASE}/api/read-notifications").respond(
        201, json={"data": {"id": 1}, "meta": {}}
    )

    await strapi.create("read-notifications", {"notification": "n1"})

    assert _sent(route).url.query == b""


async def test_strapi_update_puts_a_data_envelope_with_status(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    data = {"users_permissions_users": {"connect": [{"id": 5}]}}
    updated = {"id": 9, "documentId": "r9"}
    route = respx_mock.put(f"{BASE}/api/read-notifications/r9").respond(json={"data": updated, "meta": {}})

    result = await strapi.update("read-notifications", "r9", data, status="draft")

    assert result == updated
    assert _query(route) == [("status", "draft")]
    assert json.loads(_sent(route).content) == {"data": data}


# -- users-permissions -------------------------------------------------------------------------


async def test_strapi_list_users_returns_the_bare_array(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    users = [{"id": 1, "username": "ana"}, {"id": 2, "username": "bo"}]
    route = respx_mock.get(f"{BASE}/api/users").respond(json=users)

    result = await strapi.list_users(filters={"blocked": {"$eq": False}}, fields=["id", "username"])

    assert result == users
    assert _query(route) == [
        ("filters[blocked][$eq]", "false"),
        ("fields[0]", "id"),
        ("fields[1]", "username"),
        ("sort", "id:asc"),
        ("start", "0"),
        ("limit", "500"),
    ]


def _users_route(respx_mock: respx.MockRouter, user_ids: list[int]) -> respx.Route:
    """`GET /api/users` serving `user_ids` with start/limit, the way Strapi pages it."""

    def serve(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["start"])
        limit = int(request.url.params["limit"])
        return httpx.Response(200, json=[{"id": user_id} for user_id in user_ids[start : start + limit]])

    return respx_mock.get(f"{BASE}/api/users").mock(side_effect=serve)


async def test_strapi_all_user_ids_pages_with_start_and_limit(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    route = _users_route(respx_mock, [1, 2, 3, 4, 5])

    ids = await strapi.all_user_ids(page_size=2)

    assert ids == [1, 2, 3, 4, 5]
    assert [_query(route, index) for index in range(route.call_count)] == [
        [("fields[0]", "id"), ("sort", "id:asc"), ("start", str(start)), ("limit", "2")]
        for start in (0, 2, 4)
    ]


async def test_strapi_all_user_ids_stops_at_the_empty_page_after_a_full_one(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    route = _users_route(respx_mock, [1, 2, 3, 4])

    assert await strapi.all_user_ids(page_size=2) == [1, 2, 3, 4]
    assert route.call_count == 3


async def test_strapi_count_users_returns_the_bare_number(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    respx_mock.get(f"{BASE}/api/users/count").respond(json=154)

    assert await strapi.count_users() == 154


async def test_strapi_count_users_refuses_an_answer_that_is_not_a_number(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    respx_mock.get(f"{BASE}/api/users/count").respond(json={"count": 154})

    with pytest.raises(StrapiError):
        await strapi.count_users()


async def test_strapi_get_user_returns_the_bare_user(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    user = {"id": 5, "username": "ana", "blocked": False}
    route = respx_mock.get(f"{BASE}/api/users/5").respond(json=user)

    assert await strapi.get_user(5) == user
    assert _sent(route).headers["Authorization"] == f"Bearer {TOKEN}"


async def test_strapi_get_user_missing_returns_none(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    respx_mock.get(f"{BASE}/api/users/404").mock(
        return_value=_strapi_error(404, "Not Found", "NotFoundError")
    )

    assert await strapi.get_user(404) is None


async def test_strapi_list_users_refuses_an_answer_that_is_not_a_list(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    respx_mock.get(f"{BASE}/api/users").respond(json={"data": [{"id": 1}], "meta": {}})

    with pytest.raises(StrapiError) as caught:
        await strapi.list_users()

    assert caught.value.path == "/api/users"


# -- errors ------------------------------------------------------------------------------------


async def test_strapi_client_error_carries_status_and_strapis_message(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    respx_mock.get(f"{BASE}/api/notifications").mock(
        return_value=_strapi_error(400, "Invalid key notificationUsers", "ValidationError")
    )

    with pytest.raises(StrapiError) as caught:
        await strapi.find("notifications", filters={"notificationUsers": {"id": 5}})

    error = caught.value
    assert type(error) is StrapiError
    assert error.status == 400
    assert error.message == "Invalid key notificationUsers"
    assert str(error) == "400 Invalid key notificationUsers (GET /api/notifications)"


async def test_strapi_update_of_a_missing_document_is_strapi_not_found(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    respx_mock.put(f"{BASE}/api/notifications/d1").mock(
        return_value=_strapi_error(404, "Not Found", "NotFoundError")
    )

    with pytest.raises(StrapiNotFound) as caught:
        await strapi.update("notifications", "d1", {"title": "x"})

    assert caught.value.status == 404
    assert caught.value.method == "PUT"


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_strapi_server_errors_are_unavailable(
    respx_mock: respx.MockRouter, strapi: StrapiClient, status: int
) -> None:
    respx_mock.get(f"{BASE}/api/notifications").mock(
        return_value=_strapi_error(status, "Internal Server Error")
    )

    with pytest.raises(StrapiUnavailable) as caught:
        await strapi.find("notifications")

    assert caught.value.status == status


async def test_strapi_error_without_a_json_body_uses_the_reason_phrase(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    respx_mock.get(f"{BASE}/api/users/count").respond(502, html="<html>bad gateway</html>")

    with pytest.raises(StrapiUnavailable) as caught:
        await strapi.count_users()

    assert caught.value.status == 502
    assert caught.value.message == "Bad Gateway"


async def test_strapi_success_that_is_not_json_is_a_strapi_error(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    # What a STRAPI_URL pointing at a web app's index.html looks like.
    respx_mock.get(f"{BASE}/api/users/5").respond(200, html="<!doctype html><title>My app</title>")

    with pytest.raises(StrapiError) as caught:
        await strapi.get_user(5)

    assert caught.value.status == 200
    assert caught.value.path == "/api/users/5"


async def test_strapi_connection_refused_is_unavailable(
    respx_mock: respx.MockRouter, strapi: StrapiClient
) -> None:
    respx_mock.get(f"{BASE}/api/users/5").mock(side_effect=httpx.ConnectError("connection refused"))

    with pytest.raises(StrapiUnavailable) as caught:
        await strapi.get_user(5)

    assert caught.value.status is None
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_strapi_timeout_is_unavailable(respx_mock: respx.MockRouter, strapi: StrapiClient) -> None:
    respx_mock.post(f"{BASE}/api/read-notifications").mock(side_effect=httpx.ReadTimeout("read timed out"))

    with pytest.raises(StrapiUnavailable) as caught:
        await strapi.create("read-notifications", {"notification": "n1"})

    assert caught.value.status is None
    assert caught.value.message == "timed out"


async def test_strapi_answers_are_freed_without_the_garbage_collector() -> None:
    """httpx's responses were reference cycles: each Strapi request left ~40 objects for the
    collector, whose pauses (100 ms and more with many sockets open) stall every connection."""

    async def app(scope: dict[str, object], receive: object, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = json.dumps({"data": [], "meta": {"pagination": {"page": 1, "pageSize": 25, "total": 0}}})
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body.encode()})

    async with serve(app) as url, build_http_client(url, TOKEN, 5.0) as http:
        strapi = StrapiClient(http)
        await strapi.find("notifications")  # the connection pool is set up
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(20):
                page = await strapi.find("notifications")
                assert page.items == []
            gc.collect()
            left = {type(obj).__qualname__ for obj in gc.garbage}
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert not left & {"Response", "Request", "BoundAsyncStream", "Headers"}, left
