"""Processes the benchmark runs: the fake Strapi, the servers under test, and the client fleets.

Everything listens on 127.0.0.1 only. Each process is started by this module and stopped by it,
by its own pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import jwt

from bench.stats import summary

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
LOGS = RESULTS / "logs"
CLIENTS_JS = BENCH / "clients.mjs"
NODE_SERVER_JS = BENCH / "node-baseline" / "server.mjs"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SYNC_EVENT = "notification:sync"  # the sidecar's catch-up, sent right after a connect
NOTIFICATION_EVENT = "notificacion"  # the seed's event, which the clients time
READ_EVENT = "notification:read"  # a client marks a notification read (acknowledged)
# Handshakes in flight across a fleet when clients connect at a steady pace (not a storm): paced
# phases start with this many and adapt (Fleet.connect_paced): a server that handles more at once
# gets more, one that slows down with more in flight (the sidecar did: 85/s with 4 in flight, 53/s
# with 50) gets fewer. See bench/README.md, Connect pacing.
CONNECT_CONCURRENCY = 4
CONNECT_MAX_IN_FLIGHT = 128
CONNECT_BATCH_SECONDS = 2.0  # each paced batch is about this long at the best rate seen so far


# What a server says of itself so far (`metric_totals`): "emit_s", "emits" (of one event),
# "gc_s", "gcs" (its collector), "direct" (deliveries written straight to an idle WebSocket)
Totals = dict[str, float]


def now_ms() -> float:
    """Wall-clock milliseconds, the clock the Node clients stamp receipts with."""
    return time.time() * 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS, KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def sign_tokens(secret: str, user_ids: Iterable[int], ttl: int = 4 * 3600) -> dict[int, str]:
    """Strapi users-permissions' legacy tokens: HS256 `{id, iat, exp}`."""
    issued = int(time.time())
    return {
        uid: jwt.encode({"id": uid, "iat": issued, "exp": issued + ttl}, secret, algorithm="HS256")
        for uid in user_ids
    }


RATE_MEMORY = 6  # batches after which a rate measured at some number of slots is measured again


def _next_slots(
    rates: dict[int, tuple[float, int]], slots: int, rate: float, failed: bool, batch: int, most: int
) -> int:
    """Hill-climbing on the handshake rate: the slots (handshakes in flight) for the next batch.

    A failed handshake halves them. Otherwise the best known rate among half, the same and double
    the slots wins; double is tried when it is unknown (or measured over RATE_MEMORY batches ago)
    and the rate has not fallen from half the slots to these. Rates are smoothed per level.
    """
    old = rates.get(slots)
    smoothed = rate if old is None or batch - old[1] > RATE_MEMORY else (old[0] + rate) / 2
    rates[slots] = (smoothed, batch)
    if failed:
        return max(1, slots // 2)

    def known(level: int) -> float | None:
        entry = rates.get(level)
        return entry[0] if entry is not None and batch - entry[1] <= RATE_MEMORY else None

    down, up = max(1, slots // 2), min(most, slots * 2)
    below = known(down) if down != slots else None
    above = known(up) if up != slots else None
    if up != slots and above is None and (below is None or smoothed >= 0.9 * below):
        return up
    options = [(smoothed, slots)]
    if below is not None:
        options.append((below, down))
    if above is not None:
        options.append((above, up))
    return max(options)[1]


class ManagedProcess:
    """A child process with its log in LOGS/, stopped by SIGTERM (then SIGKILL) on its own pid."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], cwd: Path = ROOT):
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.cwd = cwd
        self.log_path = LOGS / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    def start(self) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n--- bench: starting {self.name} at {time.strftime('%H:%M:%S')} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def log_mark(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, mark: int) -> str:
        with self.log_path.open("rb") as handle:
            handle.seek(mark)
            return handle.read().decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_http(self, url: str, within: float = 30.0, ok: Sequence[int] = (200, 204)) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code in ok:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {url} within {within:.0f} s:\n{self.log_tail()}")


class FakeStrapiProcess(ManagedProcess):
    def __init__(self, users: int, api_token: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "bench.fake_strapi", "--port", str(self.port), "--users", str(users)]
        super().__init__("fake-strapi", argv, {"FAKE_STRAPI_TOKEN": api_token})

    async def ready(self) -> None:
        await self.wait_http(f"{self.url}/_health")


class RedisProcess(ManagedProcess):
    """A throw-away `redis-server` on a free port: nothing saved, nothing appended."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no"]
        super().__init__("redis", argv, {})

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        super().start()

    async def ready(self, within: float = 15.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"redis-server exited early:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"PING\r\n")
                await writer.drain()
                answer = await asyncio.wait_for(reader.readline(), 2)
                writer.close()
                if answer.startswith(b"+PONG"):
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"redis-server did not answer PING within {within:.0f} s:\n{self.log_tail()}")


@dataclass
class Secrets:
    api_token: str
    jwt_secret: str
    webhook_secret: str


class ServerUnderTest(ManagedProcess):
    """The sidecar or the Node baseline, on `port`, talking to Strapi at `strapi_url`."""

    kind = "?"

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], port: int):
        super().__init__(name, argv, env)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    async def ready(self) -> None:
        await self.wait_http(f"{self.url}/healthz")

    async def metric_totals(self, event: str) -> Totals | None:
        """What this server says of itself so far, where it says (see `Totals`)."""
        return None


class SidecarServer(ServerUnderTest):
    kind = "sidecar"

    def __init__(self, port: int, strapi_url: str, secrets: Secrets, tag: str, **settings: str):
        env = {
            "STRAPI_URL": strapi_url,
            "STRAPI_API_TOKEN": secrets.api_token,
            "STRAPI_JWT_SECRET": secrets.jwt_secret,
            "WEBHOOK_SECRET": secrets.webhook_secret,
            "SIDECAR_HOST": "127.0.0.1",
            "SIDECAR_PORT": str(port),
            "LOG_LEVEL": "INFO",
            **settings,
        }
        argv = [sys.executable, "-m", "adapter", "--env-file", os.devnull]
        super().__init__(f"sidecar-{tag}", argv, env, port)
        self.scaled_out = bool(settings.get("REDIS_URL"))

    async def metric_totals(self, event: str) -> Totals | None:
        """From /metrics: `sidecar_emit_seconds` of `event` (the time the sidecar's emits took to
        write or queue the frame to every recipient), `sidecar_gc_pause_seconds` (every
        generation's) and `sidecar_deliveries_direct_total`. Not for a scaled-out process, whose
        emit is a publish to Redis."""
        if self.scaled_out:
            return None
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(f"{self.url}/metrics")).text

        emit_s, emits = _summed(text, "sidecar_emit_seconds", f'event="{re.escape(event)}"')
        gc_s, gcs = _summed(text, "sidecar_gc_pause_seconds", r'generation="\d+"')
        direct = re.search(r"^sidecar_deliveries_direct_total (\S+)$", text, re.M)
        return {
            "emit_s": emit_s,
            "emits": emits,
            "gc_s": gc_s,
            "gcs": gcs,
            "direct": float(direct[1]) if direct else 0.0,
        }


def _summed(text: str, metric: str, labels: str) -> tuple[float, float]:
    """A Prometheus histogram's `_sum` and `_count`, added over its samples whose labels match
    `labels` (a regular expression), in the exposition `text`."""
    total, count = (
        sum(float(value) for value in re.findall(rf"^{metric}_{part}\{{{labels}\}} (\S+)$", text, re.M))
        for part in ("sum", "count")
    )
    return total, count


def added(answers: Iterable[dict[str, Any]], key: str) -> dict[str, int]:
    """The counts under `key` of every client process's answer, added up by name."""
    total: dict[str, int] = {}
    for answer in answers:
        for name, count in answer[key].items():
            total[name] = total.get(name, 0) + count
    return total


def emit_ms(before: Totals | None, after: Totals | None) -> float | None:
    """The mean time of the emits between two `metric_totals` (ms), None without them."""
    if before is None or after is None or after["emits"] <= before["emits"]:
        return None
    return round(1000 * (after["emit_s"] - before["emit_s"]) / (after["emits"] - before["emits"]), 2)


def gc_ms(before: Totals | None, after: Totals | None) -> float | None:
    """The server's own collections between two `metric_totals` (ms, summed), None without them."""
    if before is None or after is None:
        return None
    return round(1000 * (after["gc_s"] - before["gc_s"]), 1)


def direct_writes(before: Totals | None, after: Totals | None) -> int | None:
    """Deliveries written straight to an idle WebSocket between two `metric_totals`."""
    if before is None or after is None:
        return None
    return int(after["direct"] - before["direct"])


class NodeServer(ServerUnderTest):
    kind = "node"

    def __init__(self, port: int, strapi_url: str, secrets: Secrets, tag: str, **settings: str):
        env = {
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "JWT_SECRET": secrets.jwt_secret,
            "WEBHOOK_SECRET": secrets.webhook_secret,
            "STRAPI_URL": strapi_url,
            "STRAPI_API_TOKEN": secrets.api_token,
            **settings,
        }
        super().__init__(f"node-{tag}", ["node", str(NODE_SERVER_JS)], env, port)


def make_server(
    kind: str,
    port: int,
    strapi_url: str,
    secrets: Secrets,
    tag: str,
    *,
    big_webhooks: bool = True,
    redis_url: str = "",
) -> ServerUnderTest:
    """The server under test. `big_webhooks` raises the sidecar's webhook body limit (see below)."""
    if kind == "sidecar":
        # Strapi's webhook for a notification carries every selected user (~290 bytes each). The
        # fan-out sends that real shape to 10k users (2.8 MB, within the default 16 MiB) and
        # still raises the limit, for larger audiences; the real-Strapi runs keep the defaults
        # (see bench/README.md).
        settings = {"WEBHOOK_MAX_BODY_BYTES": str(64 * 2**20)} if big_webhooks else {}
        if redis_url:
            settings["REDIS_URL"] = redis_url
        return SidecarServer(port, strapi_url, secrets, tag, **settings)
    if kind == "node":
        # Idle connections kept 65 s, as the sidecar keeps them: with Node's default 5 s, Strapi
        # loses a webhook sent on a connection the server has closed (bench/README.md, "Lost
        # webhooks"), and a baseline that misses publications measures nothing.
        return NodeServer(port, strapi_url, secrets, tag, KEEP_ALIVE_TIMEOUT="65")
    raise ValueError(f"unknown server kind {kind!r}")


# the clients clients.mjs can run: its LeanSocket (the Socket.IO protocol over a bare `ws`
# WebSocket) or socket.io-client itself
CLIENT_KINDS = ("lean", "official")


@dataclass
class ClientProcess:
    """One `node clients.mjs` holding many clients; commands are answered in order by `ref`."""

    users: list[int]
    process: asyncio.subprocess.Process
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    next_ref: int = 0
    reader: asyncio.Task[None] | None = None
    stderr_tail: list[str] = field(default_factory=list)

    # what each process runs (`--client`; clients.mjs reads it as BENCH_CLIENT)
    kind: ClassVar[str] = CLIENT_KINDS[0]

    @classmethod
    async def spawn(cls, users: list[int]) -> ClientProcess:
        process = await asyncio.create_subprocess_exec(
            "node",
            # A young generation that holds a publication's garbage (V8 starts it small and grows
            # it as it sees fit), emptied before each publication (`Fleet.collect`), so that the
            # clients do not collect in the middle of a measured round (bench/README.md).
            "--min-semi-space-size=16",
            # What each emptying keeps (~1 MB per process per round) goes to the old generation,
            # whose limit V8 set at ~1.2x what the last full collection had left: a full
            # collection (3-92 ms, and concurrent marking on both cores before it) came once a
            # run or more, inside a round, most often the sidecar's last (the Node fleet's, after
            # its own last round). 5x leaves room for a whole run.
            "--heap-growing-percent=400",
            "--expose-gc",
            str(CLIENTS_JS),
            cwd=BENCH,
            env={**os.environ, "BENCH_CLIENT": cls.kind},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 2**20,
        )
        client = cls(users, process)
        client.reader = asyncio.create_task(client._read())
        asyncio.create_task(client._read_stderr())  # noqa: RUF006 - ends with the process
        return client

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            if not line.strip():
                continue
            message = json.loads(line)
            future = self.pending.pop(message.get("ref"), None)
            if future is not None and not future.done():
                future.set_result(message)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(RuntimeError(f"client process exited: {self.stderr_tail[-5:]}"))

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.stderr_tail = [*self.stderr_tail[-20:], line.decode(errors="replace").rstrip()]

    async def call(self, cmd: str, within: float = 300.0, **args: Any) -> dict[str, Any]:
        self.next_ref += 1
        ref = self.next_ref
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[ref] = future
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"cmd": cmd, "ref": ref, **args}) + "\n").encode())
        await self.process.stdin.drain()
        answer = await asyncio.wait_for(future, within)
        if answer.get("type") == "error":
            raise RuntimeError(f"client process failed on {cmd}: {answer.get('message')}")
        return answer

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self.call("exit", within=5)
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self.reader is not None:
            await self.reader


class Fleet:
    """Clients spread over several Node processes, each in its own user room."""

    def __init__(self, procs: list[ClientProcess]):
        self.procs = procs

    @classmethod
    async def start(
        cls, url: str, user_ids: Sequence[int], tokens: dict[int, str], per_process: int
    ) -> Fleet:
        fleet = cls([])
        await fleet.add(url, user_ids, tokens, per_process)
        return fleet

    async def add(self, url: str, user_ids: Sequence[int], tokens: dict[int, str], per_process: int) -> None:
        chunks = [list(user_ids[i : i + per_process]) for i in range(0, len(user_ids), per_process)]
        procs = await asyncio.gather(*(ClientProcess.spawn(chunk) for chunk in chunks))
        await asyncio.gather(
            *(
                proc.call(
                    "setup", url=url, users=[[uid, tokens[uid]] for uid in proc.users], track=[SYNC_EVENT]
                )
                for proc in procs
            )
        )
        self.procs.extend(procs)

    @property
    def size(self) -> int:
        return sum(len(proc.users) for proc in self.procs)

    async def each(self, cmd: str, within: float = 300.0, **args: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(proc.call(cmd, within=within, **args) for proc in self.procs)))

    async def connect(
        self, concurrency: int, timeout_ms: int = 30_000, deadline_s: float = 0
    ) -> dict[str, Any]:
        """Connect every client not connected yet; a summary over all processes.

        `concurrency` 0 starts every handshake at once (a storm); otherwise it is the number of
        handshakes in flight across the fleet, shared by the processes with clients to connect.
        """
        procs = self.procs
        per_process = 0
        if concurrency:
            statuses = await self.each("status", within=30)
            procs = [p for p, st in zip(self.procs, statuses, strict=True) if st["connected"] < len(p.users)]
            per_process = max(1, concurrency // max(1, len(procs)))
        started = now_ms()
        answers = await asyncio.gather(
            *(
                proc.call(
                    "connect",
                    within=max(300.0, deadline_s + timeout_ms / 1000 + 60),
                    concurrency=per_process,
                    timeoutMs=timeout_ms,
                    deadlineMs=int(deadline_s * 1000),
                )
                for proc in procs
            )
        )
        if not answers:
            return {
                "sent": started,
                "start": started,
                "end": started,
                "ok": 0,
                "failed": 0,
                "skipped": 0,
                "errors": {},
                "lat": [],
            }
        errors = added(answers, "errors")
        return {
            "sent": started,
            "start": min(a["start"] for a in answers),
            "end": max(a["end"] for a in answers),
            "ok": sum(a["ok"] for a in answers),
            "failed": sum(a["failed"] for a in answers),
            "skipped": sum(a.get("skipped", 0) for a in answers),
            "errors": errors,
            "lat": [lat for a in answers for lat in a["lat"]],
        }

    async def connect_paced(
        self,
        deadline_s: float,
        *,
        start: int = CONNECT_CONCURRENCY,
        most: int = CONNECT_MAX_IN_FLIGHT,
        timeout_ms: int = 30_000,
    ) -> dict[str, Any]:
        """Connect every client not connected yet, in batches whose handshakes in flight adapt.

        Each batch (about CONNECT_BATCH_SECONDS at the best rate so far, at least 8 per slot)
        measures the handshake rate at its number of handshakes in flight (slots); the next batch
        takes the best of half, the same and double the slots (see `_next_slots`). No batch starts
        after `deadline_s`: the clients left are `skipped`. Each client is tried once per call.
        The same summary as `connect`, plus the batches.
        """
        phase = secrets.token_hex(4)
        statuses = await self.each("status", within=30)
        left = {
            id(proc): len(proc.users) - st["connected"] for proc, st in zip(self.procs, statuses, strict=True)
        }
        slots, best = max(1, start), 0.0
        rates: dict[int, tuple[float, int]] = {}  # slots -> (rate, batch it was last measured in)
        started = now_ms()
        ok = failed = 0
        errors: dict[str, int] = {}
        lat: list[float] = []
        batches: list[dict[str, Any]] = []
        end = started
        while True:
            active = [proc for proc in self.procs if left[id(proc)] > 0]
            if not active or (now_ms() - started) / 1000 >= deadline_s:
                break
            size = max(8 * slots, 50, int(best * CONNECT_BATCH_SECONDS))
            share = max(1, -(-size // len(active)))
            per_process = max(1, slots // len(active))
            batch_start = now_ms()
            answers = await asyncio.gather(
                *(
                    proc.call(
                        "connect",
                        within=timeout_ms / 1000 + 120,
                        concurrency=per_process,
                        timeoutMs=timeout_ms,
                        limit=share,
                        phase=phase,
                    )
                    for proc in active
                )
            )
            batch_ok = sum(a["ok"] for a in answers)
            batch_failed = sum(a["failed"] for a in answers)
            batch_end = max(a["end"] for a in answers)
            end = max(end, batch_end)
            for proc, answer in zip(active, answers, strict=True):
                left[id(proc)] = answer["left"]
                for code, count in answer["errors"].items():
                    errors[code] = errors.get(code, 0) + count
                lat += answer["lat"]
            ok += batch_ok
            failed += batch_failed
            seconds = max(batch_end - batch_start, 1.0) / 1000
            rate = batch_ok / seconds
            batches.append(
                {
                    "in_flight": per_process * len(active),
                    "tried": batch_ok + batch_failed,
                    "failed": batch_failed,
                    "per_second": round(rate, 1),
                }
            )
            best = max(best, rate)
            slots = _next_slots(rates, slots, rate, bool(batch_failed), len(batches), most)
        return {
            "sent": started,
            "start": started,
            "end": end,
            "ok": ok,
            "failed": failed,
            "skipped": sum(left.values()),
            "errors": errors,
            "lat": lat,
            "batches": batches,
            "best_per_second": round(best, 1),
        }

    async def await_key(self, key: str, timeout_ms: int) -> dict[str, Any]:
        """Wait until every connected client received the notification `key`."""
        answers = await self.each("await", key=key, timeoutMs=timeout_ms)
        return {
            "count": sum(a["count"] for a in answers),
            "dups": sum(a["dups"] for a in answers),
            "times": [t for a in answers for t in a["times"]],
            "sample": next((a["sample"] for a in answers if a.get("sample")), None),
            "gc": [a.get("gc", []) for a in answers],  # each process's collections since its last await
        }

    async def await_event(self, event: str, timeout_ms: int) -> dict[str, Any]:
        """Wait until every connected client received `event` since it connected."""
        answers = await self.each("awaitEvent", event=event, timeoutMs=timeout_ms)
        return {
            "count": sum(a["count"] for a in answers),
            "expected": sum(a["expected"] for a in answers),
            "times": [t for a in answers for t in a["times"]],
        }

    async def read(self, notification_id: str, count: int, timeout_ms: int) -> dict[str, Any]:
        """The first `count` clients of the fleet (in process order) mark `notification_id` read
        at once; their acks summed by outcome, the readers, and the documentIds the acks name."""
        shares = []
        left = count
        for proc in self.procs:
            shares.append(min(left, len(proc.users)))
            left -= shares[-1]
        sent = now_ms()
        answers = await asyncio.gather(
            *(
                proc.call(
                    "read",
                    event=READ_EVENT,
                    notificationId=notification_id,
                    count=share,
                    timeoutMs=timeout_ms,
                    within=timeout_ms / 1000 + 60,
                )
                for proc, share in zip(self.procs, shares, strict=True)
                if share
            )
        )
        acks = added(answers, "acks")
        return {
            "sent": sent,
            "all_acks_ms": round(max(a["end"] for a in answers) - sent, 2),
            "ack_ms": summary([t - sent for a in answers for t in a["times"]]),
            "acks": acks,
            "readers": sorted(uid for a in answers for uid in a["readers"]),
            "document_ids": sorted({d for a in answers for d in a["documentIds"]}),
        }

    async def status(self) -> dict[str, Any]:
        answers = await self.each("status", within=30)
        dropped = added(answers, "dropped")
        return {"connected": sum(a["connected"] for a in answers), "dropped": dropped}

    async def collect(self) -> float:
        """Empty every client process's young generation (a minor collection, at once); the
        longest one's ms.

        Run before each measured publication: the clients' own collector then does not pause a
        process in the middle of one round's receipts and not another's, whichever server's round
        it falls on. A full collection instead made every round slower (both servers' by 30-50 ms;
        likely the heap it shrinks growing again during the round), so only the young generation."""
        answers = await self.each("collect", within=60)
        if not all(answer.get("exposed") for answer in answers):
            raise RuntimeError("client processes were started without --expose-gc")
        return round(max((answer["ms"] for answer in answers), default=0.0), 1)

    def cpu_seconds(self) -> float:
        """CPU time the client processes have used so far (every thread: V8's background
        collector threads too), summed."""
        return sum(cpu_seconds(proc.process.pid) for proc in self.procs)

    async def collections(self) -> list[list[Any]]:
        """Every client process's garbage collections since the last `await_key` or this call,
        `[start (wall ms), ms, kind]` each (kind 4: a full one)."""
        return [each for answer in await self.each("gcs", within=30) for each in answer["gc"]]

    async def disconnect(self) -> None:
        await self.each("disconnect", within=60)

    async def close(self) -> None:
        await asyncio.gather(*(proc.close() for proc in self.procs))
        self.procs = []
