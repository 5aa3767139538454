"""The ASGI application: Socket.IO, the webhook endpoint and health, on one port.

`create_app(settings)` wires every part once; the lifespan owns what lives as long as the app
(the Strapi HTTP client, the background webhook work).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import engineio
import httpx
import socketio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.auth import Authenticator, UserDirectory, short_secret_warning
from adapter.health import Readiness
from adapter.inbox import Inbox
from adapter.metrics import CONTENT_TYPE_LATEST, Metrics
from adapter.notifications import KnownIds
from adapter.receipts import ReadReceipts
from adapter.scaleout import build_cluster
from adapter.settings import Settings
from adapter.sockets import SocketGateway, create_socket_server
from adapter.strapi import StrapiClient, build_http_client
from webhooks.dispatch import WebhookDispatcher
from webhooks.lifecycle import NotificationLifecycle
from webhooks.receiver import WebhookReceiver
from webhooks.reconciler import Reconciler

__all__ = ["Sidecar", "build_sidecar", "create_app"]

logger = logging.getLogger(__name__)

SHUTDOWN_DRAIN_SECONDS = 8.0


@dataclass(frozen=True, slots=True)
class Sidecar:
    """Every long-lived part, wired together. `asgi` is what a server runs."""

    settings: Settings
    http: httpx.AsyncClient
    strapi: StrapiClient
    sio: socketio.AsyncServer
    gateway: SocketGateway
    dispatcher: WebhookDispatcher
    metrics: Metrics
    asgi: engineio.ASGIApp

    async def close_connections(self) -> None:
        """Before the server stops: close client transports so clients reconnect elsewhere."""
        closed = await self.gateway.close_all()
        if closed:
            logger.info("closed %d client connections", closed)


def build_sidecar(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> Sidecar:
    """Wire the sidecar. `transport` replaces the HTTP transport to Strapi (tests)."""
    http = build_http_client(
        settings.strapi_url,
        settings.strapi_api_token.get_secret_value(),
        settings.strapi_timeout,
        transport=transport,
    )
    metrics = Metrics()
    cluster = build_cluster(settings, metrics)  # one process, or several over Redis
    strapi = StrapiClient(http, metrics.observe_strapi)
    known_ids = KnownIds(settings.emitted_ledger_size)
    users = UserDirectory(strapi, settings.user_cache_ttl)
    authenticator = Authenticator(settings.strapi_jwt_secret.get_secret_value(), users)
    receipts = ReadReceipts(strapi, settings, known_ids, lock=cluster.read_locks)
    inbox = Inbox(strapi, settings, known_ids)
    sio = create_socket_server(settings, client_manager=cluster.manager)
    gateway = SocketGateway(sio, settings, authenticator, receipts, inbox, metrics)
    metrics.count_direct_writes(lambda: int(getattr(sio.manager, "direct_writes", 0)))
    if cluster.manager is not None:
        cluster.manager.on_remote_emit = gateway.emitted_elsewhere
    lifecycle = NotificationLifecycle(
        strapi,
        settings,
        gateway,
        known_ids,
        receipts.readers,
        told=cluster.told,
        seen=cluster.seen,
        announced=cluster.announced,
    )
    dispatcher = WebhookDispatcher(
        settings, lifecycle, users, on_change=receipts.invalidate, locks=cluster.work_locks
    )
    reconciler = Reconciler(strapi, settings, lifecycle, dispatcher)

    async def metrics_endpoint(_: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with http, cluster:
            logger.info("sidecar ready; Strapi at %s", settings.strapi_url)
            if warning := short_secret_warning(settings.strapi_jwt_secret.get_secret_value()):
                logger.warning(warning)
            reconciling = asyncio.create_task(reconciler.run(), name="reconciler")
            try:
                yield
            finally:
                reconciling.cancel()
                await asyncio.gather(reconciling, return_exceptions=True)
                await receipts.drain(SHUTDOWN_DRAIN_SECONDS)
                await dispatcher.drain(SHUTDOWN_DRAIN_SECONDS)
                await sio.shutdown()
        logger.info("sidecar stopped")

    routes = [
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", Readiness(strapi, cluster).endpoint, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/webhooks/strapi", WebhookReceiver(settings, dispatcher, metrics).handle, methods=["POST"]),
    ]
    web = Starlette(routes=routes, lifespan=lifespan)
    # Engine.IO's app straight onto Engine.IO (socketio.ASGIApp goes through `sio.handle_request`,
    # which only passes the call on, and keeps its frame for as long as each connection lives).
    asgi = engineio.ASGIApp(sio.eio, other_asgi_app=web, engineio_path="socket.io")
    return Sidecar(settings, http, strapi, sio, gateway, dispatcher, metrics, asgi)


def create_app(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> engineio.ASGIApp:
    """The ASGI app for `settings`."""
    return build_sidecar(settings, transport=transport).asgi


async def _healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})
