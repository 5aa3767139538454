"""The Socket.IO edge: handshake authentication, one room per user, the inbox events, emits.

The seed's contract is kept as is (event names and room prefix come from settings):
- a socket authenticates with `auth: {token}` (or `Authorization: Bearer`) and joins `user-<id>`;
- `notification:read` `{notificationId}` records a read; with an ack the client learns the result;
- the server emits `notificacion` to user rooms.
Beyond the seed (docs/protocol.md): catch-up on connect (`notification:sync`), the live unread
count (`notification:unread`), mark-all-read, read echoes to the user's other sockets, and
`notification:removed`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import socketio

from adapter.auth import Authenticator
from adapter.errors import AuthError, AuthUnavailable, InvalidPayload, ReadError, StrapiError, UpstreamError
from adapter.fanout import FanoutManager, lean_engineio
from adapter.inbox import Inbox, InboxPage, parse_cursor
from adapter.limits import FailureThrottle, RateLimiter
from adapter.metrics import Metrics
from adapter.notifications import Ledger, wire_payload
from adapter.receipts import ReadReceipts, parse_notification_ref
from adapter.settings import Settings

__all__ = ["SocketGateway", "create_socket_server"]

logger = logging.getLogger(__name__)

RECOUNT_CONCURRENCY = 8
SETTLE_TRIES = 3
SETTLE_AGAIN_SECONDS = 0.5
# An exact count from Strapi may hold a notification published a moment before it, whose
# announcement (and +1) comes only after: the newest unread notifications of that count's page
# are noted for this long, and their announcement then leaves the count as it is.
INCLUDED_NEWEST = 5
INCLUDED_SECONDS = 60.0
Ack = dict[str, Any]


def create_socket_server(
    settings: Settings, client_manager: socketio.AsyncManager | None = None
) -> socketio.AsyncServer:
    """`client_manager`: an in-memory one by default (adapter/fanout.py); a Redis one to scale out."""
    origins: str | list[str] = "*" if "*" in settings.cors_origins else list(settings.cors_origins)
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=client_manager if client_manager is not None else FanoutManager(),
        cors_allowed_origins=origins,
        max_http_buffer_size=settings.max_payload_bytes,
        logger=False,
        engineio_logger=False,
    )
    lean_engineio(sio)
    return sio


class SocketGateway:
    """Registers the handlers on the server and emits to user rooms."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        settings: Settings,
        authenticator: Authenticator,
        receipts: ReadReceipts,
        inbox: Inbox,
        metrics: Metrics,
    ):
        self._sio = sio
        self._settings = settings
        self._authenticator = authenticator
        self._receipts = receipts
        self._inbox = inbox
        self._metrics = metrics
        self._sockets: dict[int, set[str]] = defaultdict(set)  # user -> their sockets here
        self._user_by_sid: dict[str, int] = {}  # socket -> its user (verified at the handshake)
        self._socket_count = 0  # sum of the sets' sizes, kept as they change (not summed per connect)
        # The unread count of each user connected here: exact from Strapi at catch-up and at
        # notification:sync, then kept by deltas (a new notification +1, a read -1), so a read
        # costs Strapi nothing more. `_counted`: which reads each count has taken in already
        # (documentId -> users here), so an echo seen twice (a webhook of a read another process
        # recorded) is not subtracted twice.
        self._unread: dict[int, int] = {}
        self._counted = Ledger(settings.emitted_ledger_size)
        # Per user here, how many deltas have touched their count: an exact count from Strapi
        # whose query a delta overtook may miss that delta (or hold it), so it is asked again.
        self._deltas: dict[int, int] = {}
        # Per user here: the newest notifications the last exact count holds already, until when
        # their announcement may still come (see INCLUDED_NEWEST).
        self._included: dict[int, tuple[float, frozenset[str]]] = {}
        # Users whose count went up by a new notification, to be sent `unread_delay` after the
        # first of them (see `_bump_unread`), and the timer that sends them.
        self._unread_due: set[int] = set()
        self._unread_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._expiry: dict[str, asyncio.TimerHandle] = {}  # sid -> its token's expiry
        self._socket_rate = RateLimiter(settings.socket_events_per_minute, settings.event_burst)
        self._user_rate = RateLimiter(settings.user_events_per_minute, settings.event_burst * 3)
        self._failures = FailureThrottle(settings.handshake_failures_per_minute)
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        sio.on(settings.event_read, self.on_read)
        sio.on(settings.event_read_all, self.on_read_all)
        sio.on(settings.event_sync, self.on_sync)
        sio.on(settings.event_auth_refresh, self.on_refresh)

    # -- handshake -------------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: object = None) -> None:
        peer = _peer(environ)
        if self._failures.blocked(peer):
            self._metrics.handshakes.labels("rate_limited").inc()
            raise socketio.exceptions.ConnectionRefusedError(
                "too many failed attempts", {"code": "rate_limited"}
            )
        try:
            identity = await self._authenticator.authenticate(
                _token_from(auth, environ), _query_value(environ, "userId")
            )
        except AuthError as exc:
            if not isinstance(exc, AuthUnavailable):
                self._failures.failed(peer)
            self._metrics.handshakes.labels(exc.code).inc()
            logger.info("refused socket from %s: %s", peer, exc.code)
            raise socketio.exceptions.ConnectionRefusedError(exc.message, {"code": exc.code}) from exc
        user_id = identity.user_id
        cap = self._settings.max_sockets_per_user
        if cap and len(self._sockets.get(user_id, ())) >= cap:
            self._metrics.handshakes.labels("too_many_connections").inc()
            raise socketio.exceptions.ConnectionRefusedError(
                "too many connections", {"code": "too_many_connections"}
            )
        try:
            # A client that left while its user was checked gets no disconnect event: drop it here.
            eio_socket = self._sio.eio.sockets.get(self._sio.manager.eio_sid_from_sid(sid, "/"))
            if eio_socket is None or eio_socket.closing or eio_socket.closed:
                raise KeyError(sid)
            await self._sio.enter_room(sid, self._settings.room_for(user_id))
        except KeyError as exc:
            self._metrics.handshakes.labels("left").inc()
            raise socketio.exceptions.ConnectionRefusedError("left", {"code": "left"}) from exc
        self._user_by_sid[sid] = user_id
        self._sockets[user_id].add(sid)
        self._socket_count += 1
        self._expire_at(sid, identity.expires_at)
        self._metrics.handshakes.labels("ok").inc()
        self._count_presence()
        self._spawn(self._catch_up(sid, user_id))
        logger.debug("socket %s joined as user %s", sid, user_id)

    async def on_disconnect(self, sid: str, reason: object = None) -> None:
        timer = self._expiry.pop(sid, None)
        if timer is not None:
            timer.cancel()
        self._socket_rate.forget(sid)
        user_id = self._user_by_sid.pop(sid, None)
        if user_id is None:
            return
        sockets = self._sockets.get(user_id)
        if sockets is not None and sid in sockets:
            sockets.discard(sid)
            self._socket_count -= 1
            if not sockets:
                del self._sockets[user_id]
                self._unread.pop(user_id, None)
                self._deltas.pop(user_id, None)
                self._included.pop(user_id, None)
        self._count_presence()

    # -- client events ---------------------------------------------------------------------

    async def on_read(self, sid: str, data: object = None, *extra: object) -> Ack:
        """`notification:read`; the return value is the acknowledgement, when one was asked for."""

        async def read(user_id: int) -> Ack:
            result = await self._receipts.mark_read(user_id, parse_notification_ref(data))
            if not result.already_read:
                await self._echo_read(user_id, [result.document_id], skip_sid=sid)
            return result.ack()

        return await self._answer(sid, "read", read, extra)

    async def on_read_all(self, sid: str, data: object = None, *extra: object) -> Ack:
        """Mark every unread notification of the user read; ack `{ok, marked}`."""

        async def read_all(user_id: int) -> Ack:
            if data is not None and not isinstance(data, dict):
                raise InvalidPayload("expected nothing or an object")
            marked: list[str] = []
            try:
                async for batch in self._inbox.unread_batches(user_id):
                    marked += await self._receipts.mark_many(user_id, [str(n["documentId"]) for n in batch])
            except StrapiError as exc:
                raise UpstreamError(f"Strapi failed: {exc.message}") from exc
            finally:
                if marked:
                    await self._echo_read(user_id, marked, skip_sid=sid)
            return {"ok": True, "marked": len(marked)}

        return await self._answer(sid, "read_all", read_all, extra)

    async def on_sync(self, sid: str, data: object = None, *extra: object) -> Ack:
        """Ask for (more of) the inbox: `{cursor?, limit?}` -> `{ok, items, unread, hasMore, cursor}`."""

        async def sync(user_id: int) -> Ack:
            cursor, limit = self._sync_request(data)
            deltas = self._deltas.get(user_id, 0)
            try:
                page = await self._inbox.page(user_id, cursor=cursor, limit=limit)
                unread = await self._settled_unread(user_id, page.unread, deltas)
            except StrapiError as exc:
                raise UpstreamError(f"Strapi failed: {exc.message}") from exc
            self._set_exact(user_id, unread, page.items if cursor is None else None)
            return {"ok": True, **self._page_body(page, unread)}

        return await self._answer(sid, "sync", sync, extra)

    async def on_refresh(self, sid: str, data: object = None, *extra: object) -> Ack:
        """`auth:refresh` `{token}`: a fresh access token for the same user keeps the socket open."""

        async def refresh(user_id: int) -> Ack:
            token = data.get("token") if isinstance(data, dict) else None
            if not isinstance(token, str) or not token:
                raise InvalidPayload("expected an object with token")
            try:
                identity = await self._authenticator.authenticate(token, str(user_id))
            except AuthError as exc:
                return {"ok": False, "error": {"code": exc.code, "message": exc.message}}
            self._expire_at(sid, identity.expires_at)
            return {"ok": True, "expiresAt": int(identity.expires_at)}

        return await self._answer(sid, "refresh", refresh, extra)

    # -- server-side events ----------------------------------------------------------------

    async def notify(self, user_ids: Iterable[int], payload: dict[str, Any]) -> int:
        """Emit the notification event to each user's room, in one call. Returns the room count."""
        users = sorted(user_ids)
        await self._emit(self._settings.event_notification, payload, users)
        self._announced(payload, users)
        await self._bump_unread(users, _document_id_of(payload))
        return len(users)

    def emitted_elsewhere(self, event: str, rooms: object, data: object = None) -> None:
        """Another process emitted `event` to `rooms` (REDIS_URL): its sockets here got it too;
        keep their unread counts right, as that process does for its own.

        `data`: the emit's arguments (a list); a read echo's documentIds are taken from it.
        """
        s = self._settings
        named = _users_of_rooms(rooms, s.room_prefix)
        users = list(self._sockets) if named is None else named
        payload = data[0] if isinstance(data, list) and len(data) == 1 else None
        if event == s.event_notification:
            if named is not None and isinstance(payload, dict):
                self._announced(payload, named)
            self._spawn(self._bump_unread(users, _document_id_of(payload)))
        elif event in (s.event_read_echo, s.event_read_all):
            read = _documents_of_echo(payload)
            self._spawn(self._count_reads(users, read) if read is not None else self.recount(users))
        elif event == s.event_removed:
            if isinstance(payload, dict) and isinstance(payload.get("documentId"), str):
                self._receipts.invalidate(payload["documentId"])
            self._spawn(self.recount(users))

    async def removed(self, document_id: str, user_ids: Iterable[int] | None) -> None:
        """A notification was deleted or unpublished: tell its audience (everyone if unknown).

        The counts of the users connected here are asked from Strapi again: whether the
        notification was still unread for each of them is not known here (removals are rare).
        """
        payload = {"documentId": document_id}
        if user_ids is None:
            await self._sio.emit(self._settings.event_removed, payload)
            self._metrics.emits.labels(self._settings.event_removed).inc()
            affected = list(self._unread)
        else:
            affected = sorted(user_ids)
            await self._emit(self._settings.event_removed, payload, affected)
        await self.recount(affected)

    async def read_elsewhere(self, document_id: str, user_ids: Iterable[int]) -> None:
        """Reads recorded in Strapi by other means (an editor, another service)."""
        await self._echo_read_to(sorted(user_ids), [document_id], skip_sid=None)

    async def recount(self, user_ids: Iterable[int]) -> None:
        """Send fresh unread counts, from Strapi, to the users connected here."""
        connected = [user_id for user_id in user_ids if user_id in self._sockets]
        gate = asyncio.Semaphore(RECOUNT_CONCURRENCY)

        async def one(user_id: int) -> None:
            async with gate:
                try:
                    deltas = self._deltas.get(user_id, 0)
                    count = await self._settled_unread(
                        user_id, await self._inbox.unread_count(user_id), deltas
                    )
                except StrapiError as exc:
                    logger.warning("cannot count unread notifications of user %s: %s", user_id, exc)
                    return
            if user_id in self._sockets:
                self._unread[user_id] = count
                self._unread_due.discard(user_id)  # this is its latest
                await self._send_counts({count: [user_id]})

        await asyncio.gather(*(one(user_id) for user_id in connected))

    async def close_all(self) -> int:
        """Close every client's transport (clients see a transport close and reconnect)."""
        sockets = list(self._sio.eio.sockets.values())
        for sock in sockets:
            # wait=False: a long-polling client may never come back to collect the close packet
            await sock.close(wait=False, reason=self._sio.eio.reason.SERVER_DISCONNECT)
        for task in list(self._tasks):
            task.cancel()
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
        if self._unread_timer is not None:
            self._unread_timer.cancel()
            self._unread_timer = None
        return len(sockets)

    # -- helpers ---------------------------------------------------------------------------

    async def _catch_up(self, sid: str, user_id: int) -> None:
        """Batched with the other catch-ups waiting (see `Inbox.catch_up`): a storm of them asks
        Strapi a few requests at a time and never holds up handshakes."""

        def wanted() -> bool:  # skipped when the socket left before its turn
            return sid in self._sockets.get(user_id, ())

        deltas = self._deltas.get(user_id, 0)
        try:
            page = await self._inbox.catch_up(user_id, self._settings.catchup_limit, wanted)
            unread = None if page is None else await self._settled_unread(user_id, page.unread, deltas)
        except StrapiError as exc:
            logger.warning("catch-up for user %s failed: %s", user_id, exc)
            return
        except Exception:
            logger.exception("catch-up for user %s failed", user_id)
            return
        if page is None or unread is None or not wanted():
            return
        self._set_exact(user_id, unread, page.items)
        await self._sio.emit(self._settings.event_sync, self._page_body(page, unread), to=sid)
        self._metrics.emits.labels(self._settings.event_sync).inc()

    async def _echo_read(self, user_id: int, document_ids: list[str], *, skip_sid: str | None) -> None:
        await self._echo_read_to([user_id], document_ids, skip_sid=skip_sid)

    async def _echo_read_to(self, users: list[int], document_ids: list[str], *, skip_sid: str | None) -> None:
        """Tell users' sockets (but the one that asked) what they read; then their new counts."""
        rooms = self._settings.rooms_for(users)
        if rooms and document_ids:
            if len(document_ids) == 1:
                event = self._settings.event_read_echo
                payload: dict[str, Any] = {"notificationId": document_ids[0], "documentId": document_ids[0]}
            else:
                event = self._settings.event_read_all
                payload = {"documentIds": document_ids, "marked": len(document_ids)}
            await self._sio.emit(event, payload, to=rooms, skip_sid=skip_sid)
            self._metrics.emits.labels(event).inc()
        await self._count_reads(users, document_ids)

    async def _count_reads(self, users: Iterable[int], document_ids: list[str]) -> None:
        """`users` read `document_ids` (newly recorded): one unread fewer for each, for the users
        connected here, each read taken in once, never below 0."""
        changed: dict[int, list[int]] = defaultdict(list)
        for user_id in users:
            if user_id not in self._sockets:
                continue
            fresh = 0
            for document_id in document_ids:
                counted = self._counted.get(document_id)
                if counted is None:
                    self._counted.put(document_id, {user_id})
                elif user_id not in counted:
                    counted.add(user_id)
                    self._counted.put(document_id, counted)
                else:
                    continue
                fresh += 1
            if fresh:
                self._touched(user_id)
            before = self._unread.get(user_id)
            if before is None or not fresh:  # before the catch-up: it brings the exact count
                continue
            after = max(0, before - fresh)
            if after != before:
                self._unread[user_id] = after
                self._unread_due.discard(user_id)  # this is its latest
                changed[after].append(user_id)
        await self._send_counts(changed)

    def _set_exact(self, user_id: int, unread: int, newest_first: Iterable[dict[str, Any]] | None) -> None:
        """`unread`: the user's exact count, with the first page of their unread notifications
        (None: a later page, which leaves what was noted of the first as it is)."""
        self._unread[user_id] = unread
        self._unread_due.discard(user_id)  # the page carries it
        if newest_first is None:
            return
        included = frozenset(
            str(item["documentId"]) for item in itertools.islice(newest_first, INCLUDED_NEWEST)
        )
        if included:
            self._included[user_id] = (time.monotonic() + INCLUDED_SECONDS, included)
        else:
            self._included.pop(user_id, None)

    def _holds_already(self, user_id: int, document_id: str | None) -> bool:
        """Whether the user's count holds `document_id` already (counted before it was announced)."""
        noted = self._included.get(user_id)
        if noted is None or document_id is None:
            return False
        until, included = noted
        if time.monotonic() > until:
            del self._included[user_id]
            return False
        if document_id not in included:
            return False
        rest = included - {document_id}
        if rest:
            self._included[user_id] = (until, rest)
        else:
            del self._included[user_id]
        return True

    def _touched(self, user_id: int) -> None:
        self._deltas[user_id] = self._deltas.get(user_id, 0) + 1

    async def _settled_unread(self, user_id: int, counted: int, deltas: int) -> int:
        """`counted`: the unread count from a Strapi query started when the user's count had
        taken `deltas` deltas. If one came in meanwhile (a notification announced, a read echoed
        while the catch-up was under way), that answer may or may not hold it: count again, until
        no delta overtakes the query (a few tries; then the last answer, and a recount sent a
        moment later)."""
        for _ in range(SETTLE_TRIES):
            if self._deltas.get(user_id, 0) == deltas:
                return counted
            deltas = self._deltas.get(user_id, 0)
            counted = await self._inbox.unread_count(user_id)
        if self._deltas.get(user_id, 0) != deltas:  # still overtaken: again once the burst is over
            self._spawn(self._recount_later(user_id))
        return counted

    async def _recount_later(self, user_id: int) -> None:
        await asyncio.sleep(SETTLE_AGAIN_SECONDS)
        await self.recount([user_id])

    def _announced(self, payload: dict[str, Any], users: list[int]) -> None:
        """Reads of a notification just announced to `users` need not look it up in Strapi."""
        document_id, numeric_id = payload.get("documentId"), payload.get("id")
        if isinstance(document_id, str) and users:
            self._receipts.announced(document_id, numeric_id if isinstance(numeric_id, int) else None, users)

    async def _bump_unread(self, users: list[int], document_id: str | None = None) -> None:
        """A new notification (`document_id`) for `users`: one more unread, for those connected
        here whose count does not hold it already.

        The new counts are sent `unread_delay` seconds later, each user's latest: the
        notification itself goes out first and alone (in a large fan-out the counts would
        compete with it for the clients' and the server's time), and a burst of publications
        sends each user one count, not one per notification. With no delay, at once."""
        delay = self._settings.unread_delay
        bumped: dict[int, list[int]] = defaultdict(list)
        for user_id in users:
            if self._included and self._holds_already(user_id, document_id):
                continue
            if user_id in self._sockets:
                self._touched(user_id)
            if user_id in self._unread:
                self._unread[user_id] += 1
                if delay:
                    self._unread_due.add(user_id)
                else:
                    bumped[self._unread[user_id]].append(user_id)
        await self._send_counts(bumped)
        if self._unread_due and self._unread_timer is None:
            self._unread_timer = asyncio.get_running_loop().call_later(delay, self._unread_now)

    def _unread_now(self) -> None:
        self._unread_timer = None
        self._spawn(self._send_due_unread())

    async def _send_due_unread(self) -> None:
        """Send the counts `_bump_unread` left for later: each user's count as it is now."""
        due, self._unread_due = self._unread_due, set()
        by_count: dict[int, list[int]] = defaultdict(list)
        for user_id in sorted(due):
            count = self._unread.get(user_id)
            if count is not None:  # else gone since, or waiting for an exact count
                by_count[count].append(user_id)
        await self._send_counts(by_count)

    async def _send_counts(self, by_count: dict[int, list[int]]) -> None:
        """Each group its new unread count, to this process's sockets only (each process counts
        unread for its own)."""
        for count, group in by_count.items():
            await self._emit(self._settings.event_unread, {"unread": count}, group, local=True)

    async def _emit(
        self, event: str, payload: dict[str, Any], user_ids: list[int], *, local: bool = False
    ) -> None:
        """`local`: to this process's sockets only (each process counts unread for its own)."""
        if not user_ids:
            return
        rooms = self._settings.rooms_for(user_ids)
        started = time.perf_counter()
        await self._sio.emit(event, payload, to=rooms, ignore_queue=local)
        self._metrics.emit_seconds.labels(event).observe(time.perf_counter() - started)
        self._metrics.emits.labels(event).inc()
        self._metrics.deliveries.labels(event).inc(len(rooms))

    async def _answer(
        self, sid: str, name: str, handler: Callable[[int], Awaitable[Ack]], extra: tuple[object, ...] = ()
    ) -> Ack:
        """Run a client request; every failure becomes an error ack, never an exception.

        `extra`: arguments after the payload (python-socketio passes each as one more argument:
        without a place for them the handler would fail before it could answer).
        """
        try:
            user_id = await self._user_of(sid)
            if not (self._socket_rate.allow(sid) and self._user_rate.allow(user_id)):
                self._metrics.reads.labels(f"{name}:rate_limited").inc()
                return {"ok": False, "error": {"code": "rate_limited", "message": "too many requests"}}
            if extra:
                raise InvalidPayload("expected one argument")
            ack = await handler(user_id)
        except ReadError as exc:
            self._metrics.reads.labels(f"{name}:{exc.code}").inc()
            return {"ok": False, "error": {"code": exc.code, "message": exc.message}}
        except Exception:
            logger.exception("unexpected failure handling %s for socket %s", name, sid)
            self._metrics.reads.labels(f"{name}:internal_error").inc()
            return {"ok": False, "error": {"code": "internal_error", "message": "internal error"}}
        self._metrics.reads.labels(f"{name}:ok").inc()
        return ack

    def _sync_request(self, data: object) -> tuple[tuple[str, str] | None, int]:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InvalidPayload("expected an object with optional cursor and limit")
        limit = data.get("limit", self._settings.catchup_limit or 50)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
            raise InvalidPayload("limit must be a whole number from 1 to 100")
        return parse_cursor(data.get("cursor")), limit

    def _page_body(self, page: InboxPage, unread: int) -> dict[str, Any]:
        return {
            "items": [wire_payload(item) for item in page.items],
            "unread": unread,
            "hasMore": page.has_more,
            "cursor": page.cursor,
        }

    def _expire_at(self, sid: str, expires_at: float) -> None:
        """Tell the socket and close it when its token expires (unless refreshed before)."""
        previous = self._expiry.pop(sid, None)
        if previous is not None:
            previous.cancel()
        delay = max(0.0, expires_at - time.time())
        loop = asyncio.get_running_loop()
        self._expiry[sid] = loop.call_later(delay, self._expire_now, sid)

    def _expire_now(self, sid: str) -> None:
        self._spawn(self._expire(sid))

    async def _expire(self, sid: str) -> None:
        self._expiry.pop(sid, None)
        payload = {"code": "expired_token", "message": "token expired: reconnect with a fresh token"}
        await self._sio.emit(self._settings.event_auth_expired, payload, to=sid)
        await self._sio.disconnect(sid)
        self._metrics.handshakes.labels("expired_disconnect").inc()

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _count_presence(self) -> None:
        self._metrics.users.set(len(self._sockets))
        self._metrics.sockets.set(self._socket_count)

    async def _user_of(self, sid: str) -> int:
        return self._user_by_sid[sid]


def _document_id_of(payload: object) -> str | None:
    document_id = payload.get("documentId") if isinstance(payload, dict) else None
    return document_id if isinstance(document_id, str) else None


def _token_from(auth: object, environ: dict[str, Any]) -> str | None:
    if isinstance(auth, dict):
        token = auth.get("token")
        if isinstance(token, str) and token:
            return token
    header = environ.get("HTTP_AUTHORIZATION", "")
    if isinstance(header, str) and header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def _users_of_rooms(rooms: object, prefix: str) -> list[int] | None:
    """The user ids of `user-<id>` rooms; None when the emit had no room (every socket)."""
    if rooms is None:
        return None
    names = [rooms] if isinstance(rooms, str) else rooms if isinstance(rooms, list) else []
    ids = [name[len(prefix) :] for name in names if isinstance(name, str) and name.startswith(prefix)]
    return [int(value) for value in ids if value.isdecimal()]


def _documents_of_echo(payload: object) -> list[str] | None:
    """The documentIds of a read echo (`{documentId}` or `{documentIds}`)."""
    if not isinstance(payload, dict):
        return None
    ids = payload.get("documentIds", [payload.get("documentId")])
    if not isinstance(ids, list) or not all(isinstance(value, str) for value in ids):
        return None
    return ids


def _query_value(environ: dict[str, Any], name: str) -> str | None:
    values = parse_qs(str(environ.get("QUERY_STRING", ""))).get(name)
    return values[0] if values else None


def _peer(environ: dict[str, Any]) -> str:
    client = (environ.get("asgi.scope") or {}).get("client")
    return str(client[0]) if client else "unknown"
