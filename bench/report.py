"""The results table: one row per figure, sidecar | Node | ratio | target."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Check = Callable[[float | None, float | None], bool | None]


@dataclass
class Row:
    label: str
    sidecar: Any = None
    node: Any = None
    target: str = ""
    check: Check | None = None
    ratio: bool = True
    digits: int | None = None  # decimals shown, where the default rounding hides what is judged


def _get(data: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(data, dict):
            data = data.get(str(key))
        else:
            return None
    return data


def _fmt(value: Any, digits: int | None = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, float) and digits is not None:
        return f"{value:.{digits}f}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def _ratio(row: Row) -> str:
    s, n = _number(row.sidecar), _number(row.node)
    if not row.ratio or s is None or n is None or n == 0:
        return ""
    return f"{s / n:.2f}"


def _verdict(row: Row) -> str:
    if row.check is None:
        return ""
    if isinstance(row.sidecar, bool):
        return "ok" if row.sidecar else "MISS"
    outcome = row.check(_number(row.sidecar), _number(row.node))
    if outcome is None:
        return ""
    return "ok" if outcome else "MISS"


def _ratio_at_most(limit: float) -> Check:
    def check(s: float | None, n: float | None) -> bool | None:
        if s is None or n is None or n == 0:
            return None
        return s / n <= limit

    return check


def _at_most(limit: float) -> Check:
    def check(s: float | None, n: float | None) -> bool | None:
        return None if s is None else s <= limit

    return check


def _all_in(side_failed: Any, node_failed: Any, limit: float) -> Check:
    """Within `limit` seconds, and every handshake accepted (judged on the sidecar)."""

    def check(s: float | None, n: float | None) -> bool | None:
        if s is None:
            return None
        return s <= limit and not side_failed

    return check


def _unless_failed(failed: Any, inner: Check) -> Check:
    """No verdict when handshakes failed: what was not done cost nothing."""

    def check(s: float | None, n: float | None) -> bool | None:
        return None if failed else inner(s, n)

    return check


def _at_least(limit: float) -> Check:
    def check(s: float | None, n: float | None) -> bool | None:
        return None if s is None else s >= limit

    return check


def _is_true(s: float | None, n: float | None) -> bool | None:
    return None  # booleans are judged in _verdict


def fanout_rows(fake: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    side, node = fake.get("sidecar", {}), fake.get("node", {})
    sizes = sorted({int(k) for k in {**(_get(side, "sizes") or {}), **(_get(node, "sizes") or {})}})
    biggest = max(sizes) if sizes else None
    for size in sizes:

        def pick(result: dict[str, Any], *path: str, size: int = size) -> Any:
            return _get(result, "sizes", str(size), "fanout", *path)

        after = pick(side, "cpu_after_last_s") or pick(node, "cpu_after_last_s")

        target, check = ("ratio <= 1.0", _ratio_at_most(1.0)) if size == biggest else ("", None)

        def both(
            label: str, *path: str, judged: tuple[Any, ...] = (), size: int = size, **options: Any
        ) -> Row:
            """A row of one figure of both servers' fan-out of `size` (`fanout.<path>`); `judged`:
            its target and check."""
            return Row(f"fan-out {size:,}: {label}", pick(side, *path), pick(node, *path), *judged, **options)

        rows += [
            Row(
                f"fan-out {size:,}: clients connected",
                _get(side, "sizes", str(size), "connected"),
                _get(node, "sizes", str(size), "connected"),
                f"= {size:,}",
                _at_least(size),
                ratio=False,
            ),
            both("latency p50 (ms)", "latency_ms", "p50"),
            both("latency p99 (ms)", "latency_ms", "p99", judged=(target, check)),
            both("latency p99, median of the rounds' (ms)", "p99_round_median_ms"),
            both("latency max (ms)", "latency_ms", "max"),
            both("deliveries/s (wall, to last)", "deliveries_per_s"),
            both("deliveries per server CPU-s", "deliveries_per_cpu_s"),
            both(
                f"server CPU per publication, to {after} s after the last client (ms)",
                "cpu_ms_per_publication",
            ),
            both(
                "the server's own emit to every client (ms; the sidecar's metrics)",
                "server_emit_ms_median",
                ratio=False,
            ),
            both(
                "the server's own garbage collection in the rounds (ms, summed; the sidecar's metrics)",
                "server_gc_ms",
                ratio=False,
            ),
            both(
                "written straight to the socket, fewest in a round (%; the sidecar's metrics)",
                "server_direct_pct_min",
                ratio=False,
            ),
            both(
                "the clients' own garbage collection in the rounds (ms, summed)", "client_gc_ms", ratio=False
            ),
            both(
                "the other server's clients' garbage collection in them (ms, summed)",
                "bystander_gc_ms",
                ratio=False,
            ),
            both("the other server's clients' CPU in them (ms, summed)", "bystander_cpu_ms", ratio=False),
            Row(
                f"fan-out {size:,}: every client once",
                _complete(pick(side)),
                _complete(pick(node)),
                ratio=False,
            ),
        ]
    if sizes:
        rows.append(
            Row(
                "fan-out: clients dropped by the server meanwhile",
                _dropped(_get(side, "sizes", str(biggest), "clients")),
                _dropped(_get(node, "sizes", str(biggest), "clients")),
                "0",
                _at_most(0),
                ratio=False,
            )
        )
    return rows


def _dropped(status: Any) -> int | None:
    """Clients the server dropped (ping timeouts, say) while they should have stayed connected."""
    if not isinstance(status, dict):
        return None
    return sum((status.get("dropped") or {}).values())


def _complete(result: Any) -> bool | None:
    if not isinstance(result, dict):
        return None
    return result.get("missing") == 0 and result.get("duplicates") == 0


def connection_rows(fake: dict[str, Any], storm_size: int) -> list[Row]:
    side, node = fake.get("sidecar", {}), fake.get("node", {})
    sizes = sorted({int(k) for k in {**(_get(side, "sizes") or {}), **(_get(node, "sizes") or {})}})
    rows: list[Row] = []
    for size in sizes:
        if size in (min(sizes), max(sizes)):
            rows.append(
                Row(
                    f"RSS per idle connection at {size:,} (KiB)",
                    _get(side, "sizes", str(size), "rss_per_connection_kib"),
                    _get(node, "sizes", str(size), "rss_per_connection_kib"),
                    "ratio <= 1.0",
                    _ratio_at_most(1.0),
                )
            )
    for size in sizes:
        rows.append(
            Row(
                f"connect rate, {size:,} total (handshakes/s)",
                _get(side, "sizes", str(size), "connect", "per_second"),
                _get(node, "sizes", str(size), "connect", "per_second"),
            )
        )
    if not (_get(side, "storm") or _get(node, "storm")):
        return rows
    return rows + _storm_rows(
        f"storm {storm_size:,}",
        _get(side, "storm"),
        _get(node, "storm"),
        _get(side, "storm", "synced", "all_synced_s"),
    )


def _storm_rows(storm: str, side: Any, node: Any, synced_s: Any) -> list[Row]:
    """A connect storm's rows, both servers' (`side`, `node`: their `storm` results)."""
    return [
        Row(
            f"{storm}: every handshake answered after (s)",
            _get(side, "all_in_s"),
            _get(node, "all_in_s"),
            "all in <= 10 s",
            _all_in(_get(side, "failed"), _get(node, "failed"), 10),
        ),
        Row(f"{storm}: all caught up (notification:sync) after (s)", synced_s),
        Row(
            f"{storm}: GET /healthz right after (ms; - = no answer in 5 s)",
            _get(side, "healthz_ms_after"),
            _get(node, "healthz_ms_after"),
        ),
        Row(
            f"{storm}: refused or failed",
            _get(side, "failed"),
            _get(node, "failed"),
            "0",
            _at_most(0),
            ratio=False,
        ),
        # The issue: "asking Strapi about each user at most once" - the user check: how many
        # times a request named a user (GET /api/users/:id, or an id filter on GET /api/users).
        Row(
            f"{storm}: most times Strapi was asked about one user",
            _get(side, "max_lookups_of_one_user"),
            _get(node, "max_lookups_of_one_user"),
            "<= 1",
            _unless_failed(_get(side, "failed"), _at_most(1)),
        ),
        Row(
            f"{storm}: user checks per user (users asked about / clients)",
            _get(side, "lookups_per_user"),
            _get(node, "lookups_per_user"),
        ),
        Row(
            f"{storm}: Strapi requests per user, all routes (info)",
            _get(side, "requests_per_user"),
            _get(node, "requests_per_user"),
        ),
    ]


def read_rows(fake: dict[str, Any], reads: int) -> list[Row]:
    reads_ = _get(fake, "sidecar", "reads")
    if not reads_:
        return []
    readers = _get(reads_, "burst", "readers") or reads
    return [
        *_read_rows(reads_, readers, again=True, limited=True),
        Row(
            f"read storm {readers:,}: clients dropped by the server meanwhile",
            _dropped(_get(reads_, "clients_after")),
            None,
            "0",
            _at_most(0),
        ),
    ]


def _read_rows(reads_: Any, readers: int, *, again: bool, limited: bool) -> list[Row]:
    """The sidecar's single read and read storm; `again`: with the single read repeated,
    `limited`: the storm held to the target's 10 Strapi requests (the target is for 1,000)."""
    single = [
        Row(
            "single read: Strapi requests",
            _get(reads_, "single", "strapi_requests"),
            None,
            "<= 3",
            _at_most(3),
        ),
        Row("single read again: Strapi requests", _get(reads_, "single", "again_strapi_requests")),
        Row("single read: acks and state exact", _get(reads_, "single", "exact"), None, "yes", _is_true),
    ]
    return [
        *(single if again else [single[0], single[2]]),
        Row(f"read storm {readers:,}: all acks after (ms)", _get(reads_, "burst", "all_acks_ms")),
        Row(
            f"read storm {readers:,}: Strapi requests",
            _get(reads_, "burst", "strapi_requests"),
            None,
            "<= 10" if limited else "",
            _at_most(10) if limited else None,
        ),
        Row(f"read storm {readers:,}: Strapi requests per read", _get(reads_, "burst", "requests_per_read")),
        Row(
            f"read storm {readers:,}: READNOTIFICATION exact",
            _get(reads_, "burst", "exact"),
            None,
            "yes",
            _is_true,
        ),
    ]


def real_rows(real: dict[str, Any], users: int) -> list[Row]:
    side, node = real.get("sidecar", {}), real.get("node", {})
    pub = f"publish to {users:,} users"

    def published(label: str, key: str, *check: Any, **options: Any) -> Row:
        """A row of one figure of both servers' publications (`publish.<key>`)."""
        return Row(
            f"{pub}: {label}", _get(side, "publish", key), _get(node, "publish", key), *check, **options
        )

    rows = [
        published("Strapi answers POST (ms)", "strapi_answer_ms_median"),
        published("last client has it (ms)", "last_client_ms_median"),
        published("last client / Strapi answer", "ratio_median", "<= 1.05", _at_most(1.05), digits=3),
        published("first client has it, after Strapi's answer (ms)", "first_after_answer_ms_median"),
        published("from the first client to the last (ms)", "first_to_last_ms_median"),
        published(
            "the server's own emit to every client (ms; the sidecar's metrics)",
            "server_emit_ms_median",
            ratio=False,
        ),
        Row(
            f"{pub}: every client once",
            _complete(_get(side, "publish")),
            _complete(_get(node, "publish")),
            ratio=False,
        ),
        *_storm_rows(
            f"storm {users:,}", _get(side, "storm"), _get(node, "storm"), _get(side, "storm", "all_synced_s")
        ),
        Row(
            f"storm {users:,}: Strapi busy until (s; > : stopped waiting)",
            _busy(_get(side, "storm")),
            _busy(_get(node, "storm")),
        ),
        Row(
            f"then {users:,} at a steady pace, after a restart (handshakes/s)",
            _get(side, "paced_connect", "per_second"),
            _get(node, "paced_connect", "per_second"),
        ),
        published("publications whose webhook Strapi lost", "webhooks_lost", ratio=False),
    ]
    reads_ = _get(side, "reads")
    if reads_:
        readers = _get(reads_, "burst", "readers")
        rows += [
            *_read_rows(reads_, readers, again=False, limited=readers == 1000),
            Row(
                "real Strapi: clients dropped by the sidecar during the run",
                _dropped(_get(side, "clients")),
                _dropped(_get(node, "clients")),
                "0",
                _at_most(0),
                ratio=False,
            ),
        ]
    return rows


def bare_rows(real: dict[str, Any], users: int) -> list[Row]:
    """Strapi's own webhook delay, measured with a bare receiver in the server's place."""
    bare = real.get("bare") or {}
    if not bare or bare.get("error"):
        return []
    pub = f"publish to {users:,} users"

    def row(label: str, *path: str, digits: int | None = None) -> Row:
        return Row(label, _get(bare, *path), "", ratio=False, digits=digits)

    return [
        row(f"{pub}: Strapi answers POST (ms)", "strapi_answer_ms_median"),
        row(f"{pub}: entry.create received, after the answer (ms)", "create_after_answer_ms_median"),
        row(
            f"{pub}: entry.publish stamped by Strapi, after the answer (ms)",
            "stamped_after_answer_ms_median",
        ),
        row(f"{pub}: entry.publish received, after the answer (ms)", "publish_after_answer_ms_median"),
        row(f"{pub}: entry.publish received, after the answer, worst (ms)", "publish_after_answer_ms_max"),
        row(f"{pub}: entry.publish received / Strapi answer (the floor)", "floor_ratio_median", digits=3),
        row(f"{pub}: the floor, worst publication", "floor_ratio_max", digits=3),
        row(f"{pub}: publications whose floor alone is over 1.05", "floor_over_target"),
        row(f"{pub}: publications whose entry.publish did not come in 15 s", "webhooks_lost"),
        Row(f"{pub}: deliveries refused (wrong webhook secret)", _get(bare, "refused"), "", "0", _at_most(0)),
        row(f"{pub}: publications whose POST failed", "failed"),
    ]


def _busy(storm: Any) -> Any:
    if not isinstance(storm, dict):
        return None
    busy = storm.get("strapi_busy_for_s")
    return f">{busy:.0f}" if storm.get("strapi_busy_capped") and busy is not None else busy


def scaleout_rows(scaleout: dict[str, Any]) -> list[Row]:
    """1 process (first column) vs 2 processes sharing a Redis; the ratio is 2 processes / 1."""
    rows: list[Row] = []
    one, two = scaleout.get("one") or {}, scaleout.get("two") or {}
    for size in scaleout.get("sizes") or []:

        def pick(result: dict[str, Any], *path: str, size: int = size) -> Any:
            return _get(result, str(size), "fanout", *path)

        name = f"fan-out {size:,}"
        rows += [
            Row(
                f"{name}: clients connected",
                _get(one, str(size), "connected") or _get(pick(one, "rounds"), 0, "expected"),
                _get(two, str(size), "connected"),
                f"= {size:,}",
                lambda s, n, size=size: None if n is None else n >= size,
                ratio=False,
            ),
            Row(f"{name}: latency p50 (ms)", pick(one, "latency_ms", "p50"), pick(two, "latency_ms", "p50")),
            Row(f"{name}: latency p99 (ms)", pick(one, "latency_ms", "p99"), pick(two, "latency_ms", "p99")),
            Row(f"{name}: latency max (ms)", pick(one, "latency_ms", "max"), pick(two, "latency_ms", "max")),
            Row(
                f"{name}: deliveries/s (wall, to last)",
                pick(one, "deliveries_per_s"),
                pick(two, "deliveries_per_s"),
            ),
            Row(
                f"{name}: deliveries per server CPU-s (summed)",
                pick(one, "deliveries_per_cpu_s"),
                pick(two, "deliveries_per_cpu_s"),
            ),
            Row(
                f"{name}: every client once",
                _complete(pick(one)),
                _complete(pick(two)),
                "yes",
                lambda s, n: n,
                ratio=False,
            ),
        ]
    if two:
        both = two.get("same_webhook_to_every_process") or {}
        rows += [
            Row(
                "same webhook to both processes at once: every client once",
                None,
                both.get("exact"),
                "yes",
                lambda s, n: n,
                ratio=False,
            ),
            Row(
                "2 processes: clients dropped by the servers meanwhile",
                None,
                _dropped(two.get("clients")),
                "0",
                lambda s, n: None if n is None else n <= 0,
                ratio=False,
            ),
        ]
    return rows


def _section(
    title: str,
    rows: list[Row],
    columns: tuple[str, str] = ("sidecar", "node"),
    ratio_header: str = "ratio",
    inverse: bool = False,
) -> list[str]:
    """The rows under a header; the ratio is first/second column (second/first when `inverse`).

    With `inverse`, the verdict is judged on the second column.
    """
    if not rows:
        return []
    width = max(44, *(len(row.label) for row in rows))
    lines = [
        "",
        title,
        f"{'':{width}}  {columns[0]:>11}  {columns[1]:>11}  {ratio_header:>6}  {'target':<15} {'':4}",
        "-" * (width + 57),
    ]
    for row in rows:
        shown = (
            Row(row.label, row.node, row.sidecar, row.target, row.check, row.ratio, row.digits)
            if inverse
            else row
        )
        verdict = _verdict(shown) if not inverse else _verdict_second(row)
        first, second = _fmt(row.sidecar, row.digits), _fmt(row.node, row.digits)
        lines.append(
            f"{row.label:{width}}  {first:>11}  {second:>11}  {_ratio(shown):>6}  "
            f"{row.target:<15} {verdict:4}".rstrip()
        )
    return lines


def _verdict_second(row: Row) -> str:
    """A verdict on the second column (the check gets both; booleans are judged as they are)."""
    if row.check is None:
        return ""
    if isinstance(row.node, bool):
        return "ok" if row.node else "MISS"
    outcome = row.check(_number(row.sidecar), _number(row.node))
    if outcome is None:
        return ""
    return "ok" if outcome else "MISS"


def _durations(results: dict[str, Any]) -> list[str]:
    parts = []
    fake = results.get("fake") or {}
    for kind in ("sidecar", "node"):
        for name, seconds in ((fake.get(kind) or {}).get("durations_s") or {}).items():
            parts.append(f"{kind} {name} {seconds:.0f}")
    if (fake.get("scaleout") or {}).get("seconds") is not None:
        parts.append(f"scale-out {fake['scaleout']['seconds']:.0f}")
    real = results.get("real") or {}
    for name, seconds in (real.get("durations_s") or {}).items():
        parts.append(f"real {name} {seconds:.0f}")
    if not parts and results.get("duration_s") is None:
        return []
    total = results.get("duration_s")
    line = "Time (s): " + ", ".join(parts)
    if total is not None:
        line += f"; total {total:.0f}"
    return ["", line]


def _load(values: Any) -> str:
    return "/".join(f"{v:.2f}" for v in values) if isinstance(values, list) else "?"


def render_table(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    options = results.get("options", {})
    lines = [
        f"Benchmark {results.get('started', '')}: {machine.get('cpu')} x{machine.get('cores')}, "
        f"{machine.get('memory_gib')} GiB; Python {machine.get('python')}, Node {machine.get('node')}; "
        f"load average {_load(results.get('load_before'))} before, {_load(results.get('load_after'))} after; "
        f"sidecar at {machine.get('sidecar_revision', '?')}; clients: {options.get('client', 'official')}",
    ]
    fake = results.get("fake")
    if fake:
        lines += _section("Fan-out through the webhook path (fake Strapi)", fanout_rows(fake))
        lines += _section("Connections (fake Strapi)", connection_rows(fake, options.get("storm", 0)))
        lines += _section(
            "Read storm (fake Strapi; no Node equivalent)", read_rows(fake, options.get("reads", 0))
        )
        scaleout = fake.get("scaleout")
        if scaleout:
            lines += _section(
                "Scale-out: 1 sidecar process vs 2 sharing a Redis (fake Strapi; webhook to the first)",
                scaleout_rows(scaleout),
                columns=("1 process", "2 processes"),
                ratio_header="2p/1p",
                inverse=True,
            )
    real = results.get("real")
    if real:
        lines += _section(
            "Real Strapi 5 (strapi-fixtures): Strapi's own webhooks, default sidecar settings",
            real_rows(real, options.get("real_users", 0)),
        )
        lines += _section(
            "Strapi's own webhook delay: a bare receiver in the server's place after both, no clients"
            " (the floor of a webhook-driven server, Strapi otherwise idle)",
            bare_rows(real, options.get("real_users", 0)),
            columns=("receiver", ""),
            ratio_header="",
        )
        if (real.get("bare") or {}).get("error"):
            lines.append(f"(the bare receiver's publications failed: {real['bare']['error']})")
        users = real.get("users") or {}
        if users:
            lines.append(
                f"(users: {users.get('rest_sample')} through REST at {users.get('rest_per_s')}/s "
                f"- all would take ~{users.get('rest_estimate_s_for_all')} s - and "
                f"{users.get('sql_cloned')} cloned in SQLite in {users.get('sql_s')} s)"
            )
    problems = []
    for suite in ("fake", "real"):
        data = results.get(suite) or {}
        if data.get("error"):
            problems.append(f"{suite}: {data['error']}")
        for kind in ("sidecar", "node"):
            for error in (data.get(kind) or {}).get("errors") or []:
                where = f"{kind} ({suite} Strapi) {error.get('scenario')}"
                problems.append(f"{where}: {error.get('error')}")
                if error.get("server_exit_code") is not None:
                    problems.append(f"    the server had exited with code {error['server_exit_code']}")
    for error in (fake or {}).get("scaleout", {}).get("errors") or []:
        problems.append(f"sidecar (fake Strapi) {error.get('scenario')}: {error.get('error')}")
    if problems:
        lines += ["", "Scenarios that did not complete (see the JSON and bench/results/logs/):"]
        lines += [f"  {problem}" for problem in problems]
    lines += _durations(results)
    return "\n".join(lines)
