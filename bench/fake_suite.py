"""Scenarios against the fast fake Strapi: fan-out, memory, connect rate, connect storm, read storm.

Each server (the sidecar, then the Node baseline) gets the same clients, the same users, the same
webhook bodies and the same fake Strapi, one server at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import subprocess
import sys
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.fake_strapi import STAMP, user_document_id
from bench.procs import (
    NOTIFICATION_EVENT,
    RESULTS,
    SYNC_EVENT,
    FakeStrapiProcess,
    Fleet,
    RedisProcess,
    Secrets,
    ServerUnderTest,
    cpu_seconds,
    direct_writes,
    emit_ms,
    free_port,
    gc_ms,
    make_server,
    now_ms,
    rss_kib,
)
from bench.stats import median, median_of, summary, total_of

log = logging.getLogger("bench")

NOTIFICATION_UID = "api::notification.notification"
READ_TIMEOUT_MS = 120_000  # a reader waits this long for its ack
STORM_TIMEOUT_MS = 20_000  # a handshake not answered by then counts as failed (target: 10 s)
STORM_AFTERMATH_S = 15.0  # after a storm with failures, how long to wait for the server to settle
WARMUP_USERS = 20
# A fan-out round's server CPU is also taken this long after its last client got it
# (`cpu_ms_per_publication`).
AFTER_LAST_S = 0.6


@dataclass
class FakeOptions:
    servers: list[str]
    sizes: list[int]
    rounds: int
    storm_size: int
    reads: int
    per_process: int
    scenarios: set[str]
    profile: bool
    connect_deadline: float
    scaleout_sizes: list[int] = field(default_factory=list)


def strapi_user(uid: int) -> dict[str, Any]:
    """A user as Strapi 5.54 puts it in a webhook's populated relation."""
    return {
        "id": uid,
        "documentId": user_document_id(uid),
        "username": f"bench{uid}",
        "email": f"bench{uid}@example.com",
        "provider": "local",
        "confirmed": True,
        "blocked": False,
        "createdAt": STAMP,
        "updatedAt": STAMP,
        "publishedAt": STAMP,
    }


def webhook_body(document_id: str, published_id: int, users: range | list[int], message: str) -> bytes:
    """Strapi 5.54's `entry.publish` delivery for a notification, with its users populated."""
    entry = {
        "id": published_id,
        "documentId": document_id,
        "message": message,
        "url": "/bench",
        "date": "2026-01-01",
        "allUsers": False,
        "createdAt": STAMP,
        "updatedAt": STAMP,
        "publishedAt": STAMP,
        "document": None,
        "notification_users": [strapi_user(uid) for uid in users],
    }
    payload = {
        "event": "entry.publish",
        "createdAt": STAMP,
        "model": "notification",
        "uid": NOTIFICATION_UID,
        "entry": entry,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


class FakeBench:
    """One run of the fake-Strapi scenarios; results go into `self.results`."""

    def __init__(self, options: FakeOptions, secrets_: Secrets, tokens: dict[int, str]):
        self.o = options
        self.secrets = secrets_
        self.tokens = tokens
        self.fake: FakeStrapiProcess | None = None
        self.http = httpx.AsyncClient(timeout=60)
        # Webhooks go out on a fresh connection each, as Strapi sends them (and an idle
        # keep-alive connection may have been closed by the server meanwhile).
        self.hooks = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_keepalive_connections=0))
        self.results: dict[str, Any] = {}
        self.server: ServerUnderTest | None = None  # the one running now
        # Servers kept running after their fan-out, with their largest fleet connected, until
        # the head-to-head rounds (kind -> server, its results, its fleet, that size's entry).
        self._parked: dict[str, tuple[ServerUnderTest, dict[str, Any], Fleet, dict[str, Any]]] = {}
        self._published_id = 5_000_000

    # -- fake Strapi helpers -----------------------------------------------------------------

    @property
    def fake_url(self) -> str:
        assert self.fake is not None
        return self.fake.url

    async def stats(self) -> dict[str, int]:
        return dict((await self.http.get(f"{self.fake_url}/__stats")).json()["counts"])

    async def users_asked(self) -> dict[str, int]:
        """How many times requests named users (by `/api/users/:id` or an id filter) since the reset."""
        return dict((await self.http.get(f"{self.fake_url}/__stats")).json()["users_asked"])

    async def reset_stats(self) -> None:
        (await self.http.post(f"{self.fake_url}/__reset")).raise_for_status()

    async def quiesce(self, quiet: float = 0.5, within: float = 60.0) -> None:
        """Wait until the server stops calling Strapi (catch-ups after connects, say)."""
        deadline = asyncio.get_running_loop().time() + within
        last = -1
        while asyncio.get_running_loop().time() < deadline:
            total = sum((await self.stats()).values())
            # A server too busy to answer /healthz promptly is not done, just not sending yet.
            if total == last and (self.server is None or await responsive(self.server)):
                return
            last = total
            await asyncio.sleep(quiet)
        log.warning("the server kept calling Strapi (or kept busy) for %.0f s", within)

    def next_notification(self) -> tuple[str, int]:
        """A fresh documentId and published id, for add_notification."""
        self._published_id += 10
        return "bench" + secrets.token_hex(8), self._published_id

    async def add_notification(
        self, users: range | list[int], message: str, ids: tuple[str, int] | None = None
    ) -> tuple[str, int]:
        document_id, published_id = ids or self.next_notification()
        body = {
            "documentId": document_id,
            "id": published_id,
            "users": list(users),
            "message": message,
            "url": "/bench",
            "date": "2026-01-01",
        }
        answer = (await self.http.post(f"{self.fake_url}/__notifications", json=body)).json()
        return str(answer["documentId"]), int(answer["id"])

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        users = (
            max([*self.o.sizes, *self.o.scaleout_sizes, self.o.storm_size, self.o.reads])
            + 2 * WARMUP_USERS
            + 100
        )
        self.fake = FakeStrapiProcess(users, self.secrets.api_token)
        self.fake.start()
        try:
            await self.fake.ready()
            # Both servers: the largest fan-out's rounds alternate between them (`head_to_head`).
            park = "fanout" in self.o.scenarios and set(self.o.servers) == {"sidecar", "node"}
            for kind in self.o.servers:
                await self.run_server(kind, park=park)
            if self._parked:
                await self.head_to_head()
            if "scaleout" in self.o.scenarios and "sidecar" in self.o.servers:
                t0 = loop_time()
                out: dict[str, Any] = {"errors": []}
                self.results["scaleout"] = out
                try:
                    await self.scaleout(out)
                except Exception as exc:
                    log.exception("scale-out failed")
                    out["errors"].append({"scenario": "scaleout", "error": f"{type(exc).__name__}: {exc}"})
                out["seconds"] = round(loop_time() - t0, 1)
        finally:
            await self.http.aclose()
            await self.hooks.aclose()
            self.fake.stop()
        return self.results

    async def run_server(self, kind: str, *, park: bool = False) -> dict[str, Any]:
        """Every scenario of one server. `park`: the largest fan-out's rounds are left for
        `head_to_head`, the server running and that fleet connected; the rest follows it."""
        server = make_server(kind, free_port(), self.fake_url, self.secrets, "fake")
        result: dict[str, Any] = {"errors": [], "durations_s": {}}
        self.results[kind] = result
        self.server = server
        server.start()
        try:
            await server.ready()
            if self.o.scenarios & {"fanout", "memory", "connect"}:
                await guarded(
                    result,
                    server,
                    "fan-out/memory/connect",
                    self.fanout_memory_connect(server, result, park=park),
                )
            if kind in self._parked:
                return result
            await self.after_fanout(server, result)
        finally:
            if kind not in self._parked:
                stop_server(server, result)
        return result

    async def after_fanout(self, server: ServerUnderTest, result: dict[str, Any]) -> None:
        if "storm" in self.o.scenarios:
            await guarded(result, server, "storm", self.storm(server, result))
        if "reads" in self.o.scenarios and server.kind == "sidecar":
            await guarded(result, server, "reads", self.reads(server, result))

    async def head_to_head(self) -> None:
        """The largest fan-out, both servers' fleets connected: one warm-up round each, then
        their measured rounds alternate (A B, B A, A B...), so that whatever else the machine
        does at the time falls on both. Then each server's remaining scenarios."""
        parked = list(self._parked.items())
        size = max(self.o.sizes)
        users = list(range(1, size + 1))
        rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind, _ in parked}
        t0 = loop_time()
        try:
            for _, (server, _, fleet, _) in parked:
                self.server = server
                await self.fanout_round([server], fleet, users, f"warm-up {size}")
            # The sidecar is profiled through all of them (py-spy leaves out its idle time).
            profilers = [self.start_profile(server, f"fanout-{size}") for _, (server, _, _, _) in parked]
            try:
                for index in range(self.o.rounds):
                    order = parked if index % 2 == 0 else parked[::-1]
                    for kind, (server, _, fleet, _) in order:
                        self.server = server
                        label = f"round {index + 1}"
                        others = [f for other, (_, _, f, _) in parked if other != kind]
                        rounds[kind].append(
                            await self.fanout_round([server], fleet, users, label, bystanders=others)
                        )
                        await asyncio.sleep(0.3)
            finally:
                for profiler in profilers:
                    self.stop_profile(profiler)
            for kind, (server, _, fleet, entry) in parked:
                entry["fanout"] = self.fanout_figures(rounds[kind], server.kind, size)
                entry["fanout"]["alternated_with"] = [other for other, _ in parked if other != kind]
                entry["clients"] = await fleet.status()
        except Exception as exc:
            log.exception("head-to-head fan-out %d failed", size)
            for _, (_, result, _, _) in parked:
                result.setdefault("errors", []).append(
                    {"scenario": f"fan-out {size}", "error": f"{type(exc).__name__}: {exc}"}
                )
        finally:
            share = round((loop_time() - t0) / len(parked), 1)  # of the time, to each server
            for _, (_, result, fleet, _) in parked:
                result["durations_s"]["fan-out/memory/connect"] = round(
                    result["durations_s"].get("fan-out/memory/connect", 0) + share, 1
                )
                with contextlib.suppress(Exception):
                    await fleet.disconnect()
                await fleet.close()
        for kind, (server, result, _, _) in parked:
            del self._parked[kind]
            self.server = server
            try:
                await self.after_fanout(server, result)
            finally:
                stop_server(server, result)

    async def warm_up(self, server: ServerUnderTest) -> None:
        """Connect a few clients and publish once, so lazy imports and first-use costs are paid."""
        first = max([*self.o.sizes, *self.o.scaleout_sizes, self.o.storm_size, self.o.reads]) + 1
        warm_users = list(range(first, first + WARMUP_USERS))
        fleet = await Fleet.start(server.url, warm_users, self.tokens, self.o.per_process)
        try:
            await fleet.connect_paced(deadline_s=self.o.connect_deadline)
            await self.fanout_round([server], fleet, warm_users, "warm-up")
            await fleet.disconnect()
        finally:
            await fleet.close()
        await asyncio.sleep(1.0)

    async def fanout_memory_connect(
        self, server: ServerUnderTest, out: dict[str, Any], *, park: bool = False
    ) -> None:
        await self.warm_up(server)
        rss0 = rss_kib(server.pid)
        log.info("%s: RSS after warm-up %.1f MiB", server.kind, rss0 / 1024)
        out.update({"rss0_kib": rss0, "sizes": {}})
        fleet = Fleet([])
        try:
            for size in sorted(self.o.sizes):
                entry: dict[str, Any] = {}
                out["sizes"][str(size)] = entry
                new_users = list(range(fleet.size + 1, size + 1))
                await fleet.add(server.url, new_users, self.tokens, self.o.per_process)
                await self.reset_stats()
                connected = await fleet.connect_paced(deadline_s=self.o.connect_deadline)
                seconds = (connected["end"] - connected["start"]) / 1000
                entry["connect"] = {
                    "added": len(new_users),
                    "ok": connected["ok"],
                    "failed": connected["failed"],
                    "not_tried_before_deadline": connected["skipped"],
                    "errors": connected["errors"],
                    "seconds": round(seconds, 3),
                    "per_second": round(connected["ok"] / seconds, 1) if seconds > 0 else None,
                    "latency_ms": summary(connected["lat"]),
                    "best_per_second": connected["best_per_second"],
                    "batches": connected["batches"],
                }
                log.info(
                    "%s: %d clients wanted, +%d connected in %.2f s (%s failed, %s not tried: deadline;"
                    " up to %d in flight)",
                    server.kind,
                    size,
                    connected["ok"],
                    seconds,
                    connected["failed"],
                    connected["skipped"],
                    max((b["in_flight"] for b in connected["batches"]), default=0),
                )
                await self.quiesce()
                entry["connect"]["strapi_requests"] = await self.stats()
                await asyncio.sleep(2.0)  # idle: pings are 25 s apart, nothing else happens
                rss = rss_kib(server.pid)
                live = (await fleet.status())["connected"]
                entry["connected"] = live
                entry["rss_kib"] = rss
                entry["rss_per_connection_kib"] = round((rss - rss0) / live, 2) if live else None
                if park and size == max(self.o.sizes):
                    self._parked[server.kind] = (server, out, fleet, entry)
                    return  # measured in `head_to_head`, alternating with the other server
                if "fanout" in self.o.scenarios:
                    entry["fanout"] = await self.fanout([server], fleet, size)
                entry["clients"] = await fleet.status()
        finally:
            if server.kind not in self._parked:
                with contextlib.suppress(Exception):
                    await fleet.disconnect()
                await fleet.close()

    async def fanout(
        self, servers: list[ServerUnderTest], fleet: Fleet, size: int, name: str = ""
    ) -> dict[str, Any]:
        """A warm-up publication, then `rounds` measured ones, the webhook POSTed to servers[0].

        With several servers (scale-out), the CPU is summed over all of them.
        """
        server = servers[0]
        name = name or server.kind
        users = list(range(1, size + 1))
        await self.fanout_round(servers, fleet, users, f"warm-up {size}")
        rounds = []
        biggest = size == max(self.o.sizes) and len(servers) == 1
        profiler = self.start_profile(server, f"fanout-{size}") if biggest else None
        try:
            for index in range(self.o.rounds):
                rounds.append(await self.fanout_round(servers, fleet, users, f"round {index + 1}"))
                await asyncio.sleep(0.3)
        finally:
            self.stop_profile(profiler)
        return self.fanout_figures(rounds, name, size)

    def fanout_figures(self, rounds: list[dict[str, Any]], name: str, size: int) -> dict[str, Any]:
        """The figures of a fan-out's measured rounds (their receipt times are dropped)."""
        # A round whose notification reached clients before its webhook was sent measured
        # something else; it is kept in the JSON but left out of the figures.
        measured = [r for r in rounds if not r["before_webhook"]] or rounds
        if len(measured) < len(rounds):
            log.warning(
                "%s fan-out %d: %d round(s) announced before the webhook, left out",
                name,
                size,
                len(rounds) - len(measured),
            )
        latencies = [lat for r in measured for lat in r["lat"]]
        for r in rounds:
            # each round's own spread: the first client (how soon the server starts
            # delivering) to the last
            r["latency_ms"] = summary(r.pop("lat"))
        cpu = sum(r["cpu_s"] for r in measured)
        delivered = sum(r["count"] for r in measured)
        last = median([r["last_ms"] for r in measured if r["last_ms"] is not None] or [0.0])
        result = {
            "rounds": rounds,
            "latency_ms": summary(latencies),
            # information beside the pooled p99 (the target), which one slow round decides
            "p99_round_median_ms": round(median([r["latency_ms"]["p99"] for r in measured]), 2),
            "last_ms_median": round(last, 2),
            "deliveries_per_s": round(size / (last / 1000), 1) if last > 0 else None,
            "deliveries_per_cpu_s": round(delivered / cpu, 1) if cpu > 0 else None,
            "cpu_ms_per_publication": round(1000 * median([r["cpu_with_after_s"] for r in measured]), 1),
            "cpu_after_last_s": AFTER_LAST_S,
            "server_emit_ms_median": median_of([r["server_emit_ms"] for r in measured], 2),
            "server_gc_ms": total_of([r.get("server_gc_ms") for r in measured]),
            # of the notification's deliveries, the share written without a writer task (%)
            "server_direct_pct_min": min(
                round(100 * r["server_direct_writes"] / r["expected"], 1) for r in measured
            )
            if all(r.get("server_direct_writes") is not None and r["expected"] for r in measured)
            else None,
            # the harness's own pauses in the rounds (0 while `Fleet.collect` does its job)
            "client_gc_ms": round(sum(r["client_gc"]["ms"] for r in measured), 1),
            # the other server's fleet's, head to head (it shares the cores)
            "bystander_cpu_ms": total_of([r.get("bystander_cpu_ms") for r in measured]),
            "bystander_gc_ms": total_of([(r.get("bystander_gc") or {}).get("ms") for r in measured]),
            "missing": sum(r["expected"] - r["count"] for r in rounds),
            "duplicates": sum(r["dups"] for r in rounds),
            "rounds_left_out": len(rounds) - len(measured),
        }
        log.info(
            "%s fan-out %d: p50 %.1f ms, p99 %.1f ms, max %.1f ms, %s deliveries per CPU-s",
            name,
            size,
            result["latency_ms"]["p50"],
            result["latency_ms"]["p99"],
            result["latency_ms"]["max"],
            result["deliveries_per_cpu_s"],
        )
        return result

    async def fanout_round(
        self,
        servers: list[ServerUnderTest],
        fleet: Fleet,
        users: list[int],
        label: str,
        post_to: list[ServerUnderTest] | None = None,
        bystanders: Sequence[Fleet] = (),
    ) -> dict[str, Any]:
        """One publication: its webhook POSTed to `post_to` (default: servers[0]; several: the
        same delivery to each at once), every client's receipt awaited, CPU summed over `servers`.

        `bystanders`: other fleets connected meanwhile (the other server's, head to head): their
        young generations are emptied before the round too, and their collections in it counted."""
        server = servers[0]
        targets = post_to or [server]
        document_id, published_id = self.next_notification()
        body = webhook_body(document_id, published_id, users, f"bench {label}")
        headers = {
            "Authorization": f"Bearer {self.secrets.webhook_secret}",
            "Content-Type": "application/json",
        }
        await self.quiesce(quiet=0.2)
        # Clients left out by a connect deadline, or dropped before now, are not expected.
        expected = min(len(users), (await fleet.status())["connected"])
        # Registered in the fake Strapi just before the POST: the sidecar's reconciler, which
        # announces published notifications it has not seen a webhook for, must not beat it.
        # Not for the Node baseline, which never reads them: a sidecar running meanwhile (the
        # head-to-head rounds) would find them and announce them to its own clients.
        if any(s.kind == "sidecar" for s in servers):
            await self.add_notification(users, f"bench {label}", (document_id, published_id))
        # the server's own time to write the notification to every client, and in its collector,
        # where it says (one sidecar process, not scaled out)
        totals_before = await server.metric_totals(NOTIFICATION_EVENT) if len(servers) == 1 else None
        collected_ms = await fleet.collect()
        for other in bystanders:
            await other.collect()
            await other.collections()  # counted from here on
        cpu0 = sum(cpu_seconds(s.pid) for s in servers)
        idle0 = sum(other.cpu_seconds() for other in bystanders)
        sent = now_ms()
        responses = await asyncio.gather(
            *(self.hooks.post(f"{t.url}/webhooks/strapi", content=body, headers=headers) for t in targets)
        )
        response = responses[0]
        answered = now_ms()
        got = await fleet.await_key(document_id, timeout_ms=30_000)
        cpu1 = sum(cpu_seconds(s.pid) for s in servers)
        idle1 = sum(other.cpu_seconds() for other in bystanders)
        # right after the last client (the scrape's CPU, ~1 ms, is in `cpu_with_after_s`)
        totals_after = await server.metric_totals(NOTIFICATION_EVENT) if totals_before is not None else None
        lat = [t - sent for t in got["times"]]
        sample = got["sample"] or {}
        last_at = sent + max(lat) if lat else sent
        # What the server does for the publication after its last client (the sidecar: the
        # unread counts it changed, sent UNREAD_DELAY later, and its re-read of the notification).
        await asyncio.sleep(max(0.0, (last_at - now_ms()) / 1000 + AFTER_LAST_S))
        cpu2 = sum(cpu_seconds(s.pid) for s in servers)
        # the client processes' own garbage collections while the round was being received
        client_gc = gc_within([g for proc in got["gc"] for g in proc], sent, last_at)
        bystander_gc = (
            gc_within([g for other in bystanders for g in await other.collections()], sent, last_at)
            if bystanders
            else None
        )
        if got["count"] < expected:
            log.warning(
                "%s %s: only %d of %d clients got the notification",
                server.kind,
                label,
                got["count"],
                expected,
            )
        return {
            "webhook_status": response.status_code
            if len(responses) == 1
            else [r.status_code for r in responses],
            "webhook_bytes": len(body),
            "webhook_answer_ms": round(answered - sent, 2),
            "expected": expected,
            "count": got["count"],
            "dups": got["dups"],
            "last_ms": round(max(lat), 2) if lat else None,
            "cpu_s": round(cpu1 - cpu0, 3),
            "cpu_with_after_s": round(cpu2 - cpu0, 3),
            "sent_at": sent,
            "client_gc": client_gc,
            "bystander_gc": bystander_gc,
            # the other fleet's CPU meanwhile: its pings, and any collector thread of its own
            "bystander_cpu_ms": round(1000 * (idle1 - idle0), 1) if bystanders else None,
            "client_collect_before_ms": collected_ms,
            "server_emit_ms": emit_ms(totals_before, totals_after),
            "server_gc_ms": gc_ms(totals_before, totals_after),
            # the rest of the deliveries (and the round's other writes) went through a writer task
            "server_direct_writes": direct_writes(totals_before, totals_after),
            "payload_ok": sample.get("documentId") == document_id and sample.get("id") == published_id,
            # receipts stamped before the POST: something else (the reconciler) announced it
            "before_webhook": sum(1 for t in lat if t < 0),
            "lat": lat,
        }

    # -- connect storm and read storm --------------------------------------------------------

    async def storm(self, server: ServerUnderTest, out: dict[str, Any]) -> None:
        """A deploy: a fresh server process (cold user cache), every client connecting at once."""
        # Without the fan-out's notifications (up to 10k users each): the sidecar's start-up
        # reconciler would otherwise re-read them all during the storm.
        (await self.http.post(f"{self.fake_url}/__clear")).raise_for_status()
        await restart(server)
        size = self.o.storm_size
        fleet = await Fleet.start(server.url, list(range(1, size + 1)), self.tokens, min(1000, size))
        try:
            await self.reset_stats()
            connected = await fleet.connect(concurrency=0, timeout_ms=STORM_TIMEOUT_MS)
            seconds = (connected["end"] - connected["sent"]) / 1000
            health_ms = await health_probe(server)
            synced = None
            if server.kind == "sidecar" and connected["ok"]:  # its catch-up follows each connect
                # After failed handshakes the storm is a miss already: catch-ups are waited less.
                wait_ms = STORM_TIMEOUT_MS if not connected["failed"] else 5_000
                got = await fleet.await_event(SYNC_EVENT, timeout_ms=wait_ms)
                if got["times"]:
                    synced = {
                        "count": got["count"],
                        "expected": got["expected"],
                        "all_synced_s": round((max(got["times"]) - connected["sent"]) / 1000, 3),
                    }
            # A server left with abandoned handshakes may go on for a minute; the next scenario
            # restarts it anyway, so a failed storm's aftermath is only waited for so long.
            await self.quiesce(within=STORM_AFTERMATH_S if connected["failed"] else 60.0)
            requests = await self.stats()
            asked = await self.users_asked()
            lookups = requests.get("GET /api/users/:id", 0) + requests.get("GET /api/users", 0)
            total = sum(requests.values())
            out["storm"] = {
                "clients": size,
                "ok": connected["ok"],
                "failed": connected["failed"],
                "errors": connected["errors"],
                "all_in_s": round(seconds, 3),
                "latency_ms": summary(connected["lat"]),
                "healthz_ms_after": health_ms,
                "synced": synced,
                "strapi_requests": requests,
                "strapi_requests_total": total,
                "requests_per_user": round(total / size, 3),
                "user_requests": lookups,
                # the "asking Strapi about each user at most once": users named by a request
                "users_asked": asked,
                "lookups_per_user": round(asked["total"] / size, 3),
                "max_lookups_of_one_user": asked["max_per_user"],
            }
            log.info(
                "%s storm %d: every handshake answered after %.2f s (%d failed %s); /healthz then took %s ms;"
                " %d Strapi requests (%d about users)%s",
                server.kind,
                size,
                seconds,
                connected["failed"],
                connected["errors"] or "",
                health_ms,
                total,
                lookups,
                f"; all synced after {synced['all_synced_s']} s" if synced else "",
            )
        finally:
            with contextlib.suppress(Exception):
                await fleet.disconnect()
            await fleet.close()

    async def reads(self, server: ServerUnderTest, out: dict[str, Any]) -> None:
        """K readers, connected at a steady pace to a fresh server, read one notification at once."""
        (await self.http.post(f"{self.fake_url}/__clear")).raise_for_status()
        await restart(server)
        size = self.o.reads
        fleet = await Fleet.start(server.url, list(range(1, size + 1)), self.tokens, min(1000, size))
        try:
            connected = await fleet.connect_paced(deadline_s=self.o.connect_deadline)
            if connected["ok"] < size:
                log.warning("read storm: only %d of %d readers connected", connected["ok"], size)
            await self.quiesce()
            out["reads"] = await self.read_storm(server, fleet, size)
            out["reads"]["clients_after"] = await fleet.status()
        finally:
            with contextlib.suppress(Exception):
                await fleet.disconnect()
            await fleet.close()

    async def reads_of(self, document_id: str) -> dict[str, Any]:
        return dict(
            (await self.http.get(f"{self.fake_url}/__reads", params={"notification": document_id})).json()
        )

    async def read_storm(self, server: ServerUnderTest, fleet: Fleet, audience: int) -> dict[str, Any]:
        users = list(range(1, audience + 1))
        out: dict[str, Any] = {}
        # One read of a fresh notification, then the same user again.
        document_id, published_id = await self.add_notification(users, "single read")
        await self.quiesce()
        await self.reset_stats()
        first = await fleet.read(str(published_id), 1, timeout_ms=READ_TIMEOUT_MS)
        await self.quiesce()
        first_requests = await self.stats()
        await self.reset_stats()
        again = await fleet.read(str(published_id), 1, timeout_ms=READ_TIMEOUT_MS)
        await self.quiesce()
        again_requests = await self.stats()
        state = await self.reads_of(document_id)
        out["single"] = {
            "acks": first["acks"],
            "ms": first["all_acks_ms"],
            "strapi_requests": sum(first_requests.values()),
            "by_route": first_requests,
            "again_acks": again["acks"],
            "again_strapi_requests": sum(again_requests.values()),
            "exact": first["acks"] == {"ok alreadyRead=false": 1}
            and again["acks"] == {"ok alreadyRead=true": 1}
            and [r["users"] for r in state["reads"]] == [first["readers"]],
        }
        # K users read one notification at once.
        count = min(self.o.reads, audience)
        document_id, published_id = await self.add_notification(users, "read storm")
        before = await self.reads_of(document_id)
        await self.reset_stats()
        burst = await fleet.read(str(published_id), count, timeout_ms=READ_TIMEOUT_MS)
        await self.quiesce()
        requests = await self.stats()
        state = await self.reads_of(document_id)
        receipts = state["reads"]
        readers = burst["readers"]
        total = sum(requests.values())
        checks = {
            "every_ack_ok_and_first_read": burst["acks"] == {"ok alreadyRead=false": count},
            "acks_name_the_document": burst["document_ids"] == [document_id],
            "one_readnotification": len(receipts) == 1,
            "its_users_are_exactly_the_readers": len(receipts) == 1
            and sorted(receipts[0]["users"]) == readers
            and len(receipts[0]["users"]) == count,
            "no_duplicate_connects": state["duplicateConnects"] == before["duplicateConnects"],
        }
        out["burst"] = {
            "readers": count,
            "all_acks_ms": burst["all_acks_ms"],
            "ack_ms": burst["ack_ms"],
            "acks": burst["acks"],
            "strapi_requests": total,
            "requests_per_read": round(total / count, 3),
            "by_route": requests,
            "checks": checks,
            "exact": all(checks.values()),
        }
        log.info(
            "sidecar read storm %d (fake Strapi): all acks in %.0f ms, %d Strapi requests, exact=%s",
            count,
            burst["all_acks_ms"],
            total,
            out["burst"]["exact"],
        )
        return out

    # -- scale-out: 1 vs 2 sidecar processes sharing a Redis -----------------------------------

    async def scaleout(self, out: dict[str, Any]) -> None:
        """The fan-out again, with the clients spread evenly over two sidecar processes that share
        a fresh Redis, the webhook POSTed to the first only. The 1-process figures are the fan-out
        scenario's at the same size (same settings, same run), or measured here when it did not run.
        Last, one publication whose webhook goes to both processes at once: still once per client.
        """
        sizes = sorted(self.o.scaleout_sizes)
        out["sizes"] = sizes
        single = (self.results.get("sidecar") or {}).get("sizes") or {}
        one: dict[str, Any] = {}
        for size in sizes:
            entry = single.get(str(size)) or {}
            if entry.get("fanout"):
                one[str(size)] = {
                    "fanout": entry["fanout"],
                    "connected": entry.get("connected"),
                    "from": "fan-out scenario",
                }
        todo = [size for size in sizes if str(size) not in one]
        (await self.http.post(f"{self.fake_url}/__clear")).raise_for_status()
        if todo:
            server = make_server("sidecar", free_port(), self.fake_url, self.secrets, "fake-scaleout-1")
            self.server = server
            server.start()
            try:
                await server.ready()
                one.update(await self.grow_and_fan_out([server], todo, "1 process"))
            finally:
                server.stop()
        out["one"] = one
        (await self.http.post(f"{self.fake_url}/__clear")).raise_for_status()
        redis = RedisProcess()
        servers = [
            make_server(
                "sidecar", free_port(), self.fake_url, self.secrets, f"fake-{tag}", redis_url=redis.url
            )
            for tag in ("a", "b")
        ]
        try:
            redis.start()
            await redis.ready()
            for server in servers:
                server.start()
            for server in servers:
                await server.ready()
            self.server = servers[0]
            out["redis"] = {"version": redis_version(), "url": redis.url}
            out["two"] = await self.grow_and_fan_out(servers, sizes, "2 processes", both_at_end=True)
            out["redis"]["rss_kib"] = rss_kib(redis.pid)
        finally:
            for server in servers:
                out.setdefault("exit_codes", []).append(server.stop())
            out["logs"] = [str(server.log_path) for server in servers]
            redis.stop()

    async def grow_and_fan_out(
        self, servers: list[ServerUnderTest], sizes: list[int], name: str, both_at_end: bool = False
    ) -> dict[str, Any]:
        """Grow one fleet, spread evenly over `servers`, to each size and measure the fan-out there."""
        results: dict[str, Any] = {}
        rss0 = sum(rss_kib(s.pid) for s in servers)
        fleet = Fleet([])
        try:
            for size in sizes:
                new_users = list(range(fleet.size + 1, size + 1))
                share = -(-len(new_users) // len(servers))
                for index, server in enumerate(servers):
                    part = new_users[index * share : (index + 1) * share]
                    if part:
                        await fleet.add(server.url, part, self.tokens, self.o.per_process)
                connected = await fleet.connect_paced(deadline_s=self.o.connect_deadline)
                seconds = (connected["end"] - connected["start"]) / 1000
                log.info(
                    "%s: %d clients wanted, +%d connected in %.1f s (%d failed, %d not tried)",
                    name,
                    size,
                    connected["ok"],
                    seconds,
                    connected["failed"],
                    connected["skipped"],
                )
                await self.quiesce()
                entry: dict[str, Any] = {
                    "connect": {
                        "ok": connected["ok"],
                        "failed": connected["failed"],
                        "not_tried_before_deadline": connected["skipped"],
                        "errors": connected["errors"],
                        "seconds": round(seconds, 1),
                        "per_second": round(connected["ok"] / seconds, 1) if seconds > 0 else None,
                        "batches": connected["batches"],
                    },
                    "connected": (await fleet.status())["connected"],
                    "rss_kib": [rss_kib(s.pid) for s in servers],
                }
                entry["rss_per_connection_kib"] = (
                    round((sum(entry["rss_kib"]) - rss0) / entry["connected"], 2)
                    if entry["connected"]
                    else None
                )
                entry["fanout"] = await self.fanout(servers, fleet, size, name)
                entry["clients"] = await fleet.status()
                results[str(size)] = entry
            if both_at_end and len(servers) > 1:
                users = list(range(1, max(sizes) + 1))
                both = await self.fanout_round(servers, fleet, users, "to both", post_to=servers)
                both.pop("lat")
                both["exact"] = both["count"] == both["expected"] and both["dups"] == 0
                results["same_webhook_to_every_process"] = both
                log.info(
                    "%s: the same webhook to every process at once: %d of %d clients got it, %d twice",
                    name,
                    both["count"],
                    both["expected"],
                    both["dups"],
                )
                results["clients"] = await fleet.status()
        finally:
            with contextlib.suppress(Exception):
                await fleet.disconnect()
            await fleet.close()
        return results

    # -- profiling ---------------------------------------------------------------------------

    def start_profile(self, server: ServerUnderTest, name: str) -> subprocess.Popen[bytes] | None:
        if not self.o.profile or server.kind != "sidecar":
            return None
        py_spy = Path(sys.executable).with_name("py-spy")
        if not py_spy.exists():
            log.error(
                "--profile needs py-spy beside %s (`make install` puts it there); not profiled",
                sys.executable,
            )
            return None
        output = RESULTS / f"profile-{server.kind}-{name}.svg"
        argv = [str(py_spy), "record", "--pid", str(server.pid), "--output", str(output), "--rate", "250"]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def stop_profile(profiler: subprocess.Popen[bytes] | None) -> None:
        if profiler is None:
            return
        profiler.send_signal(2)  # SIGINT: py-spy writes the flame graph and exits
        try:
            profiler.wait(30)
        except subprocess.TimeoutExpired:
            profiler.kill()
            profiler.wait()


def redis_version() -> str:
    try:
        answer = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return answer.stdout.strip()


def gc_within(collections: list[list[Any]], start: float, end: float) -> dict[str, Any]:
    """Client processes' collections (`[start, ms, kind]`) that began from `start` to `end`."""
    during = [g for g in collections if start <= g[0] <= end]
    return {
        "ms": round(sum(g[1] for g in during), 1),
        "major": sum(1 for g in during if g[2] == 4),
        "longest_ms": round(max((g[1] for g in during), default=0.0), 1),
    }


async def restart(server: ServerUnderTest) -> None:
    server.stop()
    server.start()
    await server.ready()


async def health_probe(server: ServerUnderTest, within: float = 5.0) -> float | None:
    """How long `GET /healthz` takes right now (ms), or None when it does not answer in time."""
    async with httpx.AsyncClient(timeout=within) as client:
        started = now_ms()
        try:
            (await client.get(f"{server.url}/healthz")).raise_for_status()
        except httpx.HTTPError:
            return None
        return round(now_ms() - started, 1)


async def responsive(server: ServerUnderTest, limit_ms: float = 250.0) -> bool:
    """Whether the server answers GET /healthz within `limit_ms`."""
    took = await health_probe(server, within=limit_ms / 1000)
    return took is not None


def loop_time() -> float:
    return asyncio.get_running_loop().time()


def stop_server(server: ServerUnderTest, result: dict[str, Any]) -> None:
    """Stop a server under test; its exit code and log go into its results."""
    result["exit_code"] = server.stop()
    result["log"] = str(server.log_path)


async def guarded(result: dict[str, Any], server: ServerUnderTest, name: str, work: Awaitable[None]) -> None:
    """Run one scenario, timed; a failure is recorded (with the server's state) and the run goes on."""
    t0 = loop_time()
    try:
        await work
    except Exception as exc:
        log.exception("%s %s failed", server.kind, name)
        error: dict[str, Any] = {"scenario": name, "error": f"{type(exc).__name__}: {exc}"}
        if not server.alive():
            error["server_exit_code"] = server.process.returncode if server.process else None
            error["server_log_tail"] = server.log_tail(60)
            log.error("%s is not running any more; log tail:\n%s", server.kind, error["server_log_tail"])
        result.setdefault("errors", []).append(error)
        if not server.alive():
            server.stop()
            server.start()
            await server.ready()
    finally:
        result.setdefault("durations_s", {})[name] = round(loop_time() - t0, 1)
