"""Emits through FanoutManager (adapter/fanout.py) reach exactly whom the stock manager reaches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest
import socketio
import uvicorn
import websockets
from engineio import exceptions as engineio_exceptions
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket
from hypothesis import given
from hypothesis import strategies as st
from socketio.async_pubsub_manager import AsyncPubSubManager

from adapter.__main__ import SERVER_OPTIONS
from adapter.fanout import FanoutManager, lean_engineio, with_fanout
from adapter.pubsub import WatchedRedisManager
from tests.serving import eventually

QUIET = 0.2


class Recorder:
    def __init__(self, url: str, namespace: str = "/") -> None:
        self.url = url
        self.namespace = namespace
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.sio.on("*", self._record, namespace=namespace)

    async def _record(self, event: str, *data: Any) -> None:
        self.events.append((event, data[0] if data else None))

    async def connect(self, room: str) -> str:
        await self.sio.connect(
            f"{self.url}?room={room}", transports=["websocket"], namespaces=[self.namespace], wait_timeout=5
        )
        sid = self.sio.get_sid(self.namespace)
        assert sid is not None
        return sid


@asynccontextmanager
async def server(**options: Any) -> AsyncIterator[tuple[socketio.AsyncServer, str]]:
    """A bare Socket.IO server with FanoutManager on uvicorn, served as the sidecar is."""
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=FanoutManager())
    lean_engineio(sio)

    def joiner(namespace: str) -> Any:
        async def join(sid: str, environ: dict[str, Any], auth: object = None) -> None:
            room = environ["QUERY_STRING"].split("room=")[1].split("&")[0]
            await sio.enter_room(sid, room, namespace=namespace)

        return join

    for namespace in ("/", "/other"):
        sio.on("connect", joiner(namespace), namespace=namespace)
    config = uvicorn.Config(
        socketio.ASGIApp(sio), host="127.0.0.1", port=0, log_config=None, **{**SERVER_OPTIONS, **options}
    )
    web = uvicorn.Server(config)
    task = asyncio.create_task(web._serve())
    while not web.started:
        assert not task.done(), "uvicorn stopped before it started"
        await asyncio.sleep(0.01)
    try:
        yield sio, f"http://127.0.0.1:{web.servers[0].sockets[0].getsockname()[1]}"
    finally:
        web.should_exit = True
        await task


async def connected(url: str, rooms: list[str], namespace: str = "/") -> list[tuple[Recorder, str]]:
    clients = [Recorder(url, namespace) for _ in rooms]
    sids = [await client.connect(room) for client, room in zip(clients, rooms, strict=True)]
    return list(zip(clients, sids, strict=True))


async def disconnect(*groups: list[tuple[Recorder, str]]) -> None:
    for group in groups:
        for client, _ in group:
            await client.sio.disconnect()


async def test_an_emit_to_rooms_reaches_each_member_once_in_order_and_no_one_else() -> None:
    async with server() as (sio, url):
        clients = await connected(url, ["user-1", "user-2", "user-2", "user-3"])
        await sio.emit("notificacion", {"n": 1}, to=["user-1", "user-2"])
        await sio.emit("notificacion", {"n": 2}, to=["user-1", "user-2"])
        await eventually(lambda: all(len(c.events) == 2 for c, _ in clients[:3]))
        await asyncio.sleep(QUIET)
        for client, _ in clients[:3]:
            assert client.events == [("notificacion", {"n": 1}), ("notificacion", {"n": 2})]
        assert clients[3][0].events == []
        await disconnect(clients)


async def test_skip_sid_namespaces_and_a_single_sid_are_kept() -> None:
    async with server() as (sio, url):
        main = await connected(url, ["user-1", "user-1", "user-2"])
        other = await connected(url, ["user-1"], namespace="/other")
        (first, first_sid), (second, _), (third, third_sid) = main
        await sio.emit("echo", "x", to="user-1", skip_sid=first_sid)
        await sio.emit("direct", ("a", 2), to=third_sid)
        await eventually(lambda: second.events and third.events)
        await asyncio.sleep(QUIET)
        assert first.events == []
        assert second.events == [("echo", "x")]
        assert third.events == [("direct", "a")]  # the first of its arguments, as recorded
        assert other[0][0].events == []
        await disconnect(main, other)


async def test_every_socket_gets_a_broadcast_without_rooms() -> None:
    async with server() as (sio, url):
        clients = await connected(url, ["user-1", "user-2"])
        await sio.emit("removed", {"documentId": "d"})
        await eventually(lambda: all(c.events == [("removed", {"documentId": "d"})] for c, _ in clients))
        await disconnect(clients)


async def test_callbacks_and_binary_payloads_still_go_through_the_stock_path() -> None:
    async with server() as (sio, url):
        clients = await connected(url, ["user-1"])
        client, sid = clients[0]
        client.sio.on("ask", lambda data: {"got": data})
        assert await sio.call("ask", {"q": 1}, to=sid, timeout=5) == {"got": {"q": 1}}
        await sio.emit("blob", b"\x00\x01", to="user-1")
        await eventually(lambda: client.events == [("blob", b"\x00\x01")])
        await disconnect(clients)


async def test_a_socket_whose_client_stopped_answering_pings_is_closed_not_queued() -> None:
    async with server() as (sio, url):
        clients = await connected(url, ["user-1", "user-1"])
        (quiet, quiet_sid), (alive, _) = clients
        eio_sid = sio.manager.eio_sid_from_sid(quiet_sid, "/")
        socket = sio.eio.sockets[eio_sid]
        socket.last_ping = time.time() - sio.eio.ping_timeout - 1  # its pong is overdue
        await sio.emit("notificacion", {"n": 1}, to="user-1")
        await eventually(lambda: alive.events == [("notificacion", {"n": 1})])
        assert socket.closed  # as python-socketio's own emit does: closed (with a CLOSE packet)
        assert sio.manager.sid_from_eio_sid(eio_sid, "/") is None  # and disconnected
        await asyncio.sleep(QUIET)
        assert quiet.events == []
        await disconnect(clients)


async def test_sockets_already_gone_are_skipped() -> None:
    manager = FanoutManager()

    gone = SimpleNamespace(closed=True)
    eio = SimpleNamespace(sockets={"closed": gone}, ping_timeout=20)
    manager.server = SimpleNamespace(eio=eio)
    pkt = eio_packet.Packet(eio_packet.MESSAGE, "2[]")
    assert await manager.queue_on_sockets(pkt, ["closed", "unknown"]) == 0
    assert eio.sockets == {}  # forgotten, as python-socketio's send does


def test_the_redis_manager_publishes_as_before_and_delivers_through_fanout() -> None:
    combined = with_fanout(WatchedRedisManager)
    order = combined.__mro__
    assert issubclass(combined, WatchedRedisManager)
    assert order.index(AsyncPubSubManager) < order.index(FanoutManager) < order.index(socketio.AsyncManager)
    assert with_fanout(combined) is combined


@pytest.mark.parametrize("offer", ["permessage-deflate; client_max_window_bits"])
async def test_websocket_compression_offered_by_a_browser_is_declined(offer: str) -> None:
    async with server() as (_, url):
        ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket&room=user-1"
        async with websockets.connect(ws_url, compression="deflate") as ws:
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            assert (await ws.recv()).startswith("0{")  # the Engine.IO handshake, uncompressed


async def test_poll_returns_what_was_queued_and_gives_up_after_the_ping_timeout() -> None:
    async with server() as (sio, _):
        socket = AsyncSocket(sio.eio, "sid")
        first, second = (eio_packet.Packet(eio_packet.MESSAGE, str(n)) for n in (1, 2))
        socket.queue.put_nowait(first)
        socket.queue.put_nowait(second)
        socket.queue.put_nowait(None)  # closing: what comes before still goes out, once
        assert await socket.poll() == [first, second]
        assert await socket.poll() == []
        waiting = asyncio.create_task(socket.poll())
        await asyncio.sleep(0.05)
        socket.queue.put_nowait(first)  # a writer waiting on an empty queue wakes up
        assert await waiting == [first]
        sio.eio.ping_interval, sio.eio.ping_timeout = 0.05, 0.05
        with pytest.raises(engineio_exceptions.QueueEmpty):
            await socket.poll()
        await socket.queue.join()  # every packet taken was marked done


async def test_rooms_after_joins_leaves_and_disconnects_are_what_python_socketio_keeps() -> None:
    async def run(manager: socketio.AsyncManager) -> list[Any]:
        ids = iter(range(1000))
        manager.server = SimpleNamespace(eio=SimpleNamespace(generate_id=lambda: f"s{next(ids)}"))
        seen: list[Any] = []
        sids = [await manager.pre_connect(f"e{n}", "/") for n in range(4)]
        for sid in sids:
            await manager.connect(sid, "/")
        for n, sid in enumerate(sids):
            manager.basic_enter_room(sid, "/", f"user-{n % 2}")
            manager.basic_enter_room(sid, "/", "everyone")
        manager.basic_leave_room(sids[0], "/", "everyone")
        seen.append(sorted(map(str, manager.get_rooms(sids[0], "/"))))
        manager.basic_close_room("user-1", "/")
        seen.append(sorted(map(str, manager.get_rooms(sids[1], "/"))))
        manager.pre_disconnect(sids[2], "/")
        manager.basic_disconnect(sids[2], "/")
        manager.basic_disconnect(sids[0], "/")
        seen.append({room: dict(members) for room, members in manager.rooms.get("/", {}).items()})
        seen.append((manager.pending_disconnect, manager.get_rooms(sids[0], "/")))
        for sid in sids[1:]:
            manager.basic_disconnect(sid, "/")
        seen.append(manager.rooms)
        return seen

    assert await run(FanoutManager()) == await run(socketio.AsyncManager())


memberships = st.lists(  # (socket number, room) pairs: sockets in several rooms, rooms of several
    st.tuples(st.integers(0, 7), st.sampled_from(["user-1", "user-2", "user-3", "everyone", None])),
    max_size=30,
)


@given(
    joined=memberships,
    targets=st.one_of(
        st.none(),
        st.sampled_from(["user-1", "everyone", "nobody"]),
        st.lists(
            st.sampled_from(["user-1", "user-2", "user-3", "everyone", "nobody"]), min_size=1, max_size=8
        ),
    ),
    skip=st.one_of(st.none(), st.integers(0, 7), st.lists(st.integers(0, 7), max_size=3)),
)
def test_an_emit_is_for_whom_get_participants_lists_once_each_in_its_order(
    joined: list[tuple[int, Any]], targets: Any, skip: Any
) -> None:
    manager = FanoutManager()
    for number, room in joined:
        manager.basic_enter_room(f"s{number}", "/", room, eio_sid=f"e{number}")
    skip_sid = [f"s{n}" for n in skip] if isinstance(skip, list) else None if skip is None else f"s{skip}"
    skipped = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
    stock = [eio for sid, eio in manager.get_participants("/", targets) if sid not in skipped]
    assert list(manager._recipients("/", targets, skipped)) == stock


def test_the_first_recipient_comes_before_the_other_rooms_are_looked_up() -> None:
    """A notification to 10,000 rooms starts writing at once, not after merging them all."""

    looked_up: list[Any] = []

    class Watched(dict[Any, Any]):
        def get(self, key: Any, default: Any = None) -> Any:
            looked_up.append(key)
            return super().get(key, default)

    manager = FanoutManager()
    rooms = [f"user-{n}" for n in range(1000)]
    for n, room in enumerate(rooms):
        manager.basic_enter_room(f"s{n}", "/", room, eio_sid=f"e{n}")
    manager.rooms["/"] = Watched(manager.rooms["/"])
    recipients = manager._recipients("/", rooms, {None})
    assert next(recipients) == "e0"
    assert looked_up == ["user-0"]
    assert list(recipients) == [f"e{n}" for n in range(1, 1000)]
