"""Deliveries written straight to idle WebSockets (adapter/fanout.py `_idle_websocket`): used with
the pinned uvicorn/engineio/websockets, and never at the cost of order, flow control or a message."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import socketio
import websockets
from engineio import packet as eio_packet

from adapter.fanout import _idle_websocket
from tests.serving import eventually
from tests.unit.test_fanout import QUIET, Recorder, connected, disconnect, server


def sockets_of(sio: socketio.AsyncServer, clients: list[tuple[Recorder, str]]) -> list[Any]:
    return [sio.eio.sockets[sio.manager.eio_sid_from_sid(sid, "/")] for _, sid in clients]


async def all_idle(sio: socketio.AsyncServer, clients: list[tuple[Recorder, str]]) -> None:
    await eventually(lambda: all(_idle_websocket(sock) is not None for sock in sockets_of(sio, clients)))


async def test_deliveries_to_idle_websockets_are_written_directly_with_the_pinned_versions() -> None:
    async with server() as (sio, url):
        clients = await connected(url, ["user-1", "user-2", "user-2"])
        await all_idle(sio, clients)
        await sio.emit("notificacion", {"n": 1}, to=["user-1", "user-2"])
        await all_idle(sio, clients)  # nothing was queued: no writer has anything to do
        await sio.emit("notificacion", {"n": 2}, to=["user-1", "user-2"])
        await eventually(lambda: all(len(c.events) == 2 for c, _ in clients))
        assert sio.manager.direct_writes == 6  # if this fails, the fast path silently stopped
        for client, _ in clients:
            assert client.events == [("notificacion", {"n": 1}), ("notificacion", {"n": 2})]
        await disconnect(clients)


async def test_order_is_kept_when_the_writer_holds_packets() -> None:
    async with server() as (sio, url):
        clients = await connected(url, ["user-1"])
        client = clients[0][0]
        sock = sockets_of(sio, clients)[0]
        await all_idle(sio, clients)
        await sio.emit("n", 1, to="user-1")  # direct
        assert sio.manager.direct_writes == 1
        await sock.send(eio_packet.Packet(eio_packet.MESSAGE, '2["n",2]'))  # queued: the writer is woken
        await sio.emit("n", 3, to="user-1")  # before the writer ran: must not overtake packet 2
        assert sio.manager.direct_writes == 1
        await sio.emit("n", b"\x04", to="user-1")  # binary: the stock path
        for n in range(5, 40):
            await sio.emit("n", n, to="user-1")
        await eventually(lambda: len(client.events) == 39)
        await asyncio.sleep(QUIET)
        expected = [("n", n) for n in range(1, 40)]
        expected[3] = ("n", b"\x04")
        assert client.events == expected
        await disconnect(clients)


async def test_polling_and_upgraded_clients_get_everything_once() -> None:
    async with server() as (sio, url):
        sio.eio.ping_interval = sio.eio.ping_timeout = 1  # so that no one waits out a long poll
        polling = Recorder(url)
        await polling.sio.connect(f"{url}?room=user-1", transports=["polling"], wait_timeout=5)
        upgraded = Recorder(url)
        await upgraded.sio.connect(f"{url}?room=user-1", wait_timeout=5)  # polling, then WebSocket
        await eventually(lambda: upgraded.sio.transport() == "websocket")
        for n in range(5):
            await sio.emit("n", n, to="user-1")
        expected = [("n", n) for n in range(5)]
        await eventually(lambda: polling.events == expected and upgraded.events == expected)
        await asyncio.sleep(QUIET)
        assert polling.events == expected
        assert upgraded.events == expected
        sock = sio.eio.sockets[sio.manager.eio_sid_from_sid(polling.sio.get_sid("/"), "/")]
        assert _idle_websocket(sock) is None  # a polling socket is never written to directly
        sock = sio.eio.sockets[sio.manager.eio_sid_from_sid(upgraded.sio.get_sid("/"), "/")]
        await eventually(lambda: _idle_websocket(sock) is not None)  # once upgraded, it can be
        await polling.sio.disconnect()
        await upgraded.sio.disconnect()


async def test_closing_sockets_are_left_to_the_writer_and_the_others_still_get_it() -> None:
    async with server() as (sio, url):
        clients = await connected(url, ["user-1", "user-1", "user-1"])
        await all_idle(sio, clients)
        closing, closed_by_client, _ = sockets_of(sio, clients)
        closing.closing = True  # as during `close()`, before its CLOSE packet
        await clients[1][0].sio.disconnect()  # the client went away
        await eventually(lambda: _idle_websocket(closed_by_client) is None)
        assert _idle_websocket(closing) is None
        before = sio.manager.direct_writes
        await sio.emit("n", 1, to="user-1")
        assert sio.manager.direct_writes == before + 1  # only the open one
        await eventually(lambda: clients[2][0].events == [("n", 1)])
        closing.closing = False
        await disconnect([clients[0], clients[2]])


async def test_a_slow_client_is_not_written_past_the_high_water_mark_and_loses_nothing() -> None:
    pad = "x" * 100_000
    async with server() as (sio, url):
        fast = await connected(url, ["everyone"])
        ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket&room=everyone"
        async with websockets.connect(ws_url, max_queue=1, max_size=None) as slow:
            assert str(await slow.recv()).startswith("0{")
            await slow.send("40")
            assert str(await slow.recv()).startswith("40")
            fast_sock = sockets_of(sio, fast)[0]
            slow_sock = next(sock for sock in sio.eio.sockets.values() if sock is not fast_sock)
            await all_idle(sio, fast)
            await eventually(lambda: _idle_websocket(slow_sock) is not None)
            proto = slow_sock._fanout_direct_protocol
            sent = 0
            while proto.writable.is_set() and sent < 600:  # the slow client reads nothing now
                await sio.emit("big", {"n": sent, "pad": pad}, to="everyone")
                sent += 1
                await asyncio.sleep(0)
            assert not proto.writable.is_set(), "the slow client's buffer never filled"
            assert _idle_websocket(slow_sock) is None  # paused: the writer path, as uvicorn would
            for _ in range(20):  # more while it is paused: queued for it, written directly to the other
                await sio.emit("big", {"n": sent, "pad": pad}, to="everyone")
                sent += 1
            assert slow_sock.queue.qsize() > 0
            received = []
            while len(received) < sent:
                message = str(await asyncio.wait_for(slow.recv(), 10))
                if message.startswith("42"):
                    received.append(json.loads(message[2:])[1]["n"])
            assert received == list(range(sent))  # all of them, in order
        await eventually(lambda: len(fast[0][0].events) == sent, within=10)
        assert [data["n"] for _, data in fast[0][0].events] == list(range(sent))
        await disconnect(fast)
