"""The end-to-end stack: a real Strapi 5 (strapi-fixtures/), the real sidecar process on a real
port, and a webhook tap between them that counts (and can drop) Strapi's deliveries.

    Strapi ──webhook──> WebhookTap ──forward──> sidecar (python -m adapter)
       ^                                            │
       └──────────────── REST (API token) ──────────┘
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.redis_server import RedisServer as RedisServer  # for the e2e tests, with the rest

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = Path(__file__).resolve().parent / "js"
ARTIFACTS = ROOT / "artifacts"


def load_launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("strapi_launcher", ROOT / "strapi-fixtures" / "launcher.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("strapi_launcher", module)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WebhookTap:
    """A loopback HTTP server that records each webhook and forwards it to the sidecar."""

    def __init__(self, target: str):
        self.target = target
        self.deliveries: list[dict[str, Any]] = []
        self.drop_next = 0
        self._lock = threading.Lock()
        tap = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = tap._forward(body, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhooks/strapi"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _forward(self, body: bytes, headers: dict[str, str]) -> int:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        entry = payload.get("entry") or {}
        record = {
            "event": payload.get("event"),
            "uid": payload.get("uid"),
            "documentId": entry.get("documentId"),
            "id": entry.get("id"),
            "at": time.monotonic(),
        }
        with self._lock:
            if self.drop_next > 0:
                self.drop_next -= 1
                record["dropped"] = True
                self.deliveries.append(record)
                return 204
            self.deliveries.append(record)
        parts = urlsplit(self.target)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            forwarded = {
                k: v
                for k, v in headers.items()
                if k.lower() in {"authorization", "content-type", "x-strapi-event"}
            }
            conn.request("POST", parts.path, body=body, headers=forwarded)
            response = conn.getresponse()
            response.read()
            record["status"] = response.status
            return response.status
        except OSError:
            record["status"] = None
            return 502
        finally:
            conn.close()

    def count(
        self, *, uid: str | None = None, event: str | None = None, document_id: str | None = None
    ) -> int:
        with self._lock:
            return sum(
                1
                for d in self.deliveries
                if (uid is None or d["uid"] == uid)
                and (event is None or d["event"] == event)
                and (document_id is None or d["documentId"] == document_id)
            )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class SidecarProcess:
    """`python -m adapter` as a child process, configured by environment variables."""

    def __init__(self, port: int, env: dict[str, str], log_path: Path):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._env = env
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        env = {**os.environ, **self._env, "SIDECAR_PORT": str(self.port), "SIDECAR_HOST": "127.0.0.1"}
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "adapter", "--env-file", os.devnull],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"sidecar exited early:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"sidecar did not start:\n{self.log_text()[-3000:]}")

    def stop(self, timeout: float = 15.0) -> int | None:
        process, self._process = self._process, None
        if process is None:
            return None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Stack:
    """Strapi + tap + sidecar, with REST helpers that act as Strapi's API and users do."""

    NOTIFICATIONS = "/api/notifications"
    READS = "/api/read-notifications"

    def __init__(
        self, jwt_mode: str = "legacy", name: str = "legacy", sidecar_env: dict[str, str] | None = None
    ):
        self.name = name
        self.jwt_mode = jwt_mode
        self.api_token = secrets.token_hex(32)
        self.jwt_secret = secrets.token_hex(32)
        self.webhook_secret = secrets.token_hex(16)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"e2e-{name}-"))
        ARTIFACTS.mkdir(exist_ok=True)
        self.sidecar = SidecarProcess(
            free_port(),
            {
                "STRAPI_API_TOKEN": self.api_token,
                "STRAPI_JWT_SECRET": self.jwt_secret,
                "WEBHOOK_SECRET": self.webhook_secret,
                "LOG_LEVEL": "INFO",
                # A lost webhook is found within seconds, and a restart looks back two minutes.
                "RECONCILE_INTERVAL": "2",
                "RECONCILE_LOOKBACK": "120",
                **(sidecar_env or {}),
            },
            ARTIFACTS / f"sidecar-{name}.log",
        )
        self.tap = WebhookTap(f"{self.sidecar.url}/webhooks/strapi")
        launcher = load_launcher()
        self.strapi = launcher.StrapiFixture(
            api_token=self.api_token,
            webhook_url=self.tap.url,
            webhook_secret=self.webhook_secret,
            jwt_secret=self.jwt_secret,
            jwt_mode=jwt_mode,
            log_path=str(ARTIFACTS / f"strapi-{name}.log"),
        )
        self.http: httpx.Client | None = None

    def start(self) -> Stack:
        self.strapi.start()
        self.sidecar._env["STRAPI_URL"] = self.strapi.url
        self.sidecar.start()
        self.http = httpx.Client(
            base_url=self.strapi.url, headers={"Authorization": f"Bearer {self.api_token}"}, timeout=30
        )
        return self

    def extra_sidecar(self, name: str, env: dict[str, str] | None = None) -> SidecarProcess:
        """Another sidecar process wired to this Strapi like the first one (not started; the
        caller starts and stops it). Strapi's webhook still goes to the first one only."""
        base = {**self.sidecar._env, "STRAPI_URL": self.strapi.url}
        return SidecarProcess(
            free_port(), {**base, **(env or {})}, ARTIFACTS / f"sidecar-{self.name}-{name}.log"
        )

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
        self.sidecar.stop()
        self.strapi.close()
        self.tap.close()

    # -- REST helpers (API token) -----------------------------------------------------------

    def api(self) -> httpx.Client:
        assert self.http is not None, "stack not started"
        return self.http

    def create_user(self, username: str, password: str = "Passw0rd!") -> int:
        role = self.authenticated_role_id()
        response = self.api().post(
            "/api/users",
            json={
                "username": username,
                "email": f"{username}@example.com",
                "password": password,
                "confirmed": True,
                "blocked": False,
                "role": role,
            },
        )
        response.raise_for_status()
        return int(response.json()["id"])

    def authenticated_role_id(self) -> int:
        roles = self.api().get("/api/users-permissions/roles").json()["roles"]
        return int(next(role["id"] for role in roles if role["type"] == "authenticated"))

    def set_blocked(self, user_id: int, blocked: bool) -> None:
        self.api().put(f"/api/users/{user_id}", json={"blocked": blocked}).raise_for_status()

    def user_ids(self) -> list[int]:
        return sorted(int(u["id"]) for u in self.api().get("/api/users", params={"fields[0]": "id"}).json())

    def login(self, identifier: str, password: str = "Passw0rd!") -> dict[str, Any]:
        response = httpx.post(
            f"{self.strapi.url}/api/auth/local",
            json={"identifier": identifier, "password": password},
            timeout=30,
        )
        response.raise_for_status()
        return dict(response.json())

    def create_notification(self, *, status: str | None = None, **fields: Any) -> dict[str, Any]:
        params = {"status": status} if status else {}
        response = self.api().post(self.NOTIFICATIONS, params=params, json={"data": fields})
        response.raise_for_status()
        return dict(response.json()["data"])

    def update_notification(
        self, document_id: str, *, status: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        params = {"status": status} if status else {}
        response = self.api().put(f"{self.NOTIFICATIONS}/{document_id}", params=params, json={"data": fields})
        response.raise_for_status()
        return dict(response.json()["data"])

    def notification(self, document_id: str, status: str = "published") -> dict[str, Any] | None:
        response = self.api().get(
            f"{self.NOTIFICATIONS}/{document_id}",
            params={"status": status, "populate[notification_users][fields][0]": "id"},
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json()["data"])

    def audience(self, document_id: str, status: str = "published") -> set[int]:
        found = self.notification(document_id, status)
        return {int(u["id"]) for u in (found or {}).get("notification_users", [])}

    def reads_of(self, document_id: str) -> list[dict[str, Any]]:
        """READNOTIFICATIONs of a notification (published), each with its users' ids."""
        response = self.api().get(
            self.READS,
            params={
                "filters[notification][documentId][$eq]": document_id,
                "populate[users_permissions_users][fields][0]": "id",
                "pagination[pageSize]": 100,
            },
        )
        response.raise_for_status()
        return list(response.json()["data"])

    def readers_of(self, document_id: str) -> list[int]:
        """Every user id in every READNOTIFICATION of the notification (duplicates kept)."""
        return sorted(int(u["id"]) for r in self.reads_of(document_id) for u in r["users_permissions_users"])


async def wait_for(
    check: Callable[[], Any],
    within: float = 15.0,
    every: float = 0.1,
    message: Callable[[], Any] | None = None,
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy; fail after `within` s."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f": {message()}" if message is not None else ""
            raise AssertionError(f"condition not met within {within} s{detail}")
        await asyncio.sleep(every)


async def settled(count: Callable[[], int], quiet: float = 2.0, within: float = 30.0) -> int:
    """Wait until `count()` stops changing for `quiet` seconds; return its value."""
    deadline = time.monotonic() + within
    last, since = count(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError("never settled: the count kept changing (a webhook loop?)")
        await asyncio.sleep(0.1)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
    return last


class JsClient:
    """The official socket.io-client in Node, running the seed's frontend flow (seed-client.mjs)."""

    def __init__(self, process: asyncio.subprocess.Process):
        self._process = process
        self.messages: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls, strapi_url: str, sidecar_url: str, identifier: str, password: str, *extra: str
    ) -> JsClient:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(JS_DIR / "seed-client.mjs"),
            strapi_url,
            sidecar_url,
            identifier,
            password,
            *extra,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=JS_DIR,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self._process.stdout is not None
        async for line in self._process.stdout:
            if line.strip():
                self.messages.append(json.loads(line))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    def events(self, name: str) -> list[Any]:
        return [m["args"][0] if m["args"] else None for m in self.of_type("event") if m["event"] == name]

    async def wait(self, kind: str, within: float = 15.0) -> dict[str, Any]:
        found = await wait_for(lambda: self.of_type(kind) or self.of_type("fatal"), within)
        if found[0]["type"] == "fatal":
            raise AssertionError(f"JS client failed: {found[0]['message']}")
        return dict(found[0])

    async def send(self, command: dict[str, Any]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write((json.dumps(command) + "\n").encode())
        await self._process.stdin.drain()

    async def call(self, event: str, data: Any, within: float = 15.0) -> Any:
        ref = len(self.messages) + time.monotonic()
        await self.send({"emit": event, "data": data, "ack": True, "ref": ref})
        found = await wait_for(lambda: [m for m in self.of_type("ack") if m["ref"] == ref], within)
        assert found[0]["error"] is None, found[0]["error"]
        return found[0]["answer"]

    async def close(self) -> None:
        if self._process.returncode is None:
            try:
                await self.send({"close": True})
                await asyncio.wait_for(self._process.wait(), 5)
            except (TimeoutError, ConnectionError):
                self._process.kill()
                await self._process.wait()
        await self._reader
