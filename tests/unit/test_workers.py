"""`python -m adapter --workers N` (adapter/workers.py): the supervisor, with stand-in worker processes."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from adapter.__main__ import main
from adapter.settings import Settings
from adapter.workers import Supervisor, worker_command
from tests.conftest import API_TOKEN, JWT_SECRET, WEBHOOK_SECRET

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
    "time.sleep(60)",
]
CRASHER = [sys.executable, "-c", "import sys; sys.exit(3)"]


class Recording:
    """subprocess.Popen, remembering every process started."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def __call__(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        if command is STUBBORN:
            kwargs["stdout"] = subprocess.PIPE
        process: subprocess.Popen[bytes] = subprocess.Popen(command, **kwargs)
        self.started.append(process)
        return process


def _run_for(supervisor: Supervisor, seconds: float) -> int:
    """Run the supervisor in this (main) thread; ask it to stop after `seconds`."""
    timer = threading.Timer(seconds, supervisor.stopping.set)
    timer.start()
    try:
        return supervisor.run()
    finally:
        timer.cancel()


@pytest.fixture
def env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    path = tmp_path / ".env"
    path.write_text(
        f"STRAPI_API_TOKEN={API_TOKEN}\nSTRAPI_JWT_SECRET={JWT_SECRET}\nWEBHOOK_SECRET={WEBHOOK_SECRET}\n"
    )
    return path


def test_workers_need_redis(env_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--workers", "3", "--env-file", str(env_file)])

    assert code == 2
    assert capsys.readouterr().err.startswith("--workers 3 needs REDIS_URL")


def test_workers_need_a_fixed_port(env_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env_file.write_text(env_file.read_text() + "REDIS_URL=redis://127.0.0.1:1/0\n")

    code = main(["--workers", "2", "--port", "0", "--env-file", str(env_file)])

    assert code == 2
    assert "needs a fixed port" in capsys.readouterr().err


def test_workers_count_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--workers", "0"])
    assert "must be 1 or more" in capsys.readouterr().err


def test_worker_command_gives_each_worker_the_next_port() -> None:
    commands = [worker_command(index, "10.0.0.5", 1338, ".env") for index in range(3)]

    assert [c[c.index("--port") + 1] for c in commands] == ["1338", "1339", "1340"]
    assert [c[c.index("--worker-id") + 1] for c in commands] == ["0", "1", "2"]
    assert commands[0][:3] == [sys.executable, "-m", "adapter"]


def test_supervisor_starts_every_worker_and_stops_them_cleanly() -> None:
    popen = Recording()
    supervisor = Supervisor([SLEEPER, SLEEPER], popen=popen)

    code = _run_for(supervisor, 0.5)

    assert code == 0
    assert len(popen.started) == 2
    assert all(process.returncode is not None for process in popen.started)


def test_supervisor_restarts_a_worker_that_dies(caplog: pytest.LogCaptureFixture) -> None:
    popen = Recording()
    supervisor = Supervisor([SLEEPER, CRASHER], popen=popen, restart_delays=(0.1,))

    with caplog.at_level(logging.ERROR):
        _run_for(supervisor, 2.0)

    crashes = [p for p in popen.started if p.args is CRASHER]
    assert len(crashes) >= 2  # started, died, started again
    assert len([p for p in popen.started if p.args is SLEEPER]) == 1
    assert "worker 1 exited with 3; restarting it in 0.1 s" in caplog.text


def test_supervisor_kills_a_worker_that_will_not_stop() -> None:
    popen = Recording()
    supervisor = Supervisor([STUBBORN], popen=popen, stop_seconds=0.5)

    def stop_once_ready() -> None:
        stdout = popen.started[0].stdout
        assert stdout is not None
        stdout.readline()
        supervisor.stopping.set()

    threading.Timer(0.2, stop_once_ready).start()
    code = supervisor.run()

    assert code == 1
    assert popen.started[0].returncode == -9
    stdout = popen.started[0].stdout
    assert stdout is not None
    stdout.close()
