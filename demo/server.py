"""The demo page's own HTTP server: static files, the socket.io-client bundle, and a small API.

    GET  /                         the page (static/index.html, style.css, app.js)
    GET  /vendor/socket.io.min.js  the official socket.io-client browser bundle (demo/node_modules)
    GET  /config.json              where Strapi and the sidecar are; the demo users
    GET  /api/users                every user, for the "send to" list          (user JWT)
    GET  /api/inbox                the signed-in user's latest notifications   (user JWT)
    POST /api/notifications        publish one, through Strapi with the API token (user JWT)

The browser signs in with Strapi itself and sends its JWT here as `Authorization: Bearer`; this
server asks Strapi who that is (`/api/users/me`) and only then uses the API token for the user.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from demo.credentials import DemoUser
from demo.strapi import DemoStrapi, Outgoing, StrapiUnavailable

__all__ = ["PageServer", "PageSite"]

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
BUNDLE_DIR = PACKAGE_DIR / "node_modules" / "socket.io-client" / "dist"
MAX_BODY_BYTES = 16_384
MAX_MESSAGE_CHARS = 1_000
MAX_URL_CHARS = 500
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".map": "application/json",
    ".svg": "image/svg+xml",
}
STATIC_FILES = {
    "/": STATIC_DIR / "index.html",
    "/index.html": STATIC_DIR / "index.html",
    "/style.css": STATIC_DIR / "style.css",
    "/app.js": STATIC_DIR / "app.js",
    "/favicon.svg": STATIC_DIR / "favicon.svg",
    "/vendor/socket.io.min.js": BUNDLE_DIR / "socket.io.min.js",
    "/vendor/socket.io.min.js.map": BUNDLE_DIR / "socket.io.min.js.map",
}


class BadRequest(Exception):
    """The browser sent something the API cannot use; the message is shown to the user."""


class PageSite:
    """What the page server knows: Strapi (with the API token), the URLs the browser uses, the users."""

    def __init__(self, strapi: DemoStrapi, strapi_url: str, sidecar_url: str, users: tuple[DemoUser, ...]):
        self.strapi = strapi
        self.strapi_url = strapi_url
        self.sidecar_url = sidecar_url
        self.users = users

    def config(self) -> dict[str, Any]:
        # The demo users' passwords are no secret: the demo prints them, and the page offers them
        # as one-click sign-ins. The API token and the other secrets never leave the server.
        return {
            "strapiUrl": self.strapi_url,
            "sidecarUrl": self.sidecar_url,
            "demoUsers": [{"username": u.username, "password": u.password} for u in self.users],
        }

    def content_security_policy(self) -> str:
        sidecar = urlsplit(self.sidecar_url)
        socket_origin = f"ws://{sidecar.netloc}"
        return (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            f"connect-src 'self' {self.strapi_url} {self.sidecar_url} {socket_origin}; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        )

    def outgoing(self, body: object) -> Outgoing:
        """Validate the compose form's JSON."""
        if not isinstance(body, dict):
            raise BadRequest("expected a JSON object")
        message = body.get("message")
        if not isinstance(message, str) or not message.strip():
            raise BadRequest("write a message")
        if len(message) > MAX_MESSAGE_CHARS:
            raise BadRequest(f"the message is longer than {MAX_MESSAGE_CHARS} characters")
        url = body.get("url") or None
        if url is not None and (not isinstance(url, str) or len(url) > MAX_URL_CHARS):
            raise BadRequest(f"the link must be text of at most {MAX_URL_CHARS} characters")
        all_users = body.get("allUsers") is True
        user_ids = body.get("userIds") or []
        if not isinstance(user_ids, list) or not all(type(uid) is int for uid in user_ids):
            raise BadRequest("userIds must be a list of user ids")
        if not all_users and not user_ids:
            raise BadRequest("choose at least one recipient, or all users")
        stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        url_text = url.strip() if url else None
        return Outgoing(message.strip(), url_text or None, stamp, tuple(sorted(set(user_ids))), all_users)


class _Handler(BaseHTTPRequestHandler):
    server: PageServer
    server_version = "sidecar-demo"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in STATIC_FILES:
            self._send_file(STATIC_FILES[path])
        elif path == "/config.json":
            self._send_json(HTTPStatus.OK, self.server.site.config())
        elif path == "/api/users":
            self._with_user(lambda user: self.server.site.strapi.users())
        elif path == "/api/inbox":
            self._with_user(lambda user: self.server.site.strapi.inbox(int(user["id"])))
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/api/notifications":
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request too large"})
            return
        body = self.rfile.read(length)
        self._with_user(lambda user: self._publish(body), created=True)

    def _publish(self, body: bytes) -> dict[str, Any]:
        try:
            parsed = json.loads(body or b"null")
        except ValueError:
            raise BadRequest("expected JSON") from None
        return self.server.site.strapi.publish(self.server.site.outgoing(parsed))

    def _with_user(self, answer: Any, *, created: bool = False) -> None:
        """Run `answer(user)` for the user whose JWT came with the request; map failures to HTTP."""
        header = self.headers.get("Authorization", "")
        jwt = header[7:].strip() if header[:7].lower() == "bearer " else ""
        try:
            user = self.server.site.strapi.me(jwt) if jwt else None
            if user is None:
                self._send_json(HTTPStatus.UNAUTHORIZED, {"error": "sign in first"})
                return
            result = answer(user)
        except BadRequest as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        except StrapiUnavailable as exc:
            logger.warning("%s %s: %s", self.command, self.path, exc)
            self._send_json(HTTPStatus.BAD_GATEWAY, {"error": "Strapi failed; see the demo's output"})
            return
        self._send_json(HTTPStatus.CREATED if created else HTTPStatus.OK, result)

    def _send_file(self, path: Path) -> None:
        try:
            content = path.read_bytes()
        except OSError:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"{path.name} is missing (run demo/install.sh)"})
            return
        headers = {"Content-Type": CONTENT_TYPES.get(path.suffix, "application/octet-stream")}
        if path.suffix == ".html":
            headers["Content-Security-Policy"] = self.server.site.content_security_policy()
        self._send(HTTPStatus.OK, content, headers)

    def _send_json(self, status: HTTPStatus, payload: object) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _send(self, status: HTTPStatus, content: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per request would drown the demo's own output."""


class PageServer(ThreadingHTTPServer):
    """The page server: bound at construction (a taken port fails at once), served from `start`."""

    daemon_threads = True
    site: PageSite

    def __init__(self, host: str, port: int):
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self, site: PageSite) -> None:
        self.site = site
        self._thread = threading.Thread(target=self.serve_forever, name="demo-page", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()
