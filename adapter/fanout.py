"""Emitting to many rooms at once without a task per recipient.

python-socketio's `AsyncManager.emit` encodes the packet once, then creates one asyncio task per
recipient (each awaiting `eio.send_packet` -> `socket.send` -> `queue.put`) and waits for them
all. For a notification to 10,000 users that is 10,000 tasks created, scheduled and collected,
before any byte is written: most of a fan-out's CPU went there (and into the garbage collector
they wake up).

`FanoutManager.emit` does the same work synchronously: one encoded packet, then for each
recipient what `socket.send` does (the ping-timeout check, then `queue.put`, which on Engine.IO's
unbounded queue never waits) with `put_nowait`. Each socket's writer task wakes up and writes,
as before, in the same order. What it does not handle itself goes to the stock path unchanged:
emits with a callback (a packet per recipient) and binary payloads (several packets each), and
any socket whose client stopped answering pings (the stock `send` closes it).

Where a socket's WebSocket writer task is idle (parked on its empty queue), the packet does not
even go through it: the WebSocket frame, the same bytes for every recipient (a server's frames are
unmasked, and compression is declined), is built once and written straight to the connection's
transport, which is what the writer would do next anyway. Polling, upgrading or closing sockets, a
writer holding packets, a client over its transport's high-water mark: those are queued as above
(see `_idle_websocket`), so each socket's messages keep their order and flow control holds.

It is a plain `AsyncManager` subclass; `fanout_manager_class` puts it under a pub/sub manager
(the Redis one) so that emits arriving from other processes take the same path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import socketio
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket
from socketio import packet as sio_packet
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from adapter.lean import detached, lean_sockets, writer_idle

__all__ = ["FanoutManager", "lean_engineio", "with_fanout"]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=socketio.AsyncManager)


class FanoutManager(socketio.AsyncManager):  # type: ignore[misc]
    """`AsyncManager` whose emit queues one shared packet on every recipient's socket directly.

    It also keeps the rooms of each socket: python-socketio finds them, on every disconnect, by
    copying and scanning every room of the namespace (two per connected socket, plus the user
    rooms), so 10,000 sockets going away at once cost 10,000 x 20,000 lookups (over a minute of
    a blocked event loop).
    """

    def __init__(self) -> None:
        super().__init__()
        # (namespace, sid) -> its rooms, in the order joined (a tuple: a socket is in two or three)
        self._joined: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.direct_writes = 0  # deliveries written straight to an idle WebSocket (see `_idle_websocket`)

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: str | None = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        rooms = self._joined.get((namespace, sid), ())
        if room not in rooms:
            self._joined[namespace, sid] = (*rooms, room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        rooms = self._joined.get((namespace, sid))
        if rooms is not None:
            rest = tuple(joined for joined in rooms if joined != room)
            if rest:
                self._joined[namespace, sid] = rest
            else:
                del self._joined[namespace, sid]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """python-socketio's, but with the socket's own rooms instead of a scan of every room."""
        if namespace not in self.rooms:
            return
        for room in list(self._joined.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        return [room for room in self._joined.get((namespace, sid), ()) if room is not None]

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if callback is not None:  # one packet (with its ack id) per recipient: the stock path
            return await super().emit(  # type: ignore[no-any-return]
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to, **kwargs
            )
        room = to or room
        if namespace not in self.rooms:
            return None
        args = list(data) if isinstance(data, tuple) else [data] if data is not None else []
        encoded = self.server.packet_class(
            sio_packet.EVENT, namespace=namespace, data=[event, *args]
        ).encode()
        if isinstance(encoded, list):  # binary attachments: several packets each, the stock path
            return await super().emit(  # type: ignore[no-any-return]
                event, data, namespace, room=room, skip_sid=skip_sid, to=to, **kwargs
            )
        skipped = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        pkt.encode()  # cached on the packet: every writer sends the same string
        await self.queue_on_sockets(pkt, self._recipients(namespace, room, skipped))
        return None

    def _recipients(self, namespace: str, room: Any, skipped: set[Any]) -> Iterator[str]:
        """The Engine.IO sids of `room`'s sockets (each once) but `skipped`, as `get_participants`
        would list them, in the same order, but room by room as they are read: a notification's
        first recipient is written to before the 10,000th room is even looked up (merging them
        all first took 10-15 ms with 10,000 connections, the clients idle meanwhile)."""
        if not hasattr(room, "__len__") or isinstance(room, str):  # one room: nothing to merge
            yield from (
                eio_sid for sid, eio_sid in self.get_participants(namespace, room) if sid not in skipped
            )
            return
        ns = self.rooms.get(namespace, {})
        seen = set(skipped)
        for name in room:
            members = ns.get(name)
            if members is None:
                continue
            for sid, eio_sid in list(members._fwdm.items()):
                if sid not in seen:
                    seen.add(sid)
                    yield eio_sid

    async def queue_on_sockets(self, pkt: eio_packet.Packet, eio_sids: Iterable[str]) -> int:
        """Queue `pkt` on each Engine.IO socket, as `AsyncSocket.send` would. Returns how many."""
        eio = self.server.eio
        sockets = eio.sockets
        ping_timeout = eio.ping_timeout
        now = time.time()
        slow = []
        queued = 0
        frame: bytes | None = None
        for eio_sid in eio_sids:
            sock = sockets.get(eio_sid)
            if sock is None or sock.closed:
                # what `send_packet` does for a socket that is gone: skip it (and forget it)
                if sock is not None:
                    sockets.pop(eio_sid, None)
                continue
            last_ping = sock.last_ping
            if last_ping and now - last_ping > ping_timeout:
                slow.append(sock)  # the client stopped answering pings: `send` closes it
                continue
            queued += 1
            transport = _idle_websocket(sock)
            if transport is not None:
                if frame is None:
                    frame = _frame(pkt)
                try:
                    transport.write(frame)
                except Exception:  # nothing was written: the writer task sends it instead
                    logger.debug("direct write failed; queueing", exc_info=True)
                else:
                    self.direct_writes += 1
                    continue
            sock.queue.put_nowait(pkt)
        for sock in slow:
            await sock.send(pkt)
        return queued


def with_fanout(manager_class: type[M]) -> type[M]:
    """`manager_class` with `FanoutManager`'s emit doing its local deliveries.

    For a pub/sub manager (e.g. the Redis one), whose `emit` publishes and whose listener hands
    each message to `AsyncManager.emit` through `super()`, the new class puts `FanoutManager`
    right above `AsyncManager`, so publishing is unchanged and the local deliveries are fast.
    """
    if issubclass(manager_class, FanoutManager):
        return manager_class
    combined = type(
        manager_class.__name__, (manager_class, FanoutManager), {"__module__": manager_class.__module__}
    )
    return combined


# -- what each WebSocket connection keeps, and what each delivery costs ---------------------------


# Writing a delivery straight to an idle WebSocket. Every recipient of a notification gets the same
# bytes on the wire (a server's frames are not masked, and compression is declined), so they are
# framed once and written to each transport, instead of waking each socket's writer task to frame
# and write them. Only where that is exactly what the writer would do next (`_idle_websocket`).

_DIRECT = "_fanout_direct_protocol"  # on an AsyncSocket: its uvicorn protocol, while writable directly
_SEEN = "_fanout_websocket_seen"  # on an AsyncSocket: a WebSocket request came for it already


def _frame(pkt: eio_packet.Packet) -> bytes:
    """The WebSocket frame the writer task would send for `pkt` (`ws.send(pkt.encode())`)."""
    data = pkt.encode()
    if isinstance(data, str):
        return Frame(Opcode.TEXT, data.encode()).serialize(mask=False, extensions=[])
    return Frame(Opcode.BINARY, data).serialize(mask=False, extensions=[])


def _idle_websocket(sock: AsyncSocket) -> Any:
    """The transport of `sock`'s WebSocket if writing a frame to it now is what its writer task
    would do with the packet (it is parked on an empty queue, holding nothing, and uvicorn would
    write the frame at once), else None: then the packet is queued for the writer, as usual.

    Not for: a polling or upgrading socket, one that is closing, one whose writer holds packets
    (woken but not run yet, or waiting for a slow client's buffer to drain: uvicorn's `send`
    waits for `writable` then), a connection past OPEN or with a close sent, compression."""
    proto = getattr(sock, _DIRECT, None)
    if proto is None or not sock.upgraded or sock.upgrading or sock.closing or sock.closed:
        return None
    try:
        if not writer_idle(sock):  # no writer task holding or sending packets, nothing queued
            return None
        conn = proto.conn
        if (
            proto.close_sent
            or proto.disconnected
            or not proto.handshake_complete
            or proto.initial_response is not None
            or not proto.writable.is_set()  # over the high-water mark: the writer waits, so must we
            or conn.state is not State.OPEN
            or conn.writes
            or conn.extensions
            or conn.expect_continuation_frame
        ):
            return None
        transport = proto.transport
        if transport is None or transport.is_closing():
            return None
    except AttributeError:  # pragma: no cover - another engineio/uvicorn/websockets version
        return None
    return transport


def _direct_protocol(asgi_send: Any) -> Any:
    """uvicorn's protocol object behind an ASGI `send`, if it is the sans-I/O WebSocket one's
    own method (not wrapped by a middleware) with what `_idle_websocket` reads; else None."""
    proto = getattr(asgi_send, "__self__", None)
    if not isinstance(proto, WebSocketsSansIOProtocol) or getattr(asgi_send, "__func__", None) is not (
        WebSocketsSansIOProtocol.send
    ):
        return None
    needed = (
        "conn",
        "transport",
        "writable",
        "close_sent",
        "disconnected",
        "handshake_complete",
        "initial_response",
    )
    conn = getattr(proto, "conn", None)
    if not all(hasattr(proto, name) for name in needed) or not all(
        hasattr(conn, name) for name in ("state", "writes", "extensions", "expect_continuation_frame")
    ):
        return None  # pragma: no cover
    return proto


def _tracking(websocket_class: type) -> type:
    """Engine.IO's ASGI WebSocket wrapper, noting on the socket, while its WebSocket is served,
    which uvicorn protocol its writer task sends through (its first WebSocket only: a socket
    that gets a second one, e.g. a failed then retried upgrade, stays on the writer path)."""

    class TrackedWebSocket(websocket_class):  # type: ignore[misc]
        __slots__ = ("asgi_receive", "asgi_send", "handler")  # no dictionary per connection

        async def __call__(self, environ: dict[str, Any]) -> Any:
            sock = getattr(self.handler, "__self__", None)
            if not isinstance(sock, AsyncSocket):  # pragma: no cover
                return await super().__call__(environ)
            first = not getattr(sock, _SEEN, False)
            setattr(sock, _SEEN, True)
            setattr(sock, _DIRECT, _direct_protocol(environ.get("asgi.send")) if first else None)
            try:
                return await super().__call__(environ)
            finally:
                if not detached(sock):  # a detached one is served on after this call
                    setattr(sock, _DIRECT, None)

    TrackedWebSocket.__name__ = TrackedWebSocket.__qualname__ = websocket_class.__name__
    return TrackedWebSocket


class _NoBody:
    """`wsgi.input` of a WebSocket request (never read: it has no body)."""

    async def read(self, length: int | None = None) -> None:
        return None


_NO_BODY = _NoBody()

# What Engine.IO, Socket.IO and the sidecar read of a WebSocket request's environ, besides its
# headers (HTTP_*): the WSGI constants Engine.IO's translation adds are left out.
_ENVIRON = frozenset(
    {
        "CONTENT_LENGTH",
        "PATH_INFO",
        "QUERY_STRING",
        "REMOTE_ADDR",
        "REQUEST_METHOD",
        "asgi.receive",
        "asgi.scope",
        "asgi.send",
        "wsgi.url_scheme",
    }
)

# The headers of a WebSocket request that anything reads once it is accepted (ASGI names,
# lower-case): Engine.IO (the upgrade, and the origin for CORS), the sidecar (a bearer token in
# `Authorization`), and what tells where the client is (uvicorn applied the proxy headers it
# trusts before this). Everything else (cookies, user agent, languages...) is dropped.
WEBSOCKET_HEADERS = frozenset(
    {
        b"authorization",
        b"connection",
        b"host",
        b"origin",
        b"upgrade",
        b"x-forwarded-for",
        b"x-forwarded-proto",
    }
)


async def _websocket_environ(scope: dict[str, Any], receive: Any, send: Any) -> dict[str, Any]:
    """The environ of a WebSocket request: Engine.IO's own translation (see `lean_engineio`),
    keeping only what is read (`_ENVIRON`, and the headers as `HTTP_*`), and without the class
    Engine.IO's translation defines for each request's body (a WebSocket request has none): a
    class is a reference cycle, left for the garbage collector once the handshake is done."""
    event = await receive()
    if event["type"] != "websocket.connect":
        return {}
    try:
        query_string = (scope.get("query_string") or b"").decode("utf-8")
    except UnicodeDecodeError:
        query_string = ""
    environ: dict[str, Any] = {
        "wsgi.input": _NO_BODY,
        "REQUEST_METHOD": scope.get("method", "GET"),
        "PATH_INFO": scope["path"],
        "QUERY_STRING": query_string,
        "REMOTE_ADDR": "127.0.0.1",  # what Engine.IO's translation says; the peer is in the scope
        "asgi.receive": receive,
        "asgi.send": send,
        "asgi.scope": scope,
    }
    for raw_name, raw_value in scope["headers"]:
        try:
            name, value = raw_name.upper().decode("utf-8"), raw_value.decode("utf-8")
        except UnicodeDecodeError:
            continue  # as Engine.IO does: a header it cannot decode is left out
        if name == "CONTENT-LENGTH":
            environ["CONTENT_LENGTH"] = value
            continue
        key = "HTTP_" + name.replace("-", "_")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    environ["wsgi.url_scheme"] = environ.get("HTTP_X_FORWARDED_PROTO", "http")
    return environ


def lean_engineio(server: socketio.AsyncServer) -> None:
    """Make the Engine.IO server under `server` cheaper per connection and per message.

    - Engine.IO's request translation (ASGI scope -> environ) defines a class for every request
      and keeps it (2.6 KB) in the environ, which lives as long as the connection: a WebSocket
      request is translated here instead (`_websocket_environ`), with a shared body-less
      `wsgi.input`. The scope and the environ of a WebSocket request also live as long as the
      connection, each with every header: they keep only the headers that are read
      (`WEBSOCKET_HEADERS`), not cookies or user agents.
    - Each socket keeps less while it waits (adapter/lean.py).
    - Each WebSocket notes which uvicorn connection it is, so that `FanoutManager` can write a
      delivery straight to it while its writer task is idle (see `_idle_websocket`).
    """
    eio = server.eio
    translate = eio._async["translate_request"]

    async def translate_request(scope: dict[str, Any], receive: Any, send: Any) -> dict[str, Any]:
        if scope.get("type") == "websocket":
            scope["headers"] = [header for header in scope["headers"] if header[0] in WEBSOCKET_HEADERS]
            return await _websocket_environ(scope, receive, send)
        environ: dict[str, Any] = await translate(scope, receive, send)
        return environ

    tracked = {"translate_request": translate_request}
    websocket = eio._async.get("websocket")
    if isinstance(websocket, type):
        tracked["websocket"] = _tracking(websocket)
    eio._async = {**eio._async, **tracked}
    lean_sockets(eio)
