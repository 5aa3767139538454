"""The leaner per-connection parts (adapter/lean.py) behave as what they replace: asyncio's queue
and event, and Engine.IO's ping schedule and WebSocket transport, with real clients."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import time
from typing import Any

import pytest
import socketio
import websockets
from engineio import packet as eio_packet
from engineio.async_drivers import asgi as asgi_driver

from adapter.fanout import _ENVIRON, _websocket_environ
from adapter.lean import LeanEvent, LeanQueue, LeanWebSocketProtocol, detached, writer_idle
from tests.serving import eventually
from tests.unit.test_fanout import Recorder, server

# -- the queue and the event ---------------------------------------------------------------------


async def test_the_queue_is_first_in_first_out_and_wakes_its_getters_in_order() -> None:
    queue = LeanQueue()
    assert queue.empty()
    assert queue.qsize() == 0
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert queue.waiting_getters() == 2
    await queue.put("a")
    queue.put_nowait("b")
    queue.put_nowait("c")
    assert await first == "a"
    assert await second == "b"
    assert queue.qsize() == 1
    assert queue.get_nowait() == "c"
    assert queue.empty()
    assert queue.waiting_getters() == 0


async def test_a_woken_getter_that_is_cancelled_passes_the_item_on() -> None:
    queue = LeanQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("only")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    assert await second == "only"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert queue.empty()
    assert queue.waiting_getters() == 0


async def test_a_cancelled_waiting_getter_leaves_nothing_behind() -> None:
    queue = LeanQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert queue.waiting_getters() == 0
    queue.put_nowait(1)
    assert await queue.get() == 1


async def test_join_waits_until_every_item_taken_is_done() -> None:
    queue = LeanQueue()
    await queue.join()  # nothing unfinished: at once
    queue.put_nowait(1)
    queue.put_nowait(2)
    joined = asyncio.ensure_future(queue.join())
    queue.get_nowait()
    queue.task_done()
    await asyncio.sleep(0)
    assert not joined.done()
    queue.get_nowait()
    queue.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(ValueError, match="too many times"):
        queue.task_done()
    with pytest.raises(ValueError, match="unbounded"):
        LeanQueue(5)


async def test_a_consumer_is_told_of_every_put() -> None:
    queue = LeanQueue()
    told: list[int] = []
    queue.consumer = lambda: told.append(queue.qsize())
    queue.put_nowait("a")
    await queue.put("b")
    assert told == [1, 2]
    assert [queue.get_nowait(), queue.get_nowait()] == ["a", "b"]


async def test_the_event_wakes_every_waiter_and_can_be_cleared() -> None:
    event = LeanEvent()
    assert not event.is_set()
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(3)]
    cancelled = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    event.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    event.clear()
    assert not event.is_set()
    assert await asyncio.wait_for(asyncio.gather(event.wait(), _set_soon(event)), 1) == [True, None]
    assert await LeanEvent(True).wait()


async def _set_soon(event: LeanEvent) -> None:
    await asyncio.sleep(0.01)
    event.set()


# -- Engine.IO over the lean transport, with real clients ---------------------------------------


async def until_closed(ws: Any) -> list[Any]:
    """What the server sends on `ws` until it closes it (each message within 5 s, or TimeoutError)."""
    frames = []
    try:
        while True:
            frames.append(await asyncio.wait_for(ws.recv(), 5))
    except websockets.ConnectionClosed:
        return frames


async def test_the_server_is_served_by_the_lean_websocket_protocol_without_the_handshake() -> None:
    async with server() as (sio, url):
        client = Recorder(url)
        sid = await client.connect("user-1")
        sock = sio.eio.sockets[sio.manager.eio_sid_from_sid(sid, "/")]
        proto = sio.environ[sock.sid]["asgi.send"].__self__
        assert isinstance(proto, LeanWebSocketProtocol)
        assert proto.request is None
        assert proto.response is None
        assert sio.environ[sock.sid]["HTTP_UPGRADE"].lower() == "websocket"  # the app still has them
        await sio.emit("n", 1, to="user-1")
        await eventually(lambda: client.events == [("n", 1)])
        await client.sio.disconnect()


async def test_pings_keep_answering_clients_connected_and_each_ping_is_on_time() -> None:
    async with server() as (sio, url):
        sio.eio.ping_interval, sio.eio.ping_timeout = 0.2, 0.5
        client = Recorder(url)
        sid = await client.connect("user-1")
        sock = sio.eio.sockets[sio.manager.eio_sid_from_sid(sid, "/")]
        pings: list[float] = []  # when each pong came back (the next ping is scheduled then)
        answered = sock.schedule_ping

        def noting() -> None:
            pings.append(time.monotonic())
            answered()

        sock.schedule_ping = noting
        await asyncio.sleep(1.5)  # over two ping interval + timeout
        assert client.sio.connected
        assert not sock.closed
        assert len(pings) >= 4, pings
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert all(0.15 < gap < 0.6 for gap in gaps), gaps
        await client.sio.disconnect()


async def test_a_client_that_stops_answering_pings_is_closed_and_its_websocket_too() -> None:
    async with server() as (sio, url):
        sio.eio.ping_interval, sio.eio.ping_timeout = 0.2, 0.3
        gone: list[str] = []
        sio.on("disconnect", lambda sid, reason: gone.append(reason))
        ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket&room=user-1"
        async with websockets.connect(ws_url) as ws:  # answers the WebSocket's pings, not Engine.IO's
            assert (await ws.recv()).startswith("0{")
            await ws.send("40")
            assert (await ws.recv()).startswith("40")
            started = time.monotonic()
            received = await until_closed(ws)
            closed_after = time.monotonic() - started
        assert received[0] == "2"  # pinged, never answered
        assert closed_after < 0.2 + 0.3 + 1.5, closed_after  # the ping check runs every ping timeout
        assert gone == [sio.reason.PING_TIMEOUT]
        await eventually(lambda: not sio.eio.sockets)


async def polling_client(url: str, transports: list[str]) -> tuple[socketio.AsyncClient, list[Any]]:
    """A client that starts on long-polling in room user-1, and the `n` events it gets."""
    client = socketio.AsyncClient(reconnection=False)
    got: list[Any] = []
    client.on("n", got.append)
    await client.connect(f"{url}?room=user-1", transports=transports, wait_timeout=5)
    return client, got


async def test_polling_clients_upgrade_to_the_websocket_and_keep_their_messages() -> None:
    async with server() as (sio, url):
        client, got = await polling_client(url, ["polling", "websocket"])
        await eventually(lambda: client.transport() == "websocket")
        for n in range(5):
            await sio.emit("n", n, to="user-1")
        await eventually(lambda: got == [0, 1, 2, 3, 4])
        sock = next(iter(sio.eio.sockets.values()))
        assert sock.upgraded
        assert not sock.upgrading
        await client.disconnect()
        await eventually(lambda: not sio.eio.sockets)


async def test_a_failed_upgrade_leaves_the_client_on_polling() -> None:
    async with server() as (sio, url):
        client, got = await polling_client(url, ["polling"])
        sid = client.get_sid()
        eio_sid = client.eio.sid
        ws_url = url.replace("http", "ws") + f"/socket.io/?EIO=4&transport=websocket&sid={eio_sid}"
        async with websockets.connect(ws_url) as ws:
            await ws.send("4garbage")  # not the probe
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        sock = sio.eio.sockets[eio_sid]
        assert not sock.upgraded
        assert not sock.upgrading
        await sio.emit("n", "still here", to=sid)
        await eventually(lambda: got == ["still here"])
        await sio.eio.disconnect(eio_sid)  # ends the pending poll (the client's own disconnect waits for it)
        await eventually(lambda: not client.connected)


async def test_the_server_closing_a_socket_closes_its_websocket() -> None:
    async with server() as (sio, url):
        ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket&room=user-1"
        async with websockets.connect(ws_url) as ws:
            await ws.recv()
            await ws.send("40")
            sid = json.loads((await ws.recv())[2:])["sid"]
            await sio.eio.disconnect(sio.manager.eio_sid_from_sid(sid, "/"))
            frames = await until_closed(ws)
        assert frames == ["1"]  # Engine.IO's close packet, then the WebSocket's close
        await eventually(lambda: not sio.eio.sockets)


async def test_bad_packets_are_ignored_and_an_oversized_one_ends_only_that_connection() -> None:
    async with server() as (sio, url):
        sio.eio.max_http_buffer_size = 1000
        ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket&room=user-1"
        async with websockets.connect(ws_url) as ws, websockets.connect(ws_url) as other:
            for peer in (ws, other):
                await peer.recv()
                await peer.send("40")
                await peer.recv()
            await ws.send("9nonsense")  # an unknown Engine.IO packet: ignored
            await ws.send("3")  # an unasked pong: harmless
            await sio.emit("n", 1)
            assert json.loads((await asyncio.wait_for(ws.recv(), 5))[2:]) == ["n", 1]
            await ws.send("4" + "x" * 2000)
            assert await until_closed(ws) == []
            await sio.emit("n", 2)
            assert json.loads((await asyncio.wait_for(other.recv(), 5))[2:]) == ["n", 1]
            assert json.loads((await asyncio.wait_for(other.recv(), 5))[2:]) == ["n", 2]
        await eventually(lambda: not sio.eio.sockets)


async def test_a_websocket_keeps_only_the_headers_that_are_read() -> None:
    async with server() as (sio, url):
        ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket&room=user-1"
        headers = {"Cookie": "session=" + "c" * 4000, "Authorization": "Bearer t0ken", "Origin": url}
        async with websockets.connect(
            ws_url, additional_headers=headers, user_agent_header="Browser/1.0"
        ) as ws:
            await ws.recv()
            await ws.send("40")
            await ws.recv()
            environ = next(iter(sio.environ.values()))
            assert environ["HTTP_AUTHORIZATION"] == "Bearer t0ken"  # what the sidecar reads
            assert environ["HTTP_ORIGIN"] == url  # what Engine.IO checks (CORS)
            assert environ["HTTP_UPGRADE"].lower() == "websocket"
            assert "HTTP_COOKIE" not in environ
            assert "HTTP_USER_AGENT" not in environ
            assert "room=user-1" in environ["QUERY_STRING"]
            assert environ["REQUEST_METHOD"] == "GET"
            assert "SERVER_SOFTWARE" not in environ  # WSGI constants nobody reads
            names = {name for name, _ in environ["asgi.scope"]["headers"]}
            assert names == {b"authorization", b"connection", b"host", b"origin", b"upgrade"}
            await sio.emit("n", 1, to="user-1")
            assert json.loads((await asyncio.wait_for(ws.recv(), 5))[2:]) == ["n", 1]


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        (b"EIO=4&transport=websocket&userId=5", [(b"host", b"sidecar:3000"), (b"upgrade", b"websocket")]),
        (  # repeated headers joined, a forwarded scheme, a header that is not UTF-8, a length
            b"EIO=4&transport=websocket",
            [
                (b"x-forwarded-for", b"10.0.0.1"),
                (b"x-forwarded-for", b"10.0.0.2"),
                (b"x-forwarded-proto", b"https"),
                (b"authorization", b"Bearer \xff"),
                (b"content-length", b"0"),
            ],
        ),
        (b"room=\xff", []),  # a query that is not UTF-8
    ],
)
async def test_a_websocket_environ_holds_what_engineio_translates_it_to(
    query: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    def scope() -> dict[str, Any]:
        return {"type": "websocket", "path": "/socket.io/", "query_string": query, "headers": list(headers)}

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:  # pragma: no cover - never called
        raise AssertionError(message)

    theirs = await asgi_driver.translate_request(scope(), receive, send)
    ours = await _websocket_environ(scope(), receive, send)
    kept = {key for key in theirs if key in _ENVIRON or key.startswith("HTTP_")}
    assert set(ours) == kept | {"wsgi.input"}
    assert {key: ours[key] for key in kept if not key.startswith("asgi.")} == {
        key: theirs[key] for key in kept if not key.startswith("asgi.")
    }
    assert await ours["wsgi.input"].read() is None  # no body, and no class made for it


async def test_a_websocket_handshake_leaves_no_cycle_of_its_http_request_to_the_collector() -> None:
    """uvicorn's HTTP protocol object of an upgraded connection, and Engine.IO's class per request,
    were reference cycles: each handshake gave the garbage collector a few dozen objects."""
    async with server() as (sio, url):
        gc.collect()
        gc.disable()
        try:
            clients = [Recorder(url) for _ in range(10)]
            for n, client in enumerate(clients):
                await client.connect(f"user-{n}")
            await eventually(lambda: len(sio.eio.sockets) == 10)
            for client in clients:
                await client.sio.disconnect()
            await eventually(lambda: not sio.eio.sockets)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            left = {type(obj).__qualname__ for obj in gc.garbage}
            assert not left & {"HttpToolsProtocol", "LeanHttpToolsProtocol", "HttpRequestParser"}
            classes = [obj.__name__ for obj in gc.garbage if isinstance(obj, type)]
            assert "AwaitablePayload" not in classes  # Engine.IO's, one per request it translates
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()


async def test_a_connection_holds_a_writer_task_only_while_it_has_something_to_send() -> None:
    async with server() as (sio, url):
        client = Recorder(url)
        sid = await client.connect("user-1")
        sock = sio.eio.sockets[sio.manager.eio_sid_from_sid(sid, "/")]
        await eventually(lambda: writer_idle(sock))
        idle_tasks = len(asyncio.all_tasks())
        for n in range(20):  # queued (not the direct write of a fan-out): a writer task sends them
            await sock.send(eio_packet.Packet(eio_packet.MESSAGE, f'2["n",{n}]'))
        assert not writer_idle(sock)
        assert len(asyncio.all_tasks()) == idle_tasks + 1
        await eventually(lambda: len(client.events) == 20)
        assert client.events == [("n", n) for n in range(20)]
        await eventually(lambda: writer_idle(sock))  # and it is gone again
        assert len(asyncio.all_tasks()) == idle_tasks
        await client.sio.disconnect()


async def test_idle_connections_hold_no_task_and_take_every_message_in_order() -> None:
    async with server() as (sio, url):
        got: list[int] = []

        async def note(sid: str, n: int) -> int:
            got.append(n)
            return n * 2

        sio.on("n", note)
        clients = [Recorder(url) for _ in range(10)]
        sids = [await client.connect(f"user-{i}") for i, client in enumerate(clients)]
        socks = [sio.eio.sockets[sio.manager.eio_sid_from_sid(sid, "/")] for sid in sids]
        await eventually(lambda: all(writer_idle(sock) for sock in socks))
        assert all(detached(sock) for sock in socks)  # served on without their ASGI calls
        assert connection_tasks() == []  # no ASGI call, reader, writer or ping task per connection

        # many messages in a row from one client: none stalls (reading goes on) and none is lost
        transport = sio.environ[socks[0].sid]["asgi.send"].__self__.transport
        pauses: list[bool] = []
        pause = transport.pause_reading
        transport.pause_reading = lambda: (pauses.append(True), pause())
        answers = await asyncio.gather(*(clients[0].sio.call("n", n, timeout=5) for n in range(50)))
        assert answers == [n * 2 for n in range(50)]
        assert sorted(got) == list(range(50))
        assert pauses == []  # each message taken as it came: no epoll call to stop reading, none to go on
        del transport.pause_reading
        await sio.emit("all", 1)
        await eventually(lambda: all(("all", 1) in client.events for client in clients))
        for client in clients:
            await client.sio.disconnect()
        await eventually(lambda: not sio.eio.sockets)
        await eventually(lambda: connection_tasks() == [])


def connection_tasks() -> list[str]:
    """The server's tasks that serve one connection (the clients' own tasks are left out)."""
    per_connection = {
        "WebSocketsSansIOProtocol.run_asgi",
        "_write",
        "_websocket_handler",
        "AsyncSocket._send_ping",
    }
    names = [getattr(task.get_coro(), "__qualname__", "") for task in asyncio.all_tasks()]
    return [name for name in names if name in per_connection]


async def test_a_client_close_packet_ends_the_socket_and_its_websocket() -> None:
    async with server() as (sio, url):
        gone: list[str] = []
        sio.on("disconnect", lambda sid, reason: gone.append(reason))
        ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket&room=user-1"
        async with websockets.connect(ws_url) as ws:
            await ws.recv()
            await ws.send("40")
            await ws.recv()
            await ws.send("1")  # Engine.IO's close, from the client
            assert await until_closed(ws) == []
        assert gone == [sio.reason.CLIENT_DISCONNECT]
        await eventually(lambda: not sio.eio.sockets)
