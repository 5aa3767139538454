"""What the demo page's server asks Strapi, over REST: who is signed in, the users, an inbox, a send.

The API token stays here, on the server side; the browser only ever holds its user's JWT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["DemoStrapi", "Outgoing", "StrapiUnavailable"]

NOTIFICATIONS = "/api/notifications"
READS = "/api/read-notifications"
INBOX_SIZE = 25
TIMEOUT = 15.0

Params = list[tuple[str, str | int]]


class StrapiUnavailable(Exception):
    """Strapi did not answer, or answered with an error the page cannot act on."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A notification to publish: to these users, or to every user (the sidecar completes those)."""

    message: str
    url: str | None
    date: str
    user_ids: tuple[int, ...] = ()
    all_users: bool = False


class DemoStrapi:
    """A small synchronous Strapi client; safe to share between the page server's threads."""

    def __init__(self, base_url: str, api_token: str, *, transport: httpx.BaseTransport | None = None):
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_token}"},
            timeout=TIMEOUT,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def me(self, jwt: str) -> dict[str, Any] | None:
        """The user a JWT belongs to, as `GET /api/users/me` says, or None if Strapi refuses it."""
        # The request's Authorization replaces the client's (the API token) for this call only.
        response = self._send(self._http, "GET", "/api/users/me", headers={"Authorization": f"Bearer {jwt}"})
        if response.status_code in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
            return None
        user = _json(response)
        return user if isinstance(user, dict) and isinstance(user.get("id"), int) else None

    def users(self) -> list[dict[str, Any]]:
        """Every user, `{id, username}`, by id (demo-sized: `/api/users` has no pagination)."""
        params: Params = [("fields[0]", "id"), ("fields[1]", "username"), ("sort", "id:asc")]
        found = _json(self._send(self._http, "GET", "/api/users", params=params))
        return [{"id": user["id"], "username": user["username"]} for user in found]

    def inbox(self, user_id: int) -> list[dict[str, Any]]:
        """The latest published notifications addressed to a user, newest first, each with `read`."""
        params: Params = [
            ("filters[$or][0][allUsers][$eq]", "true"),
            ("filters[$or][1][notification_users][id][$eq]", user_id),
            ("sort[0]", "createdAt:desc"),
            ("pagination[pageSize]", INBOX_SIZE),
        ]
        notifications = _json(self._send(self._http, "GET", NOTIFICATIONS, params=params))["data"]
        read = self._read_by(user_id, [str(item["documentId"]) for item in notifications])
        return [_inbox_item(item, item["documentId"] in read) for item in notifications]

    def _read_by(self, user_id: int, document_ids: list[str]) -> set[str]:
        if not document_ids:
            return set()
        params: Params = [
            ("filters[users_permissions_users][id][$eq]", user_id),
            ("populate[notification][fields][0]", "documentId"),
            ("pagination[pageSize]", 100),
        ]
        params += [(f"filters[notification][documentId][$in][{i}]", d) for i, d in enumerate(document_ids)]
        receipts = _json(self._send(self._http, "GET", READS, params=params))["data"]
        return {str(r["notification"]["documentId"]) for r in receipts if r.get("notification")}

    def publish(self, outgoing: Outgoing) -> dict[str, Any]:
        """Create and publish the notification; the sidecar hears of it by webhook and emits it."""
        data = {
            "message": outgoing.message,
            "url": outgoing.url,
            "date": outgoing.date,
            "allUsers": outgoing.all_users,
            "notification_users": list(outgoing.user_ids),
        }
        created = _json(self._send(self._http, "POST", NOTIFICATIONS, json={"data": data}))["data"]
        return {"id": created["id"], "documentId": created["documentId"]}

    @staticmethod
    def _send(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise StrapiUnavailable(f"Strapi did not answer {method} {path}: {exc}") from exc


def _json(response: httpx.Response) -> Any:
    if response.is_error:
        raise StrapiUnavailable(f"Strapi answered {response.status_code}: {response.text[:300]}")
    return response.json()


def _inbox_item(notification: dict[str, Any], read: bool) -> dict[str, Any]:
    """A notification as the page renders it: the `notificacion` payload's names, plus `read`."""
    return {
        "mensaje": notification.get("message"),
        "id": notification.get("id"),
        "url": notification.get("url") or None,
        "title": notification.get("date") or None,
        "documentId": notification.get("documentId"),
        "read": read,
    }
