"""What the benchmark ran on: CPU, memory, kernel, and the versions that matter."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.procs import BENCH


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def _node_version() -> str:
    try:
        return subprocess.run(
            ["node", "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "missing"


def _npm_package(name: str) -> str:
    try:
        return str(json.loads((BENCH / "node_modules" / name / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "missing"


def _python_package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


def sidecar_revision() -> str:
    """The commit the sidecar ran from, `+dirty` when adapter/ or webhooks/ had local changes."""
    root = BENCH.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return ""
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "adapter", "webhooks")
    return f"{commit}+dirty" if dirty else commit


def describe_machine() -> dict[str, Any]:
    return {
        "sidecar_revision": sidecar_revision(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _node_version(),
        "versions": {
            "python-socketio": _python_package("python-socketio"),
            "python-engineio": _python_package("python-engineio"),
            "uvicorn": _python_package("uvicorn"),
            "websockets": _python_package("websockets"),
            "socket.io": _npm_package("socket.io"),
            "socket.io-client": _npm_package("socket.io-client"),
        },
    }
