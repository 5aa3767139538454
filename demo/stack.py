"""The demo stack: Strapi (strapi-fixtures/), the sidecar, and the page, wired together.

    browser ──sign in (REST)──────────────> Strapi :1337 ──webhook──> sidecar :1338
       │ └──Socket.IO (notificacion, notification:read)──────────────────┘  │
       └──page + /api/* ──> page server :8080 ──REST (API token)──> Strapi <─┘ read receipts

Everything that must outlive a run lives in the data folder: Strapi's SQLite database and
secrets, the demo's credentials (API token, JWT and webhook secrets, users' passwords), the logs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, cast

from demo.config import DemoConfig, browser_host
from demo.credentials import Credentials
from demo.server import PageServer, PageSite
from demo.sidecar import SidecarProcess
from demo.strapi import DemoStrapi

__all__ = ["DemoStack", "PortInUse"]

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "strapi-fixtures" / "launcher.py"
JWT_MODE = "legacy"  # the seed's {id} tokens, valid 30 days: a page left open keeps working
STRAPI_LOG = "strapi.log"
SIDECAR_LOG = "sidecar.log"


class PortInUse(RuntimeError):
    """A port the demo needs is taken; the message says which and how to pick another."""


class StrapiFixture(Protocol):
    """What the demo uses of strapi-fixtures/launcher.py's `StrapiFixture`."""

    url: str
    log_path: Path

    @property
    def running(self) -> bool: ...
    def start(self, timeout: float = ...) -> None: ...
    def close(self) -> None: ...
    def log_tail(self, lines: int = ...) -> str: ...


def _load_launcher() -> Callable[..., StrapiFixture]:
    spec = importlib.util.spec_from_file_location("strapi_launcher", LAUNCHER)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {LAUNCHER}")
    module = sys.modules.get("strapi_launcher")
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["strapi_launcher"] = module
        spec.loader.exec_module(module)
    return cast("Callable[..., StrapiFixture]", module.StrapiFixture)


def _claim_port(host: str, port: int, what: str, flag: str) -> int:
    """`port`, or a free one if 0; fail clearly when it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUse(_port_message(host, port, what, flag, exc)) from exc
        return int(sock.getsockname()[1])


def _port_message(host: str, port: int, what: str, flag: str, exc: OSError) -> str:
    variable = "DEMO_" + flag.removeprefix("--").replace("-", "_").upper()
    return (
        f"port {port} on {host} is already in use ({exc.strerror}), and {what} needs it. "
        f"Stop whatever listens there, or pick another port: {flag} N or {variable}=N (0 = any free port)."
    )


class DemoStack:
    """Start with `start()`, stop with `stop()` (safe to call at any point, more than once)."""

    def __init__(self, config: DemoConfig, *, announce: Callable[[str], None] | None = None):
        self.config = config
        self._announce = announce or (lambda line: None)
        self.data_dir = config.data_dir
        self.credentials = Credentials.load_or_create(self.data_dir)
        self.page: PageServer | None = None
        self.strapi: StrapiFixture | None = None
        self.sidecar: SidecarProcess | None = None
        self._rest: DemoStrapi | None = None
        self._strapi_url = ""

    # -- URLs, known once started ------------------------------------------------------------

    def _url(self, port: int) -> str:
        return f"http://{browser_host(self.config.host)}:{port}"

    @property
    def page_url(self) -> str:
        assert self.page is not None, "start() first"
        return self._url(self.page.port)

    @property
    def strapi_url(self) -> str:
        assert self._strapi_url, "start() first"
        return self._strapi_url

    @property
    def sidecar_url(self) -> str:
        assert self.sidecar is not None, "start() first"
        return self.sidecar.url

    # -- lifetime ---------------------------------------------------------------------------

    def start(self) -> DemoStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        host = self.config.host
        self.page = self._bind_page()
        strapi_port = _claim_port(host, self.config.strapi_port, "Strapi", "--strapi-port")
        sidecar_port = _claim_port(host, self.config.sidecar_port, "the sidecar", "--sidecar-port")
        self._strapi_url = self._url(strapi_port)

        # Both at once: the sidecar needs nothing from Strapi to start, and is then up before
        # Strapi's bootstrap can send a webhook.
        self._announce(
            f"Starting Strapi on {self._strapi_url} and the sidecar on {self._url(sidecar_port)} "
            f"(logs: {self.data_dir / STRAPI_LOG}, {SIDECAR_LOG}) ..."
        )
        self.sidecar = SidecarProcess(host, sidecar_port, self._sidecar_env(), self.data_dir / SIDECAR_LOG)
        self.sidecar.spawn()
        self.strapi = self._strapi_fixture(strapi_port, sidecar_port)
        self.strapi.start()
        self.sidecar.wait_healthy()
        self._rest = DemoStrapi(self._strapi_url, self.credentials.api_token)
        self.page.start(PageSite(self._rest, self._strapi_url, self.sidecar.url, self.credentials.users))

    def _bind_page(self) -> PageServer:
        try:
            return PageServer(self.config.host, self.config.page_port)
        except OSError as exc:
            host, port = self.config.host, self.config.page_port
            raise PortInUse(_port_message(host, port, "the demo page", "--page-port", exc)) from exc

    def _sidecar_env(self) -> dict[str, str]:
        assert self.page is not None
        page_origins = {self._url(self.page.port), f"http://localhost:{self.page.port}"}
        return {
            "STRAPI_URL": self._strapi_url,
            "STRAPI_API_TOKEN": self.credentials.api_token,
            "STRAPI_JWT_SECRET": self.credentials.jwt_secret,
            "WEBHOOK_SECRET": self.credentials.webhook_secret,
            "CORS_ORIGINS": ",".join(sorted(page_origins)),
            "LOG_LEVEL": "INFO",
        }

    def _strapi_fixture(self, port: int, sidecar_port: int) -> StrapiFixture:
        fixture_class = _load_launcher()
        webhook_host = browser_host(self.config.host)
        return fixture_class(
            port=port,
            host=self.config.host,
            api_token=self.credentials.api_token,
            webhook_url=f"http://{webhook_host}:{sidecar_port}/webhooks/strapi",
            webhook_secret=self.credentials.webhook_secret,
            jwt_secret=self.credentials.jwt_secret,
            jwt_mode=JWT_MODE,
            seed_users=self.credentials.seed_users(),
            data_dir=str(self.data_dir),
            log_path=str(self.data_dir / STRAPI_LOG),
        )

    def stop(self) -> None:
        """Page first (no new work), then the sidecar (it drains webhooks), then Strapi."""
        page, self.page = self.page, None
        sidecar, self.sidecar = self.sidecar, None
        strapi, self.strapi = self.strapi, None
        rest, self._rest = self._rest, None
        with contextlib.ExitStack() as stack:  # each one stops even if another fails
            if strapi is not None:
                stack.callback(strapi.close)
            if sidecar is not None:
                stack.callback(sidecar.stop)
            if rest is not None:
                stack.callback(rest.close)
            if page is not None:
                stack.callback(page.stop)

    def problem(self) -> str | None:
        """Why the stack is no longer whole (a process died), or None while all is well."""
        if self.strapi is not None and not self.strapi.running:
            log, tail = self.strapi.log_path, self.strapi.log_tail()
            return f"Strapi stopped on its own; its log ({log}) ends:\n{tail}"
        if self.sidecar is not None and not self.sidecar.running:
            log, tail = self.sidecar.log_path, self.sidecar.log_tail()
            return f"the sidecar stopped on its own; its log ({log}) ends:\n{tail}"
        return None

    def __enter__(self) -> DemoStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
