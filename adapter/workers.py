"""`python -m adapter --workers N`: N sidecar processes on one machine, on consecutive ports.

One port per process (`--port P` gives P, P+1, ..., P+N-1), not one shared port
(SO_REUSEPORT): Socket.IO's HTTP long-polling sends each client's packets as separate HTTP
requests, which must all reach the process that holds its session. With a port per process the
load balancer can keep each client on one process (sticky sessions), and health-check and scrape
each process on its own (`/readyz`, `/metrics`); with a shared port the kernel spreads
connections blindly and long-polling breaks.

The supervisor starts each worker as `python -m adapter --port <its port>`, restarts one that
dies (after a pause that grows while it keeps dying), and on SIGTERM or SIGINT sends SIGTERM to
every worker and waits for them: each closes its client connections and finishes its work as a
single process does. Workers get SIGTERM if the supervisor itself dies (Linux).
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Supervisor", "worker_command"]

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_SECONDS = 60.0  # a worker that ran this long and then died is restarted at once again
STOP_SECONDS = 20.0  # workers' own graceful shutdown is 10 s; past this they are killed
PR_SET_PDEATHSIG = 1

Popen = Callable[..., "subprocess.Popen[bytes]"]


def worker_command(index: int, host: str, port: int, env_file: str) -> list[str]:
    """The command line of worker `index` (its port is `port + index`)."""
    return [
        sys.executable,
        "-m",
        "adapter",
        "--host",
        host,
        "--port",
        str(port + index),
        "--env-file",
        env_file,
        "--worker-id",
        str(index),
    ]


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    started: float
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(
        self,
        commands: Sequence[list[str]],
        *,
        popen: Popen = subprocess.Popen,
        restart_delays: Sequence[float] = RESTART_DELAYS,
        stop_seconds: float = STOP_SECONDS,
    ):
        self._commands = list(commands)
        self._popen = popen
        self._delays = tuple(restart_delays)
        self._stop_seconds = stop_seconds
        self._workers: list[_Worker] = []
        self.stopping = threading.Event()

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; returns 0 when every worker stopped cleanly."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._workers = [self._spawn(index) for index in range(len(self._commands))]
            logger.info("started %d workers", len(self._workers))
            while not self.stopping.wait(POLL_SECONDS):
                self.tend()
            return self.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def tend(self) -> None:
        """Notice workers that died; restart them once their pause is over."""
        now = time.monotonic()
        for position, worker in enumerate(self._workers):
            code = worker.process.poll()
            if code is None:
                continue
            if worker.restart_at is None:
                failures = 0 if now - worker.started >= STABLE_SECONDS else worker.failures + 1
                delay = self._delays[min(failures, len(self._delays) - 1)]
                logger.error("worker %d exited with %s; restarting it in %g s", worker.index, code, delay)
                worker.failures, worker.restart_at = failures, now + delay
            elif now >= worker.restart_at:
                replacement = self._spawn(worker.index)
                replacement.failures = worker.failures
                self._workers[position] = replacement

    def stop(self) -> int:
        """SIGTERM every worker, wait for them, kill what is left; 0 if all stopped by themselves."""
        running = [w.process for w in self._workers if w.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_seconds
        clean = True
        for process in running:
            try:
                code = process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                clean = False
                continue
            clean = clean and code in (0, -signal.SIGTERM)
        logger.info("all workers stopped")
        return 0 if clean else 1

    def _spawn(self, index: int) -> _Worker:
        process = self._popen(
            self._commands[index],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only; it forwards
            preexec_fn=_die_with_parent() if sys.platform == "linux" else None,
        )
        return _Worker(index, process, time.monotonic())

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping.set()


def _die_with_parent() -> Callable[[], None]:
    """For the child, before exec: receive SIGTERM when the supervisor dies (resolved here, in the
    parent: nothing may be looked up between fork and exec)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
