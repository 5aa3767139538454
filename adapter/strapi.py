"""A small async client for Strapi 5's REST API: the documents routes and users-permissions.

The `httpx.AsyncClient` is handed in (base URL, API token and timeout already set on it), so
one owner opens and closes it and tests can swap its transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from adapter.errors import StrapiError, StrapiNotFound, StrapiUnavailable

__all__ = [
    "Document",
    "Page",
    "RequestGate",
    "RequestObserver",
    "StrapiClient",
    "build_http_client",
    "encode_query",
]

logger = logging.getLogger(__name__)

Document = dict[str, Any]
DEFAULT_USER_PAGE_SIZE = 500
MAX_CONNECTIONS = 50
KEEPALIVE_CONNECTIONS = 20
# Requests in flight to Strapi at once; the others wait in `RequestGate`, not in httpx's pool.
# No more than the connections kept alive, so no connection is opened for one request and closed.
MAX_IN_FLIGHT = KEEPALIVE_CONNECTIONS


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a document list, with Strapi's pagination meta."""

    items: list[Document]
    page: int
    page_size: int
    page_count: int
    total: int


def build_http_client(
    base_url: str,
    api_token: str,
    timeout: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The one HTTP client the sidecar uses for Strapi."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_token}", "Accept": "application/json"},
        timeout=httpx.Timeout(timeout),
        transport=transport,
        limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=KEEPALIVE_CONNECTIONS),
    )


class RequestGate:
    """At most `limit` requests in flight; the others wait here, first come first served, urgent
    ones (a socket handshake waiting on them) before the rest.

    httpx's connection pool rescans every queued request against every connection whenever one
    changes hands (httpcore 1.0: O(queued x connections)); with hundreds of requests queued there
    that bookkeeping starves the event loop. Waiting here instead costs O(1) per request.
    A request that waits longer than `timeout` seconds fails like one Strapi did not answer.
    """

    def __init__(self, limit: int, timeout: float | None = None):
        if limit < 1:
            raise ValueError("a gate needs room for at least one request")
        self._free = limit
        self._timeout = timeout
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """Requests waiting (those given up on included, until their turn comes)."""
        return len(self._urgent) + len(self._normal)

    async def acquire(self, *, urgent: bool = False) -> None:
        """Wait for a place; raise `TimeoutError` after `timeout` s. `release()` it after."""
        if self._free > 0 and not self._urgent and not self._normal:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._normal).append(turn)
        try:
            async with asyncio.timeout(self._timeout):
                await turn
        except BaseException:
            if turn.done() and not turn.cancelled():  # given a place, then given up: pass it on
                self.release()
            else:
                turn.cancel()  # skipped when its turn comes
            raise

    def release(self) -> None:
        for queue in (self._urgent, self._normal):
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self._free += 1


def encode_query(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Flatten nested params the way Strapi's `qs` parser reads them.

    >>> encode_query({"filters": {"id": {"$eq": 5}}, "fields": ["documentId"]})
    [('filters[id][$eq]', '5'), ('fields[0]', 'documentId')]
    """
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        _flatten(key, value, pairs)
    return pairs


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}[{key}]", item, out)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for index, item in enumerate(value):
            _flatten(f"{prefix}[{index}]", item, out)
    elif isinstance(value, bool):
        out.append((prefix, "true" if value else "false"))
    else:
        out.append((prefix, str(value)))


class RequestObserver(Protocol):
    def __call__(self, method: str, status: int | None, seconds: float) -> None: ...


class StrapiClient:
    """Typed calls to the Strapi routes the sidecar needs; errors come out as `StrapiError`s."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        observe: RequestObserver | None = None,
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
    ):
        self._http = http
        self._observe = observe
        self._gate = RequestGate(max_in_flight, timeout=http.timeout.pool)

    # -- documents -------------------------------------------------------------------------

    async def find(
        self,
        collection: str,
        *,
        filters: Mapping[str, Any] | None = None,
        populate: Any = None,
        fields: Sequence[str] | None = None,
        sort: str | Sequence[str] | None = None,
        page: int = 1,
        page_size: int = 25,
        status: str | None = None,
    ) -> Page:
        params = {
            "filters": filters,
            "populate": populate,
            "fields": fields,
            "sort": sort,
            "pagination": {"page": page, "pageSize": page_size},
            "status": status,
        }
        body = await self._request_object("GET", f"/api/{collection}", params=params)
        meta = (body.get("meta") or {}).get("pagination") or {}
        items = body.get("data") or []
        return Page(
            items=list(items),
            page=int(meta.get("page", page)),
            page_size=int(meta.get("pageSize", page_size)),
            page_count=int(meta.get("pageCount", 1)),
            total=int(meta.get("total", len(items))),
        )

    async def find_first(self, collection: str, **query: Any) -> Document | None:
        """The first document matching `query` (see `find`), or None."""
        found = await self.find(collection, page_size=1, **query)
        return found.items[0] if found.items else None

    async def find_one(
        self,
        collection: str,
        document_id: str,
        *,
        populate: Any = None,
        fields: Sequence[str] | None = None,
        status: str | None = None,
    ) -> Document | None:
        """One document by documentId, or None when it does not exist (in that status)."""
        params = {"populate": populate, "fields": fields, "status": status}
        try:
            body = await self._request_object("GET", f"/api/{collection}/{document_id}", params=params)
        except StrapiNotFound:
            return None
        data = body.get("data")
        return data if isinstance(data, dict) else None

    async def create(
        self, collection: str, data: Mapping[str, Any], *, status: str | None = None
    ) -> Document:
        body = await self._request_object(
            "POST", f"/api/{collection}", params={"status": status}, json={"data": data}
        )
        return dict(body.get("data") or {})

    async def update(
        self,
        collection: str,
        document_id: str,
        data: Mapping[str, Any],
        *,
        status: str | None = None,
    ) -> Document:
        body = await self._request_object(
            "PUT",
            f"/api/{collection}/{document_id}",
            params={"status": status},
            json={"data": data},
        )
        return dict(body.get("data") or {})

    async def delete(self, collection: str, document_id: str) -> None:
        """Delete a document (every version of it); a document already gone is not an error."""
        try:
            await self._request("DELETE", f"/api/{collection}/{document_id}")
        except StrapiNotFound:
            return

    # -- users-permissions (bare JSON, not `{data}`) ---------------------------------------

    async def get_user(self, user_id: int, *, urgent: bool = False) -> Document | None:
        try:
            body = await self._request("GET", f"/api/users/{int(user_id)}", urgent=urgent)
        except StrapiNotFound:
            return None
        return body if isinstance(body, dict) else None

    async def users_by_id(
        self, user_ids: Sequence[int], *, fields: Sequence[str] | None = None, urgent: bool = False
    ) -> list[Document]:
        """The users among `user_ids` that exist, in one request (keep it to ~100 ids: the URL)."""
        ids = list(dict.fromkeys(int(user_id) for user_id in user_ids))
        if not ids:
            return []
        return await self.list_users(
            filters={"id": {"$in": ids}}, fields=fields, start=0, limit=len(ids), urgent=urgent
        )

    async def list_users(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        fields: Sequence[str] | None = None,
        sort: str | None = "id:asc",
        start: int = 0,
        limit: int = DEFAULT_USER_PAGE_SIZE,
        urgent: bool = False,
    ) -> list[Document]:
        params = {"filters": filters, "fields": fields, "sort": sort, "start": start, "limit": limit}
        body = await self._request("GET", "/api/users", params=params, urgent=urgent)
        if not isinstance(body, list):
            raise StrapiError("expected a JSON array of users", method="GET", path="/api/users")
        return body

    async def all_user_ids(self, page_size: int = DEFAULT_USER_PAGE_SIZE) -> list[int]:
        """Every user's id, paging with start/limit (the only paging `/api/users` knows)."""
        ids: list[int] = []
        while True:
            batch = await self.list_users(fields=["id"], start=len(ids), limit=page_size)
            ids.extend(int(user["id"]) for user in batch)
            if len(batch) < page_size:
                return ids

    async def count_users(self) -> int:
        body = await self._request("GET", "/api/users/count")
        if isinstance(body, int) and not isinstance(body, bool):
            return body
        raise StrapiError("expected a number of users", method="GET", path="/api/users/count")

    async def ping(self) -> None:
        """Raise unless Strapi answers its health route."""
        await self._request("GET", "/_health")

    # -- plumbing --------------------------------------------------------------------------

    async def _request_object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A documents-API answer: a JSON object (`{data, meta}`), or a StrapiError."""
        body = await self._request(method, path, **kwargs)
        if not isinstance(body, dict):
            raise StrapiError("expected a JSON object", method=method, path=path)
        return body

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        urgent: bool = False,
    ) -> Any:
        """`urgent`: ahead of the other requests waiting for a place (see `RequestGate`)."""
        query = httpx.QueryParams(tuple(encode_query(params or {})))
        try:
            await self._gate.acquire(urgent=urgent)
        except TimeoutError as exc:
            raise StrapiUnavailable("timed out waiting for a connection", method=method, path=path) from exc
        started = time.perf_counter()
        status: int | None = None
        try:
            response = _unbound(await self._http.request(method, path, params=query, json=json))
            status = response.status_code
        except httpx.TimeoutException as exc:
            raise StrapiUnavailable("timed out", method=method, path=path) from exc
        except httpx.HTTPError as exc:
            raise StrapiUnavailable(f"unreachable: {type(exc).__name__}", method=method, path=path) from exc
        finally:
            self._gate.release()
            if self._observe is not None:
                self._observe(method, status, time.perf_counter() - started)
        if not response.is_success:
            raise _error_from(response, method, path)
        try:
            return response.json() if response.content else None
        except ValueError as exc:  # e.g. STRAPI_URL points at a web page, not at Strapi
            raise StrapiError("expected JSON", status=response.status_code, method=method, path=path) from exc


def _unbound(response: httpx.Response) -> httpx.Response:
    """`response`, read already, with its body as a plain stream. httpx binds a response's stream
    to the response (to time it when closed), a reference cycle that took every Strapi answer
    (about 40 objects with its request, headers and connection streams) to the garbage
    collector; now reference counting frees them once the answer is used."""
    response.stream = httpx.ByteStream(response.content)
    return response


def _error_from(response: httpx.Response, method: str, path: str) -> StrapiError:
    message = _strapi_message(response)
    status = response.status_code
    if status == 404:
        return StrapiNotFound(message, status=status, method=method, path=path)
    if status >= 500 or status == 429:
        return StrapiUnavailable(message, status=status, method=method, path=path)
    return StrapiError(message, status=status, method=method, path=path)


def _strapi_message(response: httpx.Response) -> str:
    """Strapi's own error message (`{"error": {"message": ...}}`), else the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "error"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return response.reason_phrase or "error"
