"""`python -m bench`: run the benchmark suite, print a table, write bench/results/latest.json.

    python -m bench                 # everything, default sizes (see bench/README.md for run times)
    python -m bench --quick         # 1k clients only, smaller storms (about 3 minutes)
    python -m bench --scenarios fanout,memory --sizes 1000,10000 --servers sidecar,node
    python -m bench --no-real       # only the fake-Strapi scenarios (no Strapi process)

Scenarios: fanout, memory, connect (one connection phase), storm, reads, scaleout (1 vs 2 sidecar
processes sharing a Redis; fake Strapi), real (publication and read storm against the real Strapi
in strapi-fixtures/). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from bench.fake_suite import FakeBench, FakeOptions
from bench.machine import describe_machine
from bench.procs import CLIENT_KINDS, RESULTS, ClientProcess, Secrets, raise_fd_limit, sign_tokens
from bench.real_suite import RealBench, RealOptions
from bench.report import render_table

SCENARIOS = ("fanout", "memory", "connect", "storm", "reads", "scaleout", "real")
log = logging.getLogger("bench")


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1k clients, smaller storms and reads")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    parser.add_argument("--no-real", action="store_true", help="skip the real-Strapi scenarios")
    parser.add_argument("--servers", default="sidecar,node", help="sidecar, node or both")
    parser.add_argument("--sizes", type=_ints, help="fan-out sizes (default 1000,5000,10000)")
    parser.add_argument("--rounds", type=int, help="measured publications per size (default 6)")
    parser.add_argument(
        "--scaleout-sizes", type=_ints, help="fan-out sizes for 1 vs 2 processes (default 5000,10000)"
    )
    parser.add_argument("--storm", type=int, help="clients in the connect storm (default 2000)")
    parser.add_argument("--reads", type=int, help="readers in the fake-Strapi read storm (default 1000)")
    parser.add_argument("--real-users", type=int, help="audience of the real publication (default 2000)")
    parser.add_argument("--real-reads", type=int, help="readers in the real read storm (default 1000)")
    parser.add_argument("--real-rounds", type=int, help="real publications per server (default 5)")
    parser.add_argument("--per-process", type=int, default=2500, help="clients per Node client process")
    parser.add_argument(
        "--client",
        choices=CLIENT_KINDS,
        default=CLIENT_KINDS[0],
        help="lean: the Socket.IO protocol over a bare ws WebSocket; official: socket.io-client",
    )
    parser.add_argument(
        "--connect-deadline",
        type=float,
        default=150.0,
        help="seconds a paced connection phase may take; clients not tried by then are left out",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy flame graphs of the sidecar")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or ([1000] if quick else [1000, 5000, 10000])
    args.rounds = args.rounds or (2 if quick else 6)
    args.scaleout_sizes = args.scaleout_sizes or ([max(args.sizes)] if quick else [5000, 10000])
    args.storm = args.storm or (1000 if quick else 2000)
    args.reads = args.reads or (300 if quick else 1000)
    args.real_users = args.real_users or (500 if quick else 2000)
    args.real_reads = args.real_reads or (100 if quick else 1000)
    args.real_rounds = args.real_rounds or (2 if quick else 5)
    chosen = {part.strip() for part in args.scenarios.split(",") if part.strip()}
    unknown = chosen - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.no_real:
        chosen.discard("real")
    args.chosen = chosen
    args.server_list = [part.strip() for part in args.servers.split(",") if part.strip()]
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    secrets_ = Secrets(
        api_token=secrets.token_hex(32),
        jwt_secret=secrets.token_hex(32),
        webhook_secret=secrets.token_hex(16),
    )
    started = time.time()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": describe_machine(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "options": {
            "scenarios": sorted(args.chosen),
            "servers": args.server_list,
            "sizes": args.sizes,
            "scaleout_sizes": args.scaleout_sizes,
            "rounds": args.rounds,
            "storm": args.storm,
            "reads": args.reads,
            "real_users": args.real_users,
            "real_reads": args.real_reads,
            "real_rounds": args.real_rounds,
            "per_process": args.per_process,
            "client": args.client,
            "connect_deadline": args.connect_deadline,
        },
    }
    ClientProcess.kind = args.client
    fake_scenarios = args.chosen - {"real"}
    if fake_scenarios:
        count = max([*args.sizes, *args.scaleout_sizes, args.storm, args.reads])
        tokens = sign_tokens(secrets_.jwt_secret, range(1, count + 200))
        options = FakeOptions(
            servers=args.server_list,
            sizes=args.sizes,
            rounds=args.rounds,
            storm_size=args.storm,
            reads=args.reads,
            per_process=args.per_process,
            scenarios=fake_scenarios,
            profile=args.profile,
            connect_deadline=args.connect_deadline,
            scaleout_sizes=args.scaleout_sizes,
        )
        t0 = time.monotonic()
        bench = FakeBench(options, secrets_, tokens)
        results["fake"] = bench.results
        try:
            await bench.run()
        except Exception as exc:
            log.exception("the fake-Strapi scenarios failed")
            results["fake"]["error"] = f"{type(exc).__name__}: {exc}"
        results["fake"]["seconds"] = round(time.monotonic() - t0, 1)
    if "real" in args.chosen:
        options_real = RealOptions(
            servers=args.server_list,
            users=args.real_users,
            reads=args.real_reads,
            rounds=args.real_rounds,
            per_process=min(args.per_process, 1000),
            profile=args.profile,
            connect_deadline=args.connect_deadline,
        )
        t0 = time.monotonic()
        real = RealBench(options_real, secrets_)
        results["real"] = real.results
        try:
            await real.run()
        except Exception as exc:
            log.exception("the real-Strapi scenarios failed")
            results["real"]["error"] = f"{type(exc).__name__}: {exc}"
        results["real"]["seconds"] = round(time.monotonic() - t0, 1)
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["duration_s"] = round(time.time() - started, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    limit = raise_fd_limit()
    needed = max([*args.sizes, *args.scaleout_sizes, args.storm]) + 1000
    if limit < needed:
        log.warning("open-file limit is %d; %d clients need more (raise `ulimit -n`)", limit, needed)
    load = os.getloadavg()[0]
    if load > 0.5:
        log.warning(
            "load average is %.2f before starting: other work on this machine skews the figures", load
        )
    results = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(render_table(results))
    print(f"\nJSON: {args.out}  (took {results['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
