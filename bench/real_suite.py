"""Scenarios against the real Strapi 5 of strapi-fixtures/: what the sidecar adds to a publication,
and a read storm whose READNOTIFICATION is checked exactly.

Strapi's webhook points at one port; the sidecar, then the Node baseline, listens there, so both
get Strapi's own deliveries. Strapi requests are counted from Strapi's log (one `http:` line per
request it answered).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import re
import secrets
import sqlite3
import string
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

import httpx

from bench.fake_suite import STORM_AFTERMATH_S, STORM_TIMEOUT_MS, guarded, health_probe, responsive, restart
from bench.procs import (
    LOGS,
    NOTIFICATION_EVENT,
    ROOT,
    SYNC_EVENT,
    Fleet,
    Secrets,
    ServerUnderTest,
    emit_ms,
    free_port,
    make_server,
    now_ms,
    sign_tokens,
)
from bench.receiver import BareReceiver
from bench.stats import median, median_of, summary

log = logging.getLogger("bench")

READ_TIMEOUT_MS = 150_000  # a reader waits this long for its ack
PUBLICATION_TARGET = 1.05  # last client / Strapi answer (the target)
REST_SAMPLE_USERS = 20
REST_SAMPLE_CONCURRENCY = 4
LOG_LINE = re.compile(r"http\S*: (GET|POST|PUT|DELETE|PATCH) (\S+) \((\d+) ms\) (\d{3})")
ALPHABET = string.ascii_lowercase + string.digits


@dataclass
class RealOptions:
    servers: list[str]
    users: int
    reads: int
    rounds: int
    per_process: int
    profile: bool
    connect_deadline: float


def load_launcher() -> ModuleType:
    path = ROOT / "strapi-fixtures" / "launcher.py"
    spec = importlib.util.spec_from_file_location("strapi_launcher", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("strapi_launcher", module)
    spec.loader.exec_module(module)
    return module


def route_of(path: str) -> str:
    """`/api/users/12?x` -> `/api/users/:id`; documentIds -> `:documentId`."""
    path = path.split("?", 1)[0]
    path = re.sub(r"^/api/users/\d+$", "/api/users/:id", path)
    return re.sub(r"^(/api/[a-z-]+)/(?!count$)[A-Za-z0-9]{10,}$", r"\1/:documentId", path)


class StrapiLog:
    """Counts the requests Strapi logged since a mark."""

    def __init__(self, path: Path):
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    async def quiesce(
        self, quiet: float = 1.0, within: float = 300.0, server: ServerUnderTest | None = None
    ) -> float:
        """Wait until Strapi logs nothing new for `quiet` s (and `server` answers /healthz
        promptly: a stalled server is not done); return how long that took."""
        started = time.monotonic()
        size = -1
        while time.monotonic() - started < within:
            now = self.mark()
            if now == size and (server is None or await responsive(server)):
                return time.monotonic() - started - quiet
            size = now
            await asyncio.sleep(quiet)
        log.warning("Strapi kept logging requests for %.0f s", within)
        return within

    def users_asked(self, mark: int) -> dict[str, int]:
        """Users named by requests since `mark`: `GET /api/users/:id`, or an id filter on
        `GET /api/users` (a batched check), as Strapi logged them (with their query strings)."""
        with self.path.open("rb") as handle:
            handle.seek(mark)
            text = handle.read().decode(errors="replace")
        asked: Counter[int] = Counter()
        for match in LOG_LINE.finditer(text):
            if match.group(1) != "GET":
                continue
            path, _, query = match.group(2).partition("?")
            if one := re.fullmatch(r"/api/users/(\d+)", path):
                asked[int(one.group(1))] += 1
            elif path == "/api/users" and query:
                for key, value in parse_qsl(query):
                    if re.fullmatch(r".*\[id\]\[\$(in|eq)\](\[\d+\])?", key) and value.isdecimal():
                        asked[int(value)] += 1
        return {
            "total": sum(asked.values()),
            "distinct": len(asked),
            "max_per_user": max(asked.values(), default=0),
        }

    async def since(self, mark: int, settle: float = 0.5) -> Counter[str]:
        await asyncio.sleep(settle)  # Strapi writes the line when it answers
        with self.path.open("rb") as handle:
            handle.seek(mark)
            text = handle.read().decode(errors="replace")
        counts: Counter[str] = Counter()
        for match in LOG_LINE.finditer(text):
            method, path = match.group(1), match.group(2)
            if path.startswith("/_health"):
                continue
            counts[f"{method} {route_of(path)}"] += 1
        return counts


class RealBench:
    def __init__(self, options: RealOptions, secrets_: Secrets):
        self.o = options
        self.secrets = secrets_
        self.results: dict[str, Any] = {}
        self.port = free_port()
        self.http: httpx.AsyncClient | None = None
        self.strapi_log = StrapiLog(LOGS / "strapi.log")

    def api(self) -> httpx.AsyncClient:
        assert self.http is not None
        return self.http

    async def run(self) -> dict[str, Any]:
        launcher = load_launcher()
        LOGS.mkdir(parents=True, exist_ok=True)
        strapi = launcher.StrapiFixture(
            api_token=self.secrets.api_token,
            webhook_url=f"http://127.0.0.1:{self.port}/webhooks/strapi",
            webhook_secret=self.secrets.webhook_secret,
            jwt_secret=self.secrets.jwt_secret,
            log_path=str(self.strapi_log.path),
        )
        durations: dict[str, float] = {}
        self.results["durations_s"] = durations
        t0 = time.monotonic()
        await asyncio.to_thread(strapi.start)
        self.results["strapi_start_s"] = durations["Strapi start"] = round(time.monotonic() - t0, 1)
        self.http = httpx.AsyncClient(
            base_url=strapi.url,
            headers={"Authorization": f"Bearer {self.secrets.api_token}"},
            timeout=120,
        )
        fleet: Fleet | None = None
        try:
            t0 = time.monotonic()
            users = await self.create_users(strapi.database_path)
            tokens = sign_tokens(self.secrets.jwt_secret, users)
            durations["users"] = round(time.monotonic() - t0, 1)
            for kind in self.o.servers:
                t0 = time.monotonic()
                server = make_server(kind, self.port, strapi.url, self.secrets, "real", big_webhooks=False)
                server.start()
                try:
                    await server.ready()
                    if fleet is None:
                        fleet = await Fleet.start(server.url, users, tokens, self.o.per_process)
                    out = self.results.setdefault(kind, {"errors": []})
                    await guarded(out, server, "real Strapi", self.run_server(server, fleet, users, out))
                    if not strapi.running:  # nothing of ours stops it; say so rather than guess
                        tail = strapi.log_tail(15)
                        out["errors"].append(
                            {"scenario": "real Strapi", "error": "Strapi stopped", "log": tail}
                        )
                        log.error("Strapi stopped during the %s run; its log ends:\n%s", kind, tail)
                        break
                finally:
                    if fleet is not None:
                        await fleet.disconnect()
                    self.results.setdefault(kind, {})["exit_code"] = server.stop()
                    self.results[kind]["log"] = str(server.log_path)
                    durations[kind] = round(time.monotonic() - t0, 1)
            if strapi.running:  # last: its publications are then no part of the servers' catch-ups
                t0 = time.monotonic()
                try:
                    self.results["bare"] = await self.bare_webhooks(users)
                except Exception as exc:  # the servers' figures stand without it
                    log.exception("the bare receiver's publications failed")
                    self.results["bare"] = {"error": f"{type(exc).__name__}: {exc}"}
                durations["bare receiver"] = round(time.monotonic() - t0, 1)
        finally:
            if fleet is not None:
                await fleet.close()
            await self.api().aclose()
            await asyncio.to_thread(strapi.close)
        self.results["strapi_log"] = str(self.strapi_log.path)
        return self.results

    # -- users -------------------------------------------------------------------------------

    async def create_users(self, database: Path) -> list[int]:
        """A few users through REST (timed), the rest cloned from one of them in SQLite."""
        roles = (await self.api().get("/api/users-permissions/roles")).json()["roles"]
        role = int(next(r["id"] for r in roles if r["type"] == "authenticated"))
        prefix = "b" + secrets.token_hex(3)
        semaphore = asyncio.Semaphore(REST_SAMPLE_CONCURRENCY)

        async def create(index: int) -> int:
            async with semaphore:
                response = await self.api().post(
                    "/api/users",
                    json={
                        "username": f"{prefix}rest{index}",
                        "email": f"{prefix}rest{index}@example.com",
                        "password": "Passw0rd!",
                        "confirmed": True,
                        "blocked": False,
                        "role": role,
                    },
                )
                response.raise_for_status()
                return int(response.json()["id"])

        t0 = time.monotonic()
        rest_ids = await asyncio.gather(*(create(i) for i in range(REST_SAMPLE_USERS)))
        rest_seconds = time.monotonic() - t0
        t0 = time.monotonic()
        ids = await asyncio.to_thread(self._clone_users, database, rest_ids[0], prefix, self.o.users)
        sql_seconds = time.monotonic() - t0
        count = (await self.api().get("/api/users/count")).json()
        rate = REST_SAMPLE_USERS / rest_seconds
        self.results["users"] = {
            "rest_sample": REST_SAMPLE_USERS,
            "rest_concurrency": REST_SAMPLE_CONCURRENCY,
            "rest_per_s": round(rate, 1),
            "rest_estimate_s_for_all": round(self.o.users / rate, 1),
            "sql_cloned": len(ids),
            "sql_s": round(sql_seconds, 2),
            "strapi_user_count": count,
        }
        log.info(
            "%d users by REST at %.1f/s (all %d would take %.0f s); %d cloned in SQLite in %.2f s",
            REST_SAMPLE_USERS,
            rate,
            self.o.users,
            self.o.users / rate,
            len(ids),
            sql_seconds,
        )
        if count != REST_SAMPLE_USERS + len(ids):
            raise RuntimeError(f"Strapi counts {count} users, expected {REST_SAMPLE_USERS + len(ids)}")
        return ids

    @staticmethod
    def _clone_users(database: Path, template_id: int, prefix: str, count: int) -> list[int]:
        """Copy a REST-created user (password hash, role) `count` times, in one transaction."""
        db = sqlite3.connect(database, timeout=30)
        try:
            db.row_factory = sqlite3.Row
            template = dict(db.execute("SELECT * FROM up_users WHERE id = ?", (template_id,)).fetchone())
            link = dict(
                db.execute("SELECT * FROM up_users_role_lnk WHERE user_id = ?", (template_id,)).fetchone()
            )
            columns = [name for name in template if name != "id"]
            rows = []
            for index in range(count):
                row = dict(template)
                row["document_id"] = "".join(secrets.choice(ALPHABET) for _ in range(24))
                row["username"] = f"{prefix}sql{index}"
                row["email"] = f"{prefix}sql{index}@example.com"
                rows.append([row[name] for name in columns])
            marks = ", ".join("?" for _ in columns)
            with db:
                db.executemany(f"INSERT INTO up_users ({', '.join(columns)}) VALUES ({marks})", rows)  # noqa: S608
                ids = [
                    int(r["id"])
                    for r in db.execute(
                        "SELECT id FROM up_users WHERE username LIKE ? ORDER BY id", (f"{prefix}sql%",)
                    )
                ]
                db.executemany(
                    "INSERT INTO up_users_role_lnk (user_id, role_id, user_ord) VALUES (?, ?, ?)",
                    [(uid, link["role_id"], link["user_ord"]) for uid in ids],
                )
            return ids
        finally:
            db.close()

    # -- one server --------------------------------------------------------------------------

    async def run_server(
        self, server: ServerUnderTest, fleet: Fleet, users: list[int], out: dict[str, Any]
    ) -> None:
        before = await fleet.status()  # the fleet outlives servers: count this server's drops only
        # Every client at once against a fresh server (a deploy): the connect storm, for real.
        mark = self.strapi_log.mark()
        connected = await fleet.connect(concurrency=0, timeout_ms=STORM_TIMEOUT_MS)
        seconds = (connected["end"] - connected["sent"]) / 1000
        health_ms = await health_probe(server)
        synced = None
        if server.kind == "sidecar" and connected["ok"]:
            wait_ms = STORM_TIMEOUT_MS if not connected["failed"] else 5_000  # a miss already
            got = await fleet.await_event(SYNC_EVENT, timeout_ms=wait_ms)
            if got["times"]:
                synced = round((max(got["times"]) - connected["sent"]) / 1000, 2)
        # Catch-ups after the connects. A failed storm is followed by a restart, so its aftermath
        # (abandoned handshakes still asking Strapi) is only waited for so long.
        within = STORM_AFTERMATH_S * 2 if connected["failed"] else 300.0
        busy = await self.strapi_log.quiesce(server=server, within=within)
        requests = await self.strapi_log.since(mark, settle=0)
        asked = self.strapi_log.users_asked(mark)
        total = sum(requests.values())
        out["storm"] = {
            "clients": len(users),
            "ok": connected["ok"],
            "failed": connected["failed"],
            "errors": connected["errors"],
            "all_in_s": round(seconds, 2),
            "latency_ms": summary(connected["lat"]),
            "healthz_ms_after": health_ms,
            "all_synced_s": synced,
            "strapi_requests": dict(requests),
            "strapi_requests_total": total,
            "requests_per_user": round(total / len(users), 3),
            "users_asked": asked,  # the "asking Strapi about each user at most once"
            "lookups_per_user": round(asked["total"] / len(users), 3),
            "max_lookups_of_one_user": asked["max_per_user"],
            "strapi_busy_for_s": round(max(busy, 0.0) + seconds, 1),
            "strapi_busy_capped": busy >= within,
        }
        log.info(
            "real %s storm: %d clients connected after %.1f s (%d failed %s), /healthz then took %s ms,"
            " %d Strapi requests%s",
            server.kind,
            connected["ok"],
            seconds,
            connected["failed"],
            connected["errors"] or "",
            health_ms,
            total,
            f", all synced after {synced} s" if synced is not None else "",
        )
        if connected["failed"]:
            # The rest needs every client, on a server not busy with abandoned handshakes.
            await fleet.disconnect()
            await restart(server)
            mark = self.strapi_log.mark()
            again = await fleet.connect_paced(deadline_s=self.o.connect_deadline)
            seconds = (again["end"] - again["start"]) / 1000
            busy = await self.strapi_log.quiesce(server=server)
            requests = await self.strapi_log.since(mark, settle=0)
            out["paced_connect"] = {
                "ok": again["ok"],
                "failed": again["failed"],
                "errors": again["errors"],
                "seconds": round(seconds, 1),
                "per_second": round(again["ok"] / seconds, 1) if seconds > 0 else None,
                "strapi_requests": dict(requests),
                "strapi_busy_for_s": round(max(busy, 0.0) + seconds, 1),
            }
            log.info(
                "real %s: restarted, %d clients connected at a steady pace in %.1f s (%d failed)",
                server.kind,
                again["ok"],
                seconds,
                again["failed"],
            )
        # One publication first, not counted, as in the fake fan-out: Strapi's first publication
        # to this many users and its webhooks are slower (its webhook came 115 ms after its
        # answer, against 37-46 ms after), and so are the first notifications the fleet handles.
        # Each server gets its own: the one measured second would otherwise find Strapi warm.
        warm_up = await self.publish(server, fleet, users, "warm-up")
        await asyncio.sleep(1.0)
        publications = []
        for index in range(self.o.rounds):
            publications.append(await self.publish(server, fleet, users, f"{index + 1}"))
            await asyncio.sleep(1.0)
        delivered = [p for p in publications if not p["webhook_lost"]] or publications
        ratios = [p["ratio"] for p in delivered if p["ratio"] is not None]
        out["publish"] = {
            "rounds": publications,
            "warm_up": warm_up,
            "webhooks_lost": sum(p["webhook_lost"] for p in publications),
            # medians over the publications whose webhook Strapi delivered
            "strapi_answer_ms_median": median([p["strapi_answer_ms"] for p in delivered]),
            "last_client_ms_median": median([p["last_ms"] or 0 for p in delivered]),
            "ratio_median": median_of(ratios, 3),
            # where a publication's time after Strapi's answer goes: until the first client has
            # it (Strapi's webhook delay, then the server's start), then to the last client
            "first_after_answer_ms_median": median_of(
                [p["first_ms"] - p["strapi_answer_ms"] for p in delivered if p["first_ms"] is not None]
            ),
            "first_to_last_ms_median": median_of(
                [p["last_ms"] - p["first_ms"] for p in delivered if p["first_ms"] is not None]
            ),
            # of which the server's own writing (the sidecar says; the rest is the clients')
            "server_emit_ms_median": median_of([p.get("server_emit_ms") for p in delivered]),
            "missing": sum(p["expected"] - p["count"] for p in delivered),
            "duplicates": sum(p["dups"] for p in publications),
        }
        if server.kind == "sidecar" and self.o.reads:
            out["reads"] = await self.read_storm(server, fleet, publications)
        after = await fleet.status()
        dropped = {
            reason: count - before["dropped"].get(reason, 0)
            for reason, count in after["dropped"].items()
            if count > before["dropped"].get(reason, 0)
        }
        out["clients"] = {"connected": after["connected"], "dropped": dropped}

    async def post_notification(self, users: list[int], label: str) -> tuple[dict[str, Any], float, float]:
        """`POST /api/notifications` for `users` (Strapi creates and publishes it): the created
        entry, and when the request was sent and answered (ms)."""
        data = {
            "message": f"bench real {label}",
            "url": "/bench",
            "date": "2026-01-01",
            "notification_users": users,
        }
        sent = now_ms()
        response = await self.api().post("/api/notifications", json={"data": data})
        answered = now_ms()
        response.raise_for_status()
        return response.json()["data"], sent, answered

    async def publish(
        self, server: ServerUnderTest, fleet: Fleet, users: list[int], label: str
    ) -> dict[str, Any]:
        await self.strapi_log.quiesce(quiet=0.5, server=server)
        mark = self.strapi_log.mark()
        server_mark = server.log_mark()
        totals_before = await server.metric_totals(NOTIFICATION_EVENT)
        await fleet.collect()  # as before a fan-out round (`Fleet.collect`)
        created, sent, answered = await self.post_notification(users, label)
        document_id = str(created["documentId"])
        # A webhook Strapi lost: the sidecar's reconciler still delivers it (within ~30 s), the
        # Node baseline never does, so it is not waited for as long.
        got = await fleet.await_key(document_id, timeout_ms=60_000 if server.kind == "sidecar" else 15_000)
        lat = [t - sent for t in got["times"]]
        await self.strapi_log.quiesce(quiet=0.5, server=server)
        totals_after = await server.metric_totals(NOTIFICATION_EVENT)
        requests = await self.strapi_log.since(mark, settle=0)
        requests["POST /api/notifications"] -= 1  # our own publication
        requests += Counter()  # drop zero counts
        server_log = server.log_since(server_mark)
        answer_ms = answered - sent
        last = max(lat) if lat else None
        result = {
            "document_id": document_id,
            "published_id": created.get("id"),
            "expected": len(users),
            "count": got["count"],
            "dups": got["dups"],
            "strapi_answer_ms": round(answer_ms, 1),
            "last_ms": round(last, 1) if last is not None else None,
            "first_ms": round(min(lat), 1) if lat else None,
            "sent_at": sent,
            "latency_ms": summary(lat),
            "ratio": round(last / answer_ms, 3) if last is not None else None,
            "server_emit_ms": emit_ms(totals_before, totals_after),
            "server_strapi_requests": dict(requests),
            # Strapi drops a webhook now and then (see bench/README.md): the sidecar's reconciler
            # finds the notification later; the Node baseline never hears of it.
            "webhook_lost": got["count"] == 0 or "without a webhook" in server_log,
        }
        log.info(
            "real %s publication %s: Strapi answered in %.0f ms, last client after %s ms (%d/%d)",
            server.kind,
            label,
            answer_ms,
            result["last_ms"],
            got["count"],
            len(users),
        )
        return result

    # -- Strapi's own webhook delay ----------------------------------------------------------

    async def bare_webhooks(self, users: list[int]) -> dict[str, Any]:
        """The same publications with a bare receiver in the server's place (bench/receiver.py):
        when Strapi's `entry.publish` arrives after its answer, the floor of "last client /
        Strapi answer" for any service driven by Strapi's webhooks. One warm-up first, as the
        servers get."""
        async with BareReceiver(self.port, self.secrets.webhook_secret) as receiver:
            warm_up = await self._bare_round(receiver, users, "bare warm-up")
            rounds = [await self._bare_round(receiver, users, f"bare {i + 1}") for i in range(self.o.rounds)]
        done = [r for r in rounds if "error" not in r]
        arrived = [r for r in done if r["publish_after_answer_ms"] is not None]

        def timed(key: str) -> list[float]:
            return [r[key] for r in arrived if r[key] is not None]

        return {
            "rounds": rounds,
            "warm_up": warm_up,
            "failed": len(rounds) - len(done),  # the POST itself failed: nothing to time
            "webhooks_lost": len(done) - len(arrived),
            "refused": receiver.refused,  # deliveries without the webhook secret (401)
            "strapi_answer_ms_median": median_of(timed("strapi_answer_ms")),
            "publish_after_answer_ms_median": median_of(timed("publish_after_answer_ms")),
            "publish_after_answer_ms_max": max(timed("publish_after_answer_ms"), default=None),
            "create_after_answer_ms_median": median_of(timed("create_after_answer_ms")),
            "stamped_after_answer_ms_median": median_of(timed("stamped_after_answer_ms")),
            "floor_ratio_median": median_of(timed("floor_ratio"), 3),
            "floor_ratio_max": max(timed("floor_ratio"), default=None),
            "floor_over_target": sum(ratio > PUBLICATION_TARGET for ratio in timed("floor_ratio")),
        }

    async def _bare_round(self, receiver: BareReceiver, users: list[int], label: str) -> dict[str, Any]:
        """One publication to the bare receiver; a failed one is kept as its error."""
        try:
            return await self.publish_bare(receiver, users, label)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            log.warning("real bare receiver publication %s failed: %s", label, exc)
            return {"error": f"{type(exc).__name__}: {exc}"}

    async def publish_bare(self, receiver: BareReceiver, users: list[int], label: str) -> dict[str, Any]:
        await self.strapi_log.quiesce(quiet=0.5)
        created, sent, answered = await self.post_notification(users, label)
        document_id = str(created["documentId"])
        publish = await receiver.wait_for(document_id, "entry.publish", within=15.0)
        create = await receiver.wait_for(document_id, "entry.create", within=0.5)
        answer_ms = answered - sent

        def after_answer(at: float | None) -> float | None:
            return round(at - answered, 1) if at is not None else None

        result = {
            "document_id": document_id,
            "sent_at": sent,
            "strapi_answer_ms": round(answer_ms, 1),
            "publish_after_answer_ms": after_answer(publish.received_ms if publish else None),
            "create_after_answer_ms": after_answer(create.received_ms if create else None),
            "stamped_after_answer_ms": after_answer(publish.stamped_ms if publish else None),
            "publish_bytes": publish.size if publish else None,
            "floor_ratio": round((publish.received_ms - sent) / answer_ms, 3) if publish else None,
        }
        log.info(
            "real bare receiver publication %s: Strapi answered in %.0f ms, entry.publish %s ms later",
            label,
            answer_ms,
            result["publish_after_answer_ms"],
        )
        await asyncio.sleep(1.0)  # as between the servers' publications
        return result

    # -- reads -------------------------------------------------------------------------------

    async def readers_of(self, document_id: str) -> list[list[int]]:
        response = await self.api().get(
            "/api/read-notifications",
            params={
                "filters[notification][documentId][$eq]": document_id,
                "populate[users_permissions_users][fields][0]": "id",
                "pagination[pageSize]": 100,
            },
        )
        response.raise_for_status()
        return [sorted(int(u["id"]) for u in r["users_permissions_users"]) for r in response.json()["data"]]

    async def read_storm(
        self, server: ServerUnderTest, fleet: Fleet, publications: list[dict[str, Any]]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        single_target = publications[0]
        await self.strapi_log.quiesce(quiet=0.5, server=server)
        mark = self.strapi_log.mark()
        first = await fleet.read(str(single_target["published_id"]), 1, timeout_ms=READ_TIMEOUT_MS)
        await self.strapi_log.quiesce(quiet=0.5, server=server)
        first_requests = await self.strapi_log.since(mark, settle=0)
        mark = self.strapi_log.mark()
        again = await fleet.read(str(single_target["published_id"]), 1, timeout_ms=READ_TIMEOUT_MS)
        await self.strapi_log.quiesce(quiet=0.5, server=server)
        again_requests = await self.strapi_log.since(mark, settle=0)
        state = await self.readers_of(single_target["document_id"])
        out["single"] = {
            "acks": first["acks"],
            "ms": first["all_acks_ms"],
            "strapi_requests": sum(first_requests.values()),
            "by_route": dict(first_requests),
            "again_acks": again["acks"],
            "again_strapi_requests": sum(again_requests.values()),
            "exact": first["acks"] == {"ok alreadyRead=false": 1}
            and again["acks"] == {"ok alreadyRead=true": 1}
            and state == [first["readers"]],
        }
        target = publications[-1]
        count = min(self.o.reads, fleet.size)
        mark = self.strapi_log.mark()
        burst = await fleet.read(str(target["published_id"]), count, timeout_ms=READ_TIMEOUT_MS)
        busy = await self.strapi_log.quiesce(quiet=2.0, server=server)
        requests = await self.strapi_log.since(mark, settle=0)
        state = await self.readers_of(target["document_id"])
        total = sum(requests.values())
        checks = {
            "every_ack_ok_and_first_read": burst["acks"] == {"ok alreadyRead=false": count},
            "acks_name_the_document": burst["document_ids"] == [target["document_id"]],
            "one_readnotification": len(state) == 1,
            "its_users_are_exactly_the_readers": len(state) == 1 and state[0] == burst["readers"],
        }
        out["burst"] = {
            "readers": count,
            "all_acks_ms": burst["all_acks_ms"],
            "strapi_busy_after_acks_s": round(max(busy, 0.0), 1),
            "ack_ms": burst["ack_ms"],
            "acks": burst["acks"],
            "strapi_requests": total,
            "requests_per_read": round(total / count, 3),
            "by_route": dict(requests),
            "readnotifications": len(state),
            "users_in_readnotification": [len(users_) for users_ in state],
            "checks": checks,
            "exact": all(checks.values()),
        }
        log.info(
            "sidecar read storm %d (real Strapi): all acks in %.0f ms, %d Strapi requests, exact=%s",
            count,
            burst["all_acks_ms"],
            total,
            out["burst"]["exact"],
        )
        return out
