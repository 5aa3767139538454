"""A bare webhook receiver, in the server's place: when Strapi's own deliveries arrive, with no
server work and no clients behind them.

A service that learns of a publication from Strapi's webhooks cannot tell anyone before Strapi
sends the `entry.publish`, so what this measures is the floor of "last client / Strapi answer" for
any such service, in the same run as the servers' own figures. It reads HTTP/1.1 requests with a
`Content-Length` or chunked body on a kept-alive connection (what Strapi's `fetch` sends), notes
when each body is complete, answers 202 (401 without the webhook secret), and only then parses
the body: the event, the entry's `documentId` and Strapi's own stamp (`createdAt`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime

from bench.procs import now_ms

__all__ = ["BareReceiver", "Delivery"]

log = logging.getLogger("bench")

HEAD_LIMIT = 64 * 1024
ACCEPTED = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"
REFUSED = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n"


@dataclass(frozen=True)
class Delivery:
    event: str
    document_id: str | None
    stamped_ms: float | None  # Strapi's `createdAt`, when it started the delivery
    received_ms: float  # when its body was complete here
    size: int


class BareReceiver:
    """`async with BareReceiver(port, secret) as receiver`: deliveries in `receiver.deliveries`."""

    def __init__(self, port: int, secret: str):
        self.port = port
        self._expected = f"Bearer {secret}".encode()
        self.deliveries: list[Delivery] = []
        self.refused = 0
        self._arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}

    async def __aenter__(self) -> BareReceiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, limit=HEAD_LIMIT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._connections):  # kept-alive connections would hold wait_closed
            writer.close()
        await asyncio.gather(*self._connections.values(), return_exceptions=True)
        await self._server.wait_closed()

    async def wait_for(self, document_id: str, event: str, within: float) -> Delivery | None:
        """The first `event` delivery of `document_id`, or None after `within` s."""

        def found() -> Delivery | None:
            return next(
                (d for d in self.deliveries if d.document_id == document_id and d.event == event), None
            )

        async with self._arrived:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait_for(lambda: found() is not None), within)
            return found()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[writer] = task
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = _headers(head)
                body = await _body(reader, headers)
                received = now_ms()
                authorized = hmac.compare_digest(headers.get("authorization", "").encode(), self._expected)
                writer.write(ACCEPTED if authorized else REFUSED)
                await writer.drain()
                if authorized:
                    await self._record(body, received)
                else:
                    self.refused += 1
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass  # the peer closed its kept-alive connection, or sent what this does not read
        finally:
            self._connections.pop(writer, None)
            writer.close()

    async def _record(self, body: bytes, received: float) -> None:
        try:
            delivery = _delivery(body, received)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("bare receiver: a delivery it could not read (%s)", exc)
            return
        async with self._arrived:
            self.deliveries.append(delivery)
            self._arrived.notify_all()


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    pairs = (line.split(":", 1) for line in lines if ":" in line)
    return {name.strip().lower(): value.strip() for name, value in pairs}


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")  # no trailers are sent: the empty line
        return b"".join(parts)
    return await reader.readexactly(int(headers.get("content-length", "0")))


def _delivery(body: bytes, received: float) -> Delivery:
    data = json.loads(body)
    entry = data.get("entry") or {}
    stamp = data.get("createdAt")
    stamped = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000 if stamp else None
    return Delivery(
        event=str(data.get("event")),
        document_id=entry.get("documentId"),
        stamped_ms=stamped,
        received_ms=received,
        size=len(body),
    )
