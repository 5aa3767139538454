"""What each open connection keeps in memory, made smaller.

An idle Socket.IO connection is mostly bookkeeping. Served as python-socketio and uvicorn serve
it, each held: its ASGI call, open for the connection's whole life (uvicorn's task and a dozen
coroutine frames holding the request's environ, parsed query and first packet), uvicorn's
WebSocket protocol object with a dictionary of its own (37 attributes) and an `asyncio.Queue`
(three deques and an `Event`, about 3 KB), the handshake's request and response, every header
twice, and Engine.IO's socket with another `asyncio.Queue`, a task that sleeps until the next
ping, a reader task per message with a timeout around it, and a writer task parked on the empty
queue. None of that is needed by a connection waiting for the next notification. Here:

- `LeanQueue` and `LeanEvent`: the parts of `asyncio.Queue` and `asyncio.Event` that Engine.IO
  and uvicorn use, holding nothing while empty, and a queue can tell a consumer of each put.
- `LeanWebSocketProtocol`: uvicorn's sans-I/O WebSocket protocol with those, its attributes in
  slots, without the handshake's request and response once accepted, and able to go on without
  its ASGI call (`detach`): incoming events are handed over as they arrive.
- `lean_sockets`: Engine.IO's sockets get a `LeanQueue`; a ping is a timer, not a task; a
  WebSocket is detached from its ASGI call once set up, each message handled as it arrives; its
  writer is a task only while there is something to send. A client silent past the ping timeout
  is closed by Engine.IO's ping check (every socket, every ping timeout), and the socket's writer
  then closes the WebSocket.

The behaviour on the wire is Engine.IO's: the same packets, the same ping schedule, the same
timeouts (see docs/protocol.md); tests/unit/test_lean.py checks it with real clients.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from engineio import exceptions as engineio_exceptions
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = [
    "LeanEvent",
    "LeanHttpToolsProtocol",
    "LeanQueue",
    "LeanWebSocketProtocol",
    "detached",
    "lean_sockets",
    "poll",
    "writer_idle",
]


def _wake_first(waiters: list[asyncio.Future[None]]) -> None:
    """Wake the first waiter still waiting (`waiters` is left without it)."""
    while waiters:
        waiter = waiters.pop(0)
        if not waiter.done():
            waiter.set_result(None)
            return


class LeanQueue:
    """An unbounded FIFO queue with the interface of `asyncio.Queue` that Engine.IO and uvicorn
    use (`put`, `put_nowait`, `get`, `get_nowait`, `empty`, `qsize`, `task_done`, `join`), and
    the same behaviour: getters are served in order, a woken getter that is cancelled passes its
    turn on, `join` waits until every item taken was marked done. Empty and unwatched, it holds
    four empty slots (an `asyncio.Queue` holds about 3 KB)."""

    __slots__ = ("_getters", "_items", "_joiners", "_unfinished", "consumer")

    def __init__(self, maxsize: int = 0) -> None:
        if maxsize:
            raise ValueError("LeanQueue is unbounded")
        self._items: deque[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None
        self._joiners: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        # Called after each put: a consumer that is not parked in `get()` (see `_serve_writes`).
        self.consumer: Callable[[], None] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return False

    def waiting_getters(self) -> int:
        """How many `get()` calls are parked on the empty queue (not yet woken)."""
        return sum(1 for getter in self._getters if not getter.done()) if self._getters else 0

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._unfinished += 1
        if self._getters:
            _wake_first(self._getters)
        if self.consumer is not None:
            self.consumer()

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        items = self._items
        if not items:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if not items:
            self._items = None
        return item

    async def get(self) -> Any:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()  # in case it is still waiting
                if getter in self._getters:
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():  # woken, then cancelled: pass the turn on
                    _wake_first(self._getters)
                raise
            finally:
                if not self._getters:
                    self._getters = None
        return self.get_nowait()

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._joiners:
            joiners, self._joiners = self._joiners, None
            for joiner in joiners:
                if not joiner.done():
                    joiner.set_result(None)

    async def join(self) -> None:
        if self._unfinished:
            joiner = asyncio.get_running_loop().create_future()
            if self._joiners is None:
                self._joiners = []
            self._joiners.append(joiner)
            await joiner


class LeanEvent:
    """`asyncio.Event` (`set`, `clear`, `is_set`, `wait`) holding no deque while nobody waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._set = value
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            waiters, self._waiters = self._waiters, None
            for waiter in waiters or ():
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class LeanHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, freed by reference counting once it hands its connection
    to the WebSocket protocol. Its parser holds the protocol's callbacks, and the protocol holds
    the parser: uvicorn breaks that cycle when the connection ends, but an upgraded connection
    never comes back to it, so every WebSocket left one for the garbage collector (about 30
    objects with its flow control and request state; with Engine.IO's request translation, about
    half of what each handshake gave the collector to find)."""

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        self.parser = None  # type: ignore[assignment]


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with a `LeanQueue` and a `LeanEvent`, letting go of
    the handshake's request and response once the connection is accepted or refused, and with
    its attributes in slots: uvicorn sets 37, past what an instance dictionary shares with its
    class (30 in CPython 3.11), so each connection had a dictionary of its own (1.5 KB). An
    attribute another uvicorn adds still works (it goes to the instance dictionary)."""

    __slots__ = (
        "app",
        "app_state",
        "asgi_version",
        "client",
        "close_sent",
        "close_timeout",
        "close_timer",
        "config",
        "conn",
        "connections",
        "curr_msg_data_type",
        "default_headers",
        "disconnected",
        "frames",
        "handshake_complete",
        "handshake_initiated",
        "initial_response",
        "last_ping_rtt",
        "logger",
        "loop",
        "on_event",
        "pending_ping_payload",
        "ping_interval",
        "ping_sent_at",
        "ping_timeout",
        "ping_timer",
        "pong_timer",
        "queue",
        "read_paused",
        "request",
        "response",
        "root_path",
        "scheme",
        "scope",
        "server",
        "tasks",
        "transport",
        "writable",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = LeanQueue()  # type: ignore[assignment]
        self.writable = LeanEvent(True)  # type: ignore[assignment]
        self.on_event: Callable[[Any], None] | None = None

    def detach(self, on_event: Callable[[Any], None]) -> bool:
        """Go on without the ASGI call: from now on each incoming event (`websocket.receive`,
        `websocket.disconnect`) goes to `on_event` as it arrives, and the connection stays open
        when the call returns, until one side closes it (the application with `websocket.close`
        through `send`, which it keeps). Nothing then waits on the connection: no task, no
        coroutine frames. False (nothing changed) if the connection is not open."""
        if not self.handshake_complete or self.close_sent or self.disconnected or self.initial_response:
            return False
        self.on_event = on_event
        # uvicorn closes the transport when the ASGI call returns, unless a close is pending
        # (`close_timer` set): this stands for "none pending, but keep it open".
        self.close_timer = _KEEP_OPEN  # type: ignore[assignment]
        self.queue.consumer = self._hand_over  # type: ignore[attr-defined]
        self._hand_over()
        self._keep_reading()
        return True

    def _keep_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def _hand_over(self) -> None:
        queue = self.queue
        while not queue.empty() and self.on_event is not None:
            event = queue.get_nowait()
            queue.task_done()
            self.on_event(event)

    def send_receive_event_to_app(self) -> None:
        if self.on_event is None or self.read_paused:
            super().send_receive_event_to_app()
            if self.on_event is not None:
                self._keep_reading()
            return
        # uvicorn stops reading until the application took the message, and starts again then:
        # two epoll calls per message. A detached connection's messages are taken as they arrive
        # (`_hand_over`), so it goes on reading: uvicorn pauses only what is not paused already.
        self.read_paused = True
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = False

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The scope has what the application reads of the request. websockets' parser keeps the
        # request object for as long as the connection lives: its headers go at least.
        self.request = None  # type: ignore[assignment]
        event.headers.clear()

    def start_keepalive(self) -> None:
        # Called by `send` right after the accepting response was written: it is not read again.
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()


class _KeepOpen:
    """In a detached connection's `close_timer`: no close pending, and none to cancel."""

    def cancel(self) -> None:
        return None


_KEEP_OPEN = _KeepOpen()


# -- Engine.IO sockets --------------------------------------------------------------------------


async def poll(self: AsyncSocket) -> list[eio_packet.Packet]:
    """`AsyncSocket.poll` (a long-polling GET's wait) without `asyncio.wait_for`, which on Python
    3.11 wraps `queue.get()` in a task of its own each time. Same result: the packets queued (at
    least one; none once closing), and `QueueEmpty` after the ping interval + timeout without any
    (or when cancelled)."""
    queue = self.queue
    try:
        if queue.empty():
            async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                packets = [await queue.get()]
        else:
            packets = [queue.get_nowait()]
        queue.task_done()
    except (TimeoutError, asyncio.CancelledError):
        raise engineio_exceptions.QueueEmpty() from None
    if packets == [None]:
        return []
    return _more(queue, packets)


def _more(queue: Any, packets: list[Any]) -> list[Any]:
    """`packets` plus whatever else is queued, up to a closing `None` (left in the queue)."""
    while not queue.empty():
        pkt = queue.get_nowait()
        queue.task_done()
        if pkt is None:
            queue.put_nowait(None)
            break
        packets.append(pkt)
    return packets


def _schedule_ping(self: AsyncSocket) -> None:
    """`AsyncSocket.schedule_ping` with a timer instead of a task sleeping until the ping."""
    if self.last_ping:  # only once the previous ping was answered (or at the start)
        self.last_ping = None
        asyncio.get_running_loop().call_later(self.server.ping_interval, _ping, self)


def _ping(sock: AsyncSocket) -> None:
    """What `AsyncSocket._send_ping` does once its sleep is over."""
    if sock.closing or sock.closed:
        return
    sock.last_ping = time.time()
    sock.queue.put_nowait(eio_packet.Packet(eio_packet.PING))


async def _next_message(sock: AsyncSocket, ws: Any) -> Any:
    """The next message on `sock`'s WebSocket; OSError once it is closed (or for a message too
    large, which ends it)."""
    data = _message_data(sock, await ws.asgi_receive())
    if data is None:
        raise OSError("the WebSocket is closed")
    return data


async def _finish_upgrade(sock: AsyncSocket, ws: Any) -> bool:
    """A polling socket upgrading: the client's `2probe` answered with `3probe`, then its `5`
    (upgrade). False (the socket stays on polling) if the client does something else."""
    sock.upgrading = True  # hold packet sends during the upgrade
    try:
        probe = eio_packet.Packet(encoded_packet=await _next_message(sock, ws))
        if probe.packet_type != eio_packet.PING or probe.data != "probe":
            sock.server.logger.info("%s: Failed websocket upgrade, no PING packet", sock.sid)
            return False
        await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
        await sock.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
        upgrade = eio_packet.Packet(encoded_packet=await _next_message(sock, ws))
        if upgrade.packet_type != eio_packet.UPGRADE:
            sock.server.logger.info("%s: Failed websocket upgrade, expected UPGRADE packet", sock.sid)
            sock.upgraded = False
            return False
    except OSError:
        return False
    finally:
        sock.upgrading = False
    sock.upgraded = True
    return True


_WRITER = "_lean_writer"  # on an AsyncSocket on a WebSocket: its writer task, while it has one


def _serve_writes(sock: AsyncSocket, ws: Any) -> None:
    """From now on, what is queued on `sock` is sent on `ws` by a writer task that is started
    when something is queued and ends when the queue is empty: an idle connection holds no task
    (and no coroutine frames) for its writes."""
    queue = sock.queue
    queue.consumer = functools.partial(_start_writer, sock, ws)
    if not queue.empty():
        _start_writer(sock, ws)


def _start_writer(sock: AsyncSocket, ws: Any) -> None:
    if getattr(sock, _WRITER, None) is None:
        setattr(sock, _WRITER, asyncio.ensure_future(_write(sock, ws)))


def writer_idle(sock: AsyncSocket) -> bool:
    """Whether `sock` sends on a WebSocket (see `_serve_writes`) and has nothing queued or
    being sent: a frame written to its connection now goes out in order."""
    queue = sock.queue
    return (
        isinstance(queue, LeanQueue)
        and queue.consumer is not None
        and getattr(sock, _WRITER, None) is None
        and not queue.qsize()
    )


async def _write(sock: AsyncSocket, ws: Any) -> None:
    """The socket's writer: sends what is queued, in order, and ends when the queue is empty.
    Once the socket is closed (a close packet was the last thing sent, or `None` was queued) or
    the connection is gone, it closes the WebSocket (which ends the reader too) and nothing more
    is sent on it."""
    queue = sock.queue
    finished = False
    try:
        while not queue.empty():
            pkt = queue.get_nowait()
            queue.task_done()
            if pkt is not None:
                for each in _more(queue, [pkt]):
                    await ws.send(each.encode())
            if pkt is None or sock.closed:
                finished = True
                break
    except (Exception, asyncio.CancelledError):  # the connection is gone, or the server stops
        finished = True
    if finished:
        queue.consumer = None
        await ws.close()
    setattr(sock, _WRITER, None)  # (no await since the queue was last seen empty)


_DETACHED = "_lean_detached"  # on an AsyncSocket: its WebSocket goes on without the ASGI call
_BACKGROUND: set[asyncio.Task[Any]] = set()  # tasks started from callbacks, until they end


def _spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def detached(sock: AsyncSocket) -> bool:
    """Whether `sock`'s WebSocket went on without its ASGI call (see `_websocket_handler`)."""
    return bool(getattr(sock, _DETACHED, False))


def _message_data(sock: AsyncSocket, event: Any) -> Any:
    """The text or bytes of a `websocket.receive` event of `sock`'s WebSocket; None for the end
    of the connection, or a message over Engine.IO's size limit (which ends it)."""
    if event["type"] != "websocket.receive":
        return None
    data = event.get("text")
    if data is None:
        data = event.get("bytes")
    return None if data is None or len(data) > sock.server.max_http_buffer_size else data


async def _receive(sock: AsyncSocket, pkt: eio_packet.Packet) -> bool:
    """Engine.IO's handling of one packet from the client; False when the socket is closed."""
    try:
        await sock.receive(pkt)
    except engineio_exceptions.UnknownPacketError:
        pass
    except engineio_exceptions.SocketIsClosedError:
        sock.server.logger.info("Receive error -- socket is closed")
        return False
    except Exception:  # a bad packet must not end the connection (Engine.IO logs it)
        sock.server.logger.exception("Unknown receive error")
    return True


async def _finish(sock: AsyncSocket) -> None:
    """The WebSocket is over: the writer closes it (if it has not yet) and ends, then the socket."""
    await sock.queue.put(None)
    writer = getattr(sock, _WRITER, None)
    if writer is not None:
        await writer
    await sock.close(wait=False, abort=True, reason=sock.server.reason.TRANSPORT_CLOSE)


def _on_event(sock: AsyncSocket, proto: LeanWebSocketProtocol, event: Any) -> None:
    """An incoming event of a detached WebSocket (see `LeanWebSocketProtocol.detach`): what the
    reader loop below does with each, with a task only for what needs one (a pong needs none)."""
    data = _message_data(sock, event)
    if data is None:
        proto.on_event = None  # the end (or a message too large): nothing more is taken
        _spawn(_finish_detached(sock, proto))
        return
    try:
        pkt = eio_packet.Packet(encoded_packet=data)
    except Exception:  # a packet Engine.IO cannot decode is left out, as the reader loop does
        sock.server.logger.exception("Unknown receive error")
        return
    if pkt.packet_type == eio_packet.PONG:
        sock.schedule_ping()  # all that `AsyncSocket.receive` does with a pong
    else:
        _spawn(_receive_detached(sock, proto, pkt))


async def _receive_detached(sock: AsyncSocket, proto: LeanWebSocketProtocol, pkt: eio_packet.Packet) -> None:
    if not await _receive(sock, pkt) and proto.on_event is not None:
        proto.on_event = None
        await _finish_detached(sock, proto)


async def _finish_detached(sock: AsyncSocket, proto: LeanWebSocketProtocol) -> None:
    await _finish(sock)
    proto.queue.consumer = None  # type: ignore[attr-defined]
    sockets = sock.server.sockets
    if sock.closed and sockets.get(sock.sid) is sock:  # what Engine.IO does when the call returns
        del sockets[sock.sid]


async def _websocket_handler(self: AsyncSocket, ws: Any) -> None:
    """Engine.IO's WebSocket transport for one socket. Unlike `AsyncSocket._websocket_handler`:

    - on uvicorn's lean protocol (the sidecar's), the connection is detached from this ASGI call
      (`LeanWebSocketProtocol.detach`): each message is handled as it arrives, and an idle
      connection holds no task and none of the coroutine frames of its request;
    - otherwise a reader loop awaits each message directly: no task per message, and no timeout
      per read;
    - either way, a client that stops answering pings is closed by Engine.IO's ping check, whose
      close ends the writer, which closes the WebSocket; the writer is a task only while there is
      something to send (`_serve_writes`)."""
    if self.connected:
        if not await _finish_upgrade(self, ws):
            return
    else:
        self.connected = True
        self.upgraded = True
    _serve_writes(self, ws)
    self.server.logger.info("%s: Upgrade to websocket successful", self.sid)
    receive = ws.asgi_receive  # Engine.IO's ASGI WebSocket: its ASGI `receive`, read directly
    proto = getattr(receive, "__self__", None)
    if isinstance(proto, LeanWebSocketProtocol) and proto.detach(functools.partial(_on_event, self, proto)):
        setattr(self, _DETACHED, True)
        return
    # Read through the ASGI `receive` rather than `ws.wait()`: two coroutine frames fewer held
    # by every idle connection.
    while True:
        try:
            data = _message_data(self, await receive())
        except (OSError, asyncio.CancelledError):
            break
        if data is None:
            break  # closed (by the client, or the server is stopping), or a message too large
        try:
            pkt = eio_packet.Packet(encoded_packet=data)
        except Exception:
            self.server.logger.exception("Unknown receive error")
            continue
        data = None  # not kept while waiting for the next message
        if not await _receive(self, pkt):
            break
    await _finish(self)


async def _close(self: AsyncSocket, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
    """`AsyncSocket.close`, then, for a socket on a WebSocket, the end of its writer: the writer
    closes the WebSocket, whose reader then ends (it has no timeout of its own). A socket closed
    for not answering pings queues no close packet, so without this its writer would wait on."""
    was_open = not self.closed
    await _stock_close(self, wait=wait, abort=abort, reason=reason)
    if was_open and self.closed and self.upgraded:
        self.queue.put_nowait(None)


_stock_close = AsyncSocket.close


def lean_sockets(eio: Any) -> None:
    """Engine.IO sockets of `eio` (an `engineio.AsyncServer`) get a `LeanQueue`, ping by timer,
    and the lean WebSocket transport above (the last two for every `AsyncSocket` of this process,
    like `poll`: Engine.IO creates them itself)."""
    eio.create_queue = lambda *args, **kwargs: LeanQueue()
    AsyncSocket.poll = poll
    AsyncSocket.schedule_ping = _schedule_ping
    AsyncSocket._websocket_handler = _websocket_handler
    AsyncSocket.close = _close
