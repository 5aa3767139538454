"""`POST /webhooks/strapi`: authenticate, validate, hand off, answer at once.

Strapi signs nothing: the shared secret in `Authorization: Bearer <WEBHOOK_SECRET>` is the only
proof a delivery is Strapi's, compared in constant time. Answers:
401 wrong or missing secret, 413 body too large, 400 malformed (not JSON, wrong shape), 202 accepted.
"""

from __future__ import annotations

import hmac
import logging

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from adapter.collector import collector
from adapter.metrics import Metrics
from adapter.settings import Settings
from webhooks.decode import decode_webhook
from webhooks.dispatch import WebhookDispatcher
from webhooks.models import WebhookPayload

__all__ = ["WebhookReceiver"]

logger = logging.getLogger(__name__)


class WebhookReceiver:
    """The Starlette endpoint for Strapi's webhooks."""

    def __init__(self, settings: Settings, dispatcher: WebhookDispatcher, metrics: Metrics | None = None):
        self._metrics = metrics if metrics is not None else Metrics()
        self._expected = f"Bearer {settings.webhook_secret.get_secret_value()}".encode()
        self._max_body = settings.webhook_max_body_bytes
        self._checked_uids = {settings.notification_uid, settings.user_uid, settings.read_uid}
        # Relation lists of which only the ids are read: decoded as ids (webhooks/decode.py).
        self._id_lists = frozenset({settings.audience_field, settings.read_users_field})
        self._dispatcher = dispatcher

    async def handle(self, request: Request) -> JSONResponse:
        response, outcome = await self._handle(request)
        self._metrics.webhooks.labels(outcome).inc()
        return response

    async def _handle(self, request: Request) -> tuple[JSONResponse, str]:
        if not self._authorized(request):
            logger.warning("refused a webhook without the right secret from %s", _peer(request))
            return _error(401, "unauthorized", "missing or wrong webhook secret"), "unauthorized"
        body = await _read_limited(request, self._max_body)
        if body is None:
            return _error(413, "too_large", f"body over {self._max_body} bytes"), "too_large"
        # No collection from the parse to the hand-over: a publication's body, a dictionary per
        # user, is what tips the collector into a pause (see adapter/collector.py); the
        # dispatcher holds it on until the notification is delivered.
        with collector.holding():
            payload, problem = _parse(body, self._id_lists)
            if payload is None:
                logger.warning("refused a malformed webhook: %s", problem)
                return _error(400, "invalid_payload", problem), "invalid_payload"
            if payload.uid in self._checked_uids and payload.entry is not None:
                try:
                    payload.entry_ref()
                except ValidationError as exc:
                    return _error(400, "invalid_payload", _describe(exc)), "invalid_payload"
            outcome = self._dispatcher.dispatch(payload)
        return JSONResponse({"accepted": True, "outcome": outcome}, status_code=202), outcome

    def _authorized(self, request: Request) -> bool:
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, self._expected)


async def _read_limited(request: Request, limit: int) -> bytearray | None:
    declared = request.headers.get("content-length", "")
    if declared.isdecimal() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            return None
    return body  # decoded as it is: no copy of a publication's megabytes


def _parse(body: bytes | bytearray, id_lists: frozenset[str]) -> tuple[WebhookPayload | None, str]:
    try:
        raw = decode_webhook(body, id_lists)
    except (ValueError, RecursionError):  # not UTF-8 or JSON, an int over 4300 digits, too deep
        return None, "body is not JSON"
    if not isinstance(raw, dict):
        return None, "body is not a JSON object"
    try:
        return WebhookPayload.model_validate(raw), ""
    except ValidationError as exc:
        return None, _describe(exc)


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}" for item in error.errors()
    )


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _peer(request: Request) -> str:
    return request.client.host if request.client else "unknown"
