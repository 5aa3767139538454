"""A fast, in-memory fake of the Strapi 5 REST routes the sidecar calls, for benchmarks.

    python -m bench.fake_strapi --port 8000 --users 12000 --api-token T

Routes, answered in Strapi 5.54's shapes (checked against the fixture):
    GET  /_health                                  204
    GET  /api/users/count                          the number of users
    GET  /api/users?fields&start&limit&sort        users (ids 1..N), bare JSON array
    GET  /api/users/:id                            one user, or 404
    GET  /api/notifications?filters&sort&...       find: {data, meta: {pagination}}
    GET  /api/notifications/:documentId?status=    one version, or 404
    PUT  /api/notifications/:documentId?status=    connect users / set fields (draft; both unless draft)
    GET  /api/read-notifications?filters&...       find
    POST /api/read-notifications                   create (published)
    PUT  /api/read-notifications/:documentId       connect users (republished: a new id)
Filters: $and, $or, $not, $eq, $ne, $in, $notIn, $lt, $lte, $gt, $gte, $null, $notNull, and
conditions through relations (notification_users, users_permissions_users, notification).
`fields`, `populate` (with nested fields and filters), `sort` and `pagination` are honoured.

Benchmark control (not counted, no token):
    POST /__notifications  {documentId?, id?, users: [ids], message?, url?, date?, allUsers?}
    GET  /__reads?notification=<documentId>        its READNOTIFICATIONs, every user id kept
    GET  /__stats                                  requests per route since the last reset
    POST /__reset                                  zero the counters
    POST /__clear                                  forget every notification and READNOTIFICATION

Every user exists and is not blocked. Requests are counted by method and route template
(`GET /api/users/:id`), so a benchmark can tell exactly what a scenario cost.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import string
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ALPHABET = string.ascii_lowercase + string.digits
STAMP = "2026-01-01T00:00:00.000Z"
Json = dict[str, Any]
RELATIONS = {"notification_users", "users_permissions_users"}


def new_document_id() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(24))


def user_document_id(user_id: int) -> str:
    return f"user{user_id:020d}"


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Relation(list[int]):
    """A to-many relation: user ids in connection order, with a set for membership tests."""

    def __init__(self, ids: Iterable[int] = ()):
        super().__init__()
        self.ids: set[int] = set()
        self.connect(ids)

    def connect(self, ids: Iterable[int]) -> int:
        """Add ids not present yet (Strapi's connect is idempotent); return how many were present."""
        present = 0
        for uid in ids:
            if uid in self.ids:
                present += 1
            else:
                self.ids.add(uid)
                self.append(uid)
        return present


# -- query strings ---------------------------------------------------------------------------


def parse_qs_nested(pairs: Iterable[tuple[str, str]]) -> Json:
    """`filters[$and][0][id][$eq]=5` -> {"filters": {"$and": [{"id": {"$eq": "5"}}]}}, as qs does."""
    root: Json = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        if not parts:
            continue
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    result = _listify(root)
    assert isinstance(result, dict)
    return result


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {key: _listify(value) for key, value in node.items()}
    if items and all(key.isdecimal() for key in items):
        keys = sorted(items, key=int)
        if [int(key) for key in keys] == list(range(len(keys))):
            return [items[key] for key in keys]
    return items


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value.values())
    return [value]


# -- filters ---------------------------------------------------------------------------------


def _coerce(value: Any, wanted: Any) -> Any:
    """The query's string as the type of the stored value."""
    if isinstance(value, bool):
        return str(wanted).lower() in ("true", "1")
    if isinstance(value, int):
        try:
            return int(wanted)
        except (TypeError, ValueError):
            return wanted
    return wanted if wanted is None else str(wanted)


def compare(value: Any, operator: str, argument: Any) -> bool:
    if operator == "$null":
        return (value is None) == (str(argument).lower() == "true")
    if operator == "$notNull":
        return (value is not None) == (str(argument).lower() == "true")
    if operator in ("$in", "$notIn"):
        inside = any(value == _coerce(value, item) for item in _as_list(argument))
        return inside if operator == "$in" else not inside
    wanted = _coerce(value, argument)
    if operator == "$eq":
        return bool(value == wanted)
    if operator == "$ne":
        return bool(value != wanted)
    if value is None or wanted is None:
        return False
    if operator == "$lt":
        return bool(value < wanted)
    if operator == "$lte":
        return bool(value <= wanted)
    if operator == "$gt":
        return bool(value > wanted)
    if operator == "$gte":
        return bool(value >= wanted)
    raise ValueError(f"operator {operator} is not implemented by the fake")


def matches(doc: Json, filters: Any, resolve: Callable[[Json, str], Any]) -> bool:
    """Strapi's filter semantics over `doc`; `resolve(doc, field)` gives relation targets."""
    if not isinstance(filters, dict):
        return True
    for key, condition in filters.items():
        if key == "$and":
            if not all(matches(doc, item, resolve) for item in _as_list(condition)):
                return False
        elif key == "$or":
            if not any(matches(doc, item, resolve) for item in _as_list(condition)):
                return False
        elif key == "$not":
            if matches(doc, condition, resolve):
                return False
        elif not _field_matches(resolve(doc, key), condition, resolve):
            return False
    return True


def _field_matches(value: Any, condition: Any, resolve: Callable[[Json, str], Any]) -> bool:
    if isinstance(value, Relation):
        id_condition = condition.get("id") if isinstance(condition, dict) and len(condition) == 1 else None
        if isinstance(id_condition, dict) and len(id_condition) == 1:  # the fast paths
            if "$eq" in id_condition:
                return _int(id_condition["$eq"]) in value.ids
            if "$in" in id_condition:
                return any(_int(item) in value.ids for item in _as_list(id_condition["$in"]))
        return any(matches({"id": uid}, condition, resolve) for uid in value)
    if isinstance(value, dict):
        return matches(value, condition, resolve)
    if isinstance(condition, dict):
        for operator, argument in condition.items():
            if operator in ("$and", "$or", "$not"):
                if not matches({"_": value}, {operator: argument}, lambda d, k: d.get("_")):
                    return False
            elif not compare(value, operator, argument):
                return False
        return True
    return compare(value, "$eq", condition)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def sort_docs(docs: list[Json], sort: Any) -> list[Json]:
    keys: list[str] = []
    for item in _as_list(sort) if sort else []:
        keys += [part.strip() for part in str(item).split(",") if part.strip()]
    ordered = list(docs)
    for key in reversed(keys):
        name, _, direction = key.partition(":")
        ordered.sort(key=lambda doc, n=name: (doc.get(n) is None, doc.get(n)), reverse=direction == "desc")
    return ordered


def page_of(found: list[Json], query: Json) -> tuple[list[Json], Json]:
    pagination = query.get("pagination") or {}
    if "start" in pagination or "limit" in pagination:
        start = int(pagination.get("start") or 0)
        limit = int(pagination.get("limit") or 25)
        meta = {"start": start, "limit": limit, "total": len(found)}
        return found[start : start + limit], {"pagination": meta}
    page = max(1, int(pagination.get("page") or 1))
    size = max(1, int(pagination.get("pageSize") or 25))
    meta = {"page": page, "pageSize": size, "pageCount": -(-len(found) // size), "total": len(found)}
    return found[(page - 1) * size : page * size], {"pagination": meta}


# -- the app ---------------------------------------------------------------------------------


class FakeStrapi:
    """The in-memory state and the routes."""

    def __init__(self, users: int, api_token: str):
        self.users = users
        self._auth = f"Bearer {api_token}"
        self.counts: Counter[str] = Counter()
        self.notifications: dict[str, dict[str, Json]] = {}  # documentId -> {"draft"|"published": doc}
        self.reads: dict[str, Json] = {}  # documentId -> READNOTIFICATION
        self.duplicate_connects = 0
        self.users_asked: Counter[int] = Counter()  # user id -> times a request named it
        self._next_id = 1_000_000
        self._encoded: dict[tuple[str, str, str], bytes] = {}

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _count(self, request: Request, template: str) -> Response | None:
        self.counts[f"{request.method} {template}"] += 1
        if request.headers.get("authorization") != self._auth:
            return _error(401, "UnauthorizedError", "Missing or invalid credentials")
        return None

    def user(self, user_id: int) -> Json:
        return {
            "id": user_id,
            "documentId": user_document_id(user_id),
            "username": f"bench{user_id}",
            "email": f"bench{user_id}@example.com",
            "provider": "local",
            "confirmed": True,
            "blocked": False,
            "createdAt": STAMP,
            "updatedAt": STAMP,
            "publishedAt": STAMP,
        }

    def routes(self) -> list[Route]:
        return [
            Route("/_health", self.health, methods=["GET"]),
            Route("/api/users/count", self.users_count, methods=["GET"]),
            Route("/api/users/{user_id:int}", self.get_user, methods=["GET"]),
            Route("/api/users", self.list_users, methods=["GET"]),
            Route("/api/notifications", self.find_notifications, methods=["GET"]),
            Route("/api/notifications/{document_id}", self.get_notification, methods=["GET"]),
            Route("/api/notifications/{document_id}", self.put_notification, methods=["PUT"]),
            Route("/api/read-notifications", self.find_reads, methods=["GET"]),
            Route("/api/read-notifications", self.create_read, methods=["POST"]),
            Route("/api/read-notifications/{document_id}", self.put_read, methods=["PUT"]),
            Route("/__notifications", self.add_notification, methods=["POST"]),
            Route("/__reads", self.dump_reads, methods=["GET"]),
            Route("/__stats", self.stats, methods=["GET"]),
            Route("/__reset", self.reset, methods=["POST"]),
            Route("/__clear", self.clear, methods=["POST"]),
        ]

    # -- views ---------------------------------------------------------------------------------

    def _resolve(self, doc: Json, field: str) -> Any:
        if field == "notification" and "users_permissions_users" in doc:  # a READNOTIFICATION
            target = doc.get("notification")
            versions = self.notifications.get(target) if isinstance(target, str) else None
            if versions is None:
                return None
            return versions.get("published") or versions.get("draft")
        return doc.get(field)

    def _view(self, doc: Json, fields: Any, populate: Any) -> Json:
        """A document as Strapi shows it: scalar fields (or `fields`), plus what is populated."""
        if isinstance(fields, list) and fields:
            shown = {"id": doc["id"], "documentId": doc["documentId"], **{f: doc.get(f) for f in fields}}
        else:
            shown = {
                k: v for k, v in doc.items() if k not in RELATIONS and k not in ("notification", "document")
            }
        wanted = populate if isinstance(populate, dict) else {}
        if populate == "*" or (isinstance(populate, list) and populate):
            wanted = {name: True for name in (_as_list(populate) if populate != "*" else RELATIONS)}
        for name, spec in wanted.items():
            target = self._resolve(doc, name)
            spec = spec if isinstance(spec, dict) else {}
            if isinstance(target, Relation):
                ids = [uid for uid in target if matches({"id": uid}, spec.get("filters"), _plain)]
                shown[name] = [self._user_view(uid, spec.get("fields")) for uid in ids]
            elif name == "document":
                shown[name] = doc.get("document")
            elif isinstance(target, dict):
                shown[name] = self._view(target, spec.get("fields"), spec.get("populate"))
            else:
                shown[name] = None
        return shown

    def _user_view(self, user_id: int, fields: Any) -> Json:
        if isinstance(fields, list) and fields:
            user = self.user(user_id)
            return {"id": user_id, "documentId": user["documentId"], **{f: user.get(f) for f in fields}}
        return self.user(user_id)

    # -- users-permissions -------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return Response(status_code=204, headers={"strapi": "fake"})

    async def users_count(self, request: Request) -> Response:
        if refused := self._count(request, "/api/users/count"):
            return refused
        return Response(str(self.users), media_type="application/json")

    async def get_user(self, request: Request) -> Response:
        if refused := self._count(request, "/api/users/:id"):
            return refused
        user_id = int(request.path_params["user_id"])
        self.users_asked[user_id] += 1
        if not 1 <= user_id <= self.users:
            return _error(404, "NotFoundError", "Not Found")
        return JSONResponse(self.user(user_id))

    async def list_users(self, request: Request) -> Response:
        if refused := self._count(request, "/api/users"):
            return refused
        query = parse_qs_nested(request.query_params.multi_items())
        start = int(query.get("start") or 0)
        limit = int(query.get("limit") or 100)
        filters = query.get("filters")
        if not filters:
            ids: Iterable[int] = range(start + 1, min(self.users, start + limit) + 1)
            return JSONResponse([self._user_view(uid, query.get("fields")) for uid in ids])
        # Filtered (a batched user check: filters[id][$in]=...): the ids named are the users asked
        # about; without an id condition, every user is a candidate.
        named = _named_ids(filters)
        self.users_asked.update(named)
        candidates = sorted(set(named)) if named else range(1, self.users + 1)
        found = [
            uid for uid in candidates if 1 <= uid <= self.users and matches(self.user(uid), filters, _plain)
        ]
        if str(query.get("sort") or "id:asc").endswith(":desc"):
            found.reverse()
        page = found[start : start + limit]
        return JSONResponse([self._user_view(uid, query.get("fields")) for uid in page])

    # -- notifications -----------------------------------------------------------------------

    async def get_notification(self, request: Request) -> Response:
        if refused := self._count(request, "/api/notifications/:documentId"):
            return refused
        doc_id = request.path_params["document_id"]
        status = request.query_params.get("status") or "published"
        key = (doc_id, status, str(request.query_params))
        body = self._encoded.get(key)
        if body is None:
            doc = (self.notifications.get(doc_id) or {}).get(status)
            if doc is None:
                return _error(404, "NotFoundError", "Not Found")
            query = parse_qs_nested(request.query_params.multi_items())
            shown = self._view(doc, query.get("fields"), query.get("populate"))
            body = json.dumps({"data": shown, "meta": {}}, separators=(",", ":")).encode()
            self._encoded[key] = body
        return Response(body, media_type="application/json")

    async def find_notifications(self, request: Request) -> Response:
        if refused := self._count(request, "/api/notifications"):
            return refused
        query = parse_qs_nested(request.query_params.multi_items())
        status = query.get("status") or "published"
        filters = query.get("filters")
        found = [
            doc
            for versions in self.notifications.values()
            if (doc := versions.get(status)) is not None and matches(doc, filters, self._resolve)
        ]
        chunk, meta = page_of(sort_docs(found, query.get("sort")), query)
        data = [self._view(doc, query.get("fields"), query.get("populate")) for doc in chunk]
        return JSONResponse({"data": data, "meta": meta})

    async def put_notification(self, request: Request) -> Response:
        if refused := self._count(request, "/api/notifications/:documentId"):
            return refused
        doc_id = request.path_params["document_id"]
        versions = self.notifications.get(doc_id)
        if versions is None:
            return _error(404, "NotFoundError", "Not Found")
        data = (await request.json()).get("data") or {}
        draft = versions["draft"]
        draft["notification_users"].connect(_connected_ids(data.get("notification_users")))
        for name in ("message", "url", "date", "allUsers"):
            if name in data:
                draft[name] = data[name]
        draft["updatedAt"] = iso_now()
        if request.query_params.get("status") != "draft":
            versions["published"] = {
                **draft,
                "id": self._new_id(),
                "publishedAt": iso_now(),
                "notification_users": Relation(draft["notification_users"]),
            }
        self._encoded = {k: v for k, v in self._encoded.items() if k[0] != doc_id}
        return JSONResponse({"data": self._view(draft, None, None), "meta": {}})

    # -- read notifications ------------------------------------------------------------------

    async def find_reads(self, request: Request) -> Response:
        if refused := self._count(request, "/api/read-notifications"):
            return refused
        query = parse_qs_nested(request.query_params.multi_items())
        filters = query.get("filters")
        found = [read for read in self.reads.values() if matches(read, filters, self._resolve)]
        chunk, meta = page_of(sort_docs(found, query.get("sort") or "id:asc"), query)
        data = [self._view(read, query.get("fields"), query.get("populate")) for read in chunk]
        return JSONResponse({"data": data, "meta": meta})

    async def create_read(self, request: Request) -> Response:
        if refused := self._count(request, "/api/read-notifications"):
            return refused
        data = (await request.json()).get("data") or {}
        targets = _connected_ids(data.get("notification"))
        now = iso_now()
        read = {
            "id": self._new_id(),
            "documentId": new_document_id(),
            "createdAt": now,
            "updatedAt": now,
            "publishedAt": now,
            "notification": str(targets[0]) if targets else None,
            "users_permissions_users": Relation(),
        }
        self.duplicate_connects += read["users_permissions_users"].connect(
            int(uid) for uid in _connected_ids(data.get("users_permissions_users"))
        )
        self.reads[read["documentId"]] = read
        return JSONResponse({"data": self._view(read, None, None), "meta": {}}, 201)

    async def put_read(self, request: Request) -> Response:
        if refused := self._count(request, "/api/read-notifications/:documentId"):
            return refused
        read = self.reads.get(request.path_params["document_id"])
        if read is None:
            return _error(404, "NotFoundError", "Not Found")
        data = (await request.json()).get("data") or {}
        self.duplicate_connects += read["users_permissions_users"].connect(
            int(uid) for uid in _connected_ids(data.get("users_permissions_users"))
        )
        read["id"] = self._new_id()  # Strapi republishes: the published row gets a new id
        read["updatedAt"] = read["publishedAt"] = iso_now()
        return JSONResponse({"data": self._view(read, None, None), "meta": {}})

    # -- benchmark control -------------------------------------------------------------------

    async def add_notification(self, request: Request) -> Response:
        body = await request.json()
        doc_id = str(body.get("documentId") or new_document_id())
        users = [int(uid) for uid in body.get("users") or []]
        now = iso_now()
        base = {
            "documentId": doc_id,
            "message": body.get("message", "bench"),
            "url": body.get("url"),
            "date": body.get("date"),
            "allUsers": bool(body.get("allUsers", False)),
            "createdAt": now,
            "updatedAt": now,
            "document": None,
        }
        published_id = int(body.get("id") or self._new_id())
        self.notifications[doc_id] = {
            "draft": {
                **base,
                "id": published_id - 1,
                "publishedAt": None,
                "notification_users": Relation(users),
            },
            "published": {
                **base,
                "id": published_id,
                "publishedAt": now,
                "notification_users": Relation(users),
            },
        }
        return JSONResponse({"documentId": doc_id, "id": published_id, "publishedAt": now})

    async def dump_reads(self, request: Request) -> Response:
        wanted = request.query_params.get("notification")
        reads = [
            {"documentId": read["documentId"], "users": list(read["users_permissions_users"])}
            for read in sorted(self.reads.values(), key=lambda r: r["createdAt"])
            if wanted is None or read["notification"] == wanted
        ]
        return JSONResponse({"reads": reads, "duplicateConnects": self.duplicate_connects})

    async def stats(self, request: Request) -> Response:
        return JSONResponse(
            {
                "counts": dict(self.counts),
                "total": sum(self.counts.values()),
                "at": time.time(),
                "users_asked": {
                    "total": sum(self.users_asked.values()),
                    "distinct": len(self.users_asked),
                    "max_per_user": max(self.users_asked.values(), default=0),
                },
            }
        )

    async def reset(self, request: Request) -> Response:
        self.counts.clear()
        self.users_asked.clear()
        return JSONResponse({"ok": True})

    async def clear(self, request: Request) -> Response:
        self.notifications.clear()
        self.reads.clear()
        self._encoded.clear()
        return JSONResponse({"ok": True})


def _plain(doc: Json, field: str) -> Any:
    return doc.get(field)


def _named_ids(filters: Any) -> list[int]:
    """The user ids a filter names by `id` ($eq, $in), at any depth of $and/$or."""
    found: list[int] = []
    if isinstance(filters, list):
        for item in filters:
            found += _named_ids(item)
    elif isinstance(filters, dict):
        for key, value in filters.items():
            if key == "id":
                condition = value if isinstance(value, dict) else {"$eq": value}
                for operator in ("$eq", "$in"):
                    for item in _as_list(condition.get(operator)) if operator in condition else []:
                        if (uid := _int(item)) is not None:
                            found.append(uid)
            elif key in ("$and", "$or"):
                found += _named_ids(value)
    return found


def _connected_ids(relation: Any) -> list[Any]:
    """Ids (or documentIds) a relation write connects: `{connect: [...]}`, `{set: [...]}` or a list."""
    if isinstance(relation, dict):
        items = [*(relation.get("connect") or []), *(relation.get("set") or [])]
    elif isinstance(relation, list):
        items = relation
    else:
        items = []
    return [item.get("id", item.get("documentId")) if isinstance(item, dict) else item for item in items]


def _error(status: int, name: str, message: str) -> Response:
    body = {"data": None, "error": {"status": status, "name": name, "message": message, "details": {}}}
    return JSONResponse(body, status_code=status)


def create_app(users: int, api_token: str) -> Starlette:
    return Starlette(routes=FakeStrapi(users, api_token).routes())


def main() -> None:
    parser = argparse.ArgumentParser(description="A fast in-memory fake of Strapi 5's REST API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--users", type=int, default=12_000)
    parser.add_argument("--api-token", default=os.environ.get("FAKE_STRAPI_TOKEN", ""))
    args = parser.parse_args()
    if not args.api_token:
        parser.error("--api-token (or FAKE_STRAPI_TOKEN) is required")
    app = create_app(args.users, args.api_token)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
