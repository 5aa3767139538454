"""The sidecar as the demo runs it: `python -m adapter`, a child process configured by environment."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from demo.config import browser_host

__all__ = ["SidecarProcess"]

ROOT = Path(__file__).resolve().parents[1]
HEALTH_PATH = "/healthz"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
POLL_INTERVAL = 0.1
LOG_TAIL_CHARS = 3000
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, have the child get SIGTERM if the demo dies without cleaning up (kill -9)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return arm


class SidecarProcess:
    """One `python -m adapter`, in its own session so Ctrl-C reaches the demo, which stops it."""

    def __init__(self, host: str, port: int, env: Mapping[str, str], log_path: Path):
        self.host = host
        self.port = port
        self.url = f"http://{browser_host(host)}:{port}"
        self.log_path = log_path
        self._env = dict(env)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.spawn()
        self.wait_healthy(timeout)

    def spawn(self) -> None:
        """Start the process; `wait_healthy` then waits for it (do other work in between)."""
        env = {**os.environ, **self._env, "SIDECAR_HOST": self.host, "SIDECAR_PORT": str(self.port)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # Fixed argv, no shell: this project's own entry point. No .env: the demo sets everything.
            self._process = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "adapter", "--env-file", os.devnull],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Return once `GET /healthz` answers 200; stop the process and raise if it never does."""
        try:
            self._poll_health(timeout)
        except BaseException:
            self.stop()
            raise

    def _poll_health(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"the sidecar exited early; {self.log_path} ends:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + HEALTH_PATH, timeout=1.0).status_code == httpx.codes.OK:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sidecar was not healthy within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (a graceful uvicorn shutdown), then SIGKILL if it does not end in time."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return "(no log)"
