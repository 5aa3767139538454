"""The Socket.IO edge: handshake authentication, one room per user, `notification:read`, emits.

The wire contract is the seed's (event names and room prefix come from settings):
- a socket authenticates with `auth: {token}` (or `Authorization: Bearer`), and joins `user-<id>`;
- `notification:read` `{notificationId}` records a read; with an ack the client learns the result;
- the server emits `notificacion` to user rooms.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

import socketio

from adapter.auth import Authenticator
from adapter.errors import AuthError, ReadError
from adapter.receipts import ReadReceipts, parse_notification_ref
from adapter.settings import Settings

__all__ = ["SocketGateway", "create_socket_server"]

logger = logging.getLogger(__name__)


def create_socket_server(settings: Settings) -> socketio.AsyncServer:
    origins: str | list[str] = "*" if "*" in settings.cors_origins else list(settings.cors_origins)
    return socketio.AsyncServer(
        async_mode="asgi",
        cors_allowed_origins=origins,
        logger=False,
        engineio_logger=False,
    )


class SocketGateway:
    """Registers the handlers on the server and emits to user rooms."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        settings: Settings,
        authenticator: Authenticator,
        receipts: ReadReceipts,
    ):
        self._sio = sio
        self._settings = settings
        self._authenticator = authenticator
        self._receipts = receipts
        sio.on("connect", self.on_connect)
        sio.on(settings.event_read, self.on_read)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: object = None) -> None:
        token = _token_from(auth, environ)
        claimed = _query_value(environ, "userId")
        try:
            identity = await self._authenticator.authenticate(token, claimed)
        except AuthError as exc:
            logger.info("refused socket from %s: %s", _peer(environ), exc.code)
            raise socketio.exceptions.ConnectionRefusedError(exc.message, {"code": exc.code}) from exc
        await self._sio.save_session(sid, {"user_id": identity.user_id})
        await self._sio.enter_room(sid, self._settings.room_for(identity.user_id))
        logger.debug("socket %s joined as user %s", sid, identity.user_id)

    async def on_read(self, sid: str, data: object = None) -> dict[str, Any]:
        """`notification:read`; the return value is the acknowledgement, when one was asked for."""
        user_id = await self._user_of(sid)
        try:
            ref = parse_notification_ref(data)
            result = await self._receipts.mark_read(user_id, ref)
        except ReadError as exc:
            return {"ok": False, "error": {"code": exc.code, "message": exc.message}}
        except Exception:
            logger.exception("unexpected failure marking a notification read for user %s", user_id)
            return {"ok": False, "error": {"code": "internal_error", "message": "internal error"}}
        return result.ack()

    async def notify(self, user_ids: Iterable[int], payload: dict[str, Any]) -> int:
        """Emit the notification event to each user's room, in one call. Returns the room count."""
        rooms = [self._settings.room_for(user_id) for user_id in sorted(user_ids)]
        if rooms:
            await self._sio.emit(self._settings.event_notification, payload, to=rooms)
        return len(rooms)

    async def close_all(self) -> int:
        """Close every client's transport (clients see a transport close and reconnect)."""
        sockets = list(self._sio.eio.sockets.values())
        for sock in sockets:
            # wait=False: a long-polling client may never come back to collect the close packet
            await sock.close(wait=False, reason=self._sio.eio.reason.SERVER_DISCONNECT)
        return len(sockets)

    async def _user_of(self, sid: str) -> int:
        session = await self._sio.get_session(sid)
        return int(session["user_id"])


def _token_from(auth: object, environ: dict[str, Any]) -> str | None:
    if isinstance(auth, dict):
        token = auth.get("token")
        if isinstance(token, str) and token:
            return token
    header = environ.get("HTTP_AUTHORIZATION", "")
    if isinstance(header, str) and header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def _query_value(environ: dict[str, Any], name: str) -> str | None:
    values = parse_qs(str(environ.get("QUERY_STRING", ""))).get(name)
    return values[0] if values else None


def _peer(environ: dict[str, Any]) -> str:
    client = (environ.get("asgi.scope") or {}).get("client")
    return str(client[0]) if client else "unknown"
