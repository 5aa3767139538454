"""Start and stop the headless Strapi 5 project in this folder, for end-to-end tests and demos.

Standard library only, so tests can load it by path::

    spec = importlib.util.spec_from_file_location("strapi_launcher", "strapi-fixtures/launcher.py")

and as a command line tool::

    python strapi-fixtures/launcher.py --port 1337 --api-token KEY --jwt-secret SECRET \\
        --webhook-url http://127.0.0.1:8000/webhooks/strapi --webhook-secret SECRET

Run ``strapi-fixtures/install.sh`` once first (it installs node_modules).

Each fixture gets its own SQLite database (in a temporary folder unless ``data_dir`` is given),
its own free port unless ``port`` is given, and random Strapi secrets (``APP_KEYS``,
``API_TOKEN_SALT``, ``ADMIN_JWT_SECRET``, ``TRANSFER_TOKEN_SALT``, ``ENCRYPTION_KEY``) unless they
are set in the environment or in ``extra_env``. Strapi's output goes to a log file, never to
the caller's stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["JWT_MODES", "PROJECT_DIR", "StrapiFixture", "main"]

PROJECT_DIR = Path(__file__).resolve().parent
STRAPI_ENTRY = PROJECT_DIR / "node_modules" / "@strapi" / "strapi" / "bin" / "strapi.js"
JWT_MODES = ("legacy", "refresh")
GENERATED_SECRETS = (
    "APP_KEYS",
    "API_TOKEN_SALT",
    "ADMIN_JWT_SECRET",
    "TRANSFER_TOKEN_SALT",
    "ENCRYPTION_KEY",
)
SECRETS_FILE = "secrets.json"
DATABASE_FILE = "data.db"
LOG_FILE = "strapi.log"
HEALTH_PATH = "/_health"
HEALTH_POLL_INTERVAL = 0.1
STOP_TIMEOUT = 15.0
LOG_TAIL_LINES = 60
DEFAULT_START_TIMEOUT = 120.0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def _random_secrets() -> dict[str, str]:
    values = {name: secrets.token_urlsafe(32) for name in GENERATED_SECRETS}
    values["APP_KEYS"] = ",".join(secrets.token_urlsafe(32) for _ in range(4))
    return values


def _load_or_create_secrets(folder: Path) -> dict[str, str]:
    """Keep generated secrets beside a reused database, so a later run can read its data."""
    path = folder / SECRETS_FILE
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        complete = isinstance(stored, dict) and all(
            isinstance(stored.get(name), str) for name in GENERATED_SECRETS
        )
        if complete:
            return {name: str(stored[name]) for name in GENERATED_SECRETS}
    values = _random_secrets()
    path.write_text(json.dumps(values), encoding="utf-8")
    path.chmod(0o600)
    return values


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _kill_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process group, wait, then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Last-chance cleanup when a fixture is garbage collected or the interpreter exits."""
    if process.poll() is None:
        _kill_group(process, timeout=5.0)
    if process.stdin is not None:
        process.stdin.close()


class StrapiFixture:
    """One Strapi process with its own port, database and log.

    ``start()`` returns once ``GET /_health`` answers 204; ``restart()`` keeps the port, the
    database and the secrets. Use it as a context manager, or call ``close()`` when done: that
    stops Strapi and deletes the temporary folder it created (never a ``data_dir`` you gave).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        api_token: str,
        webhook_url: str,
        webhook_secret: str,
        jwt_secret: str,
        jwt_mode: str = "legacy",
        seed_users: list[dict[str, str]] | None = None,
        data_dir: str | None = None,
        log_path: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        if jwt_mode not in JWT_MODES:
            raise ValueError(f"jwt_mode must be one of {JWT_MODES}, got {jwt_mode!r}")
        if not api_token or not jwt_secret:
            raise ValueError("api_token and jwt_secret must not be empty")
        self.host = host
        self.port = port
        self.api_token = api_token
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.jwt_secret = jwt_secret
        self.jwt_mode = jwt_mode
        self.seed_users = list(seed_users or [])
        self._extra_env = dict(extra_env or {})
        self._owned_dir: Path | None = None
        self._cleanup_dir: weakref.finalize[..., StrapiFixture] | None = None
        if data_dir is None:
            self._owned_dir = Path(tempfile.mkdtemp(prefix="strapi-fixture-"))
            self.data_dir = self._owned_dir
            self._cleanup_dir = weakref.finalize(
                self, shutil.rmtree, str(self._owned_dir), ignore_errors=True
            )
        else:
            self.data_dir = Path(data_dir).resolve()
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.database_path = self.data_dir / DATABASE_FILE
        self.log_path = Path(log_path).resolve() if log_path else self.data_dir / LOG_FILE
        if self._owned_dir is None:
            self._secrets = _load_or_create_secrets(self.data_dir)
        else:
            self._secrets = _random_secrets()
        self._process: subprocess.Popen[bytes] | None = None
        self._reaper: weakref.finalize[..., StrapiFixture] | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``; known once a port is chosen."""
        return f"http://{self.host}:{self._require_port()}"

    def _require_port(self) -> int:
        if self.port is None:
            raise RuntimeError("the port is chosen by start(); call start() first")
        return self.port

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def environment(self) -> dict[str, str]:
        """The environment Strapi is started with (it includes secrets: do not log it)."""
        env = dict(os.environ)
        for name, value in self._secrets.items():
            env.setdefault(name, value)
        env.update(
            {
                "NODE_ENV": "production",
                "HOST": self.host,
                "PORT": str(self.port),
                "DATABASE_FILENAME": str(self.database_path),
                "JWT_SECRET": self.jwt_secret,
                "FIXTURE_JWT_MODE": self.jwt_mode,
                "FIXTURE_API_TOKEN": self.api_token,
                "FIXTURE_WEBHOOK_URL": self.webhook_url,
                "FIXTURE_WEBHOOK_SECRET": self.webhook_secret,
                "FIXTURE_SEED_USERS": json.dumps(self.seed_users),
                "FIXTURE_EXIT_ON_STDIN_CLOSE": "1",
                "STRAPI_TELEMETRY_DISABLED": "true",
                "STRAPI_DISABLE_UPDATE_NOTIFICATION": "true",
                "BROWSER": "none",
            }
        )
        env.update(self._extra_env)
        return env

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        if self._cleanup_dir is not None and not self._cleanup_dir.alive:
            raise RuntimeError("this fixture was closed and its database deleted")
        if self.running:
            raise RuntimeError(f"Strapi is already running at {self.url}")
        if not STRAPI_ENTRY.exists():
            raise RuntimeError(f"{STRAPI_ENTRY} is missing: run strapi-fixtures/install.sh first")
        if self.port is None:
            self.port = _free_port(self.host)
        elif _port_in_use(self.host, self.port):
            raise RuntimeError(f"port {self.port} on {self.host} is already in use")
        self._spawn()
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if self._reaper is not None:
            self._reaper.detach()
            self._reaper = None
        _kill_group(process, timeout=STOP_TIMEOUT)
        if process.stdin is not None:
            process.stdin.close()

    def restart(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Stop and start again on the same port, database and secrets."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop Strapi and delete the temporary folder this fixture created."""
        self.stop()
        if self._cleanup_dir is not None:
            self._cleanup_dir()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)

    def __enter__(self) -> StrapiFixture:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.url if self.port is not None else "no port yet"
        return f"<StrapiFixture {where} jwt_mode={self.jwt_mode} running={self.running}>"

    def _spawn(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH: Strapi 5 needs Node.js 20 or later")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n--- launcher: starting Strapi on {self.url} at {stamp} ---\n".encode())
            log.flush()
            # Fixed argv, no shell: the command is this project's own Strapi entry point.
            self._process = subprocess.Popen(  # noqa: S603
                [node, str(STRAPI_ENTRY), "start"],
                cwd=PROJECT_DIR,
                env=self.environment(),
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._reaper = weakref.finalize(self, _reap, self._process)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        health_url = self.url + HEALTH_PATH
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise RuntimeError(
                    f"Strapi exited with code {code} before it was healthy; log tail "
                    f"({self.log_path}):\n{self.log_tail()}"
                )
            if _is_healthy(self.host, self._require_port()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Strapi was not healthy at {health_url} within {timeout:.0f} s; log tail "
                    f"({self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(HEALTH_POLL_INTERVAL)


def _is_healthy(host: str, port: int) -> bool:
    """True when Strapi (not just anything on that port) answers the health check with 204."""
    connection = http.client.HTTPConnection(host, port, timeout=2.0)
    try:
        connection.request("GET", HEALTH_PATH)
        response = connection.getresponse()
        response.read()
        return response.status == HTTPStatus.NO_CONTENT and response.getheader("strapi") is not None
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Start the headless Strapi 5 test fixture until Ctrl-C or SIGTERM."
    )
    parser.add_argument("--port", type=int, default=1337, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-token", required=True, help="key of the full-access API token")
    parser.add_argument("--webhook-url", default="", help="empty: no webhook")
    parser.add_argument("--webhook-secret", default="", help="sent as Authorization: Bearer")
    parser.add_argument("--jwt-secret", required=True, help="users-permissions JWT secret")
    parser.add_argument("--jwt-mode", choices=JWT_MODES, default="legacy")
    seed_help = 'JSON: [{"username": ..., "email": ..., "password": ...}, ...]'
    parser.add_argument("--seed-users", default="[]", help=seed_help)
    parser.add_argument("--data-dir", help="keep the database here (default: a temporary folder)")
    parser.add_argument("--log-path", help="Strapi's log file (default: inside the data folder)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT)
    return parser.parse_args(argv)


def _seed_users(raw: str) -> list[dict[str, str]]:
    users = json.loads(raw)
    if not isinstance(users, list) or not all(isinstance(user, dict) for user in users):
        raise SystemExit("--seed-users must be a JSON array of objects")
    return [{str(key): str(value) for key, value in user.items()} for user in users]


def _write_line(stream: IO[str], text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fixture = StrapiFixture(
        port=args.port or None,
        host=args.host,
        api_token=args.api_token,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        jwt_secret=args.jwt_secret,
        jwt_mode=args.jwt_mode,
        seed_users=_seed_users(args.seed_users),
        data_dir=args.data_dir,
        log_path=args.log_path,
    )
    try:
        fixture.start(timeout=args.timeout)
        _write_line(sys.stdout, fixture.url)
        _write_line(sys.stderr, f"Strapi log: {fixture.log_path}; Ctrl-C to stop")
        while not stopping.wait(0.5):
            if not fixture.running:
                tail = fixture.log_tail()
                _write_line(sys.stderr, f"Strapi exited on its own; log tail:\n{tail}")
                return 1
        return 0
    except RuntimeError as exc:
        _write_line(sys.stderr, str(exc))
        return 1
    finally:
        fixture.close()


if __name__ == "__main__":
    sys.exit(main())
