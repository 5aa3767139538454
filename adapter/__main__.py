"""`python -m adapter`: run the sidecar with uvicorn.

Every setting comes from the environment (or `.env`); see the README for the list.
`--workers N` runs N processes on consecutive ports (adapter/workers.py); `check` tries the
configuration against the live Strapi and exits (adapter/check.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn
from pydantic import ValidationError

from adapter import __version__
from adapter.app import Sidecar, build_sidecar
from adapter.check import run_check
from adapter.lean import LeanHttpToolsProtocol, LeanWebSocketProtocol
from adapter.logs import configure_logging
from adapter.settings import Settings, describe_validation_error
from adapter.workers import Supervisor, worker_command

__all__ = ["SERVER_OPTIONS", "main"]

logger = logging.getLogger("adapter")

GRACEFUL_SHUTDOWN_SECONDS = 10
# Strapi sends its webhooks over a keep-alive connection and silently drops a delivery that fails
# on a connection the receiver closed meanwhile: keep idle HTTP connections open well beyond
# uvicorn's 5 s (load balancers commonly use 60 s).
KEEP_ALIVE_SECONDS = 65
# How uvicorn serves the sidecar (what matters for fan-out speed and memory per connection).
SERVER_OPTIONS: dict[str, Any] = {
    # uvicorn's httptools and sans-I/O WebSocket protocols, keeping less per connection and
    # leaving less for the garbage collector (adapter/lean.py).
    "http": LeanHttpToolsProtocol,
    "ws": LeanWebSocketProtocol,
    # No permessage-deflate (socket.io's Node server declines it by default too): a zlib context
    # per connection was about half of its memory, and compressing every message once per
    # recipient much of a fan-out's CPU. Notifications are small JSON.
    "ws_per_message_deflate": False,
    # Engine.IO pings every client itself (and closes the silent ones): WebSocket-level pings on
    # top would only add a timer and a frame per connection.
    "ws_ping_interval": None,
    "timeout_keep_alive": KEEP_ALIVE_SECONDS,
}
# The cyclic garbage collector runs after every 700 net new container objects by default: a
# fan-out to 10,000 sockets (or 10,000 connections) allocates millions, and each collection
# walks everything alive, so collections were a large share of a fan-out's time. Reference
# counting frees almost everything anyway; cycles are collected after 200,000 net allocations.
GC_THRESHOLDS = (200_000, 50, 1000)
DESCRIPTION = """\
Real-time notification sidecar for Strapi v5.

Serves, on one port: Socket.IO (path /socket.io/), POST /webhooks/strapi for Strapi's webhooks,
GET /healthz, GET /readyz and GET /metrics. Configuration comes from environment variables or a
.env file; required: STRAPI_API_TOKEN, STRAPI_JWT_SECRET, WEBHOOK_SECRET. See README.md for every
setting. `python -m adapter check` tries the configuration against Strapi and exits.
"""


class _Server(uvicorn.Server):
    """uvicorn, but client transports are closed first on shutdown so clients reconnect at once."""

    def __init__(self, config: uvicorn.Config, sidecar: Sidecar):
        super().__init__(config)
        self._sidecar = sidecar

    async def shutdown(self, sockets: Sequence[object] | None = None) -> None:
        try:
            await self._sidecar.close_connections()
        except Exception:
            logger.exception("closing client connections failed")
        await super().shutdown(sockets=sockets)  # type: ignore[arg-type]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m adapter",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="listen address (default: SIDECAR_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default: SIDECAR_PORT or 1338)")
    parser.add_argument("--env-file", default=".env", help="dotenv file to read if present (default: .env)")
    parser.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="run N processes on ports PORT..PORT+N-1 (N > 1 needs REDIS_URL; see README, Scaling out)",
    )
    parser.add_argument("--worker-id", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{check}")
    check = commands.add_parser(
        "check",
        help="try the configuration against the live Strapi (and Redis), print what is wrong, exit",
        description="Try the configuration against the live Strapi (and Redis); exit 1 if anything fails.",
    )
    check.add_argument("--token", help="a user's JWT from Strapi to verify too ('-': read it from stdin)")
    check.add_argument("--env-file", default=argparse.SUPPRESS, help="dotenv file (default: .env)")
    return parser.parse_args(argv)


def _sample_token(given: str | None) -> str | None:
    """`--token`: the token itself, or `-` to read it from stdin (keeps it out of the shell history)."""
    if given == "-":
        return sys.stdin.readline().strip() or None
    return given or None


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def load_settings(args: argparse.Namespace) -> Settings:
    values: dict[str, Any] = {"_env_file": args.env_file}
    if args.host is not None:
        values["sidecar_host"] = args.host
    if args.port is not None:
        values["sidecar_port"] = args.port
    return Settings(**values)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        settings = load_settings(args)
    except ValidationError as exc:
        print(describe_validation_error(exc), file=sys.stderr)
        return 2
    if args.command == "check":
        configure_logging(settings)
        return run_check(settings, sys.stdout, token=_sample_token(args.token))
    if args.workers > 1:
        return _supervise(args, settings)
    configure_logging(settings, worker=args.worker_id)
    sidecar = build_sidecar(settings)
    config = uvicorn.Config(
        sidecar.asgi,
        host=settings.sidecar_host,
        port=settings.sidecar_port,
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **SERVER_OPTIONS,
    )
    gc.collect()
    gc.freeze()  # what start-up built lives as long as the process: never walk it again
    gc.set_threshold(*GC_THRESHOLDS)
    asyncio.run(_Server(config, sidecar).serve())
    return 0


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.redis_url.get_secret_value():
        print(
            f"--workers {args.workers} needs REDIS_URL: without Redis each process would reach only "
            "its own sockets. Set REDIS_URL (see README, Scaling out), or run one process.",
            file=sys.stderr,
        )
        return 2
    if settings.sidecar_port == 0:
        print("--workers needs a fixed port (workers listen on PORT..PORT+N-1), not 0", file=sys.stderr)
        return 2
    configure_logging(settings)
    host, port = settings.sidecar_host, settings.sidecar_port
    logger.info("running %d workers on %s, ports %d to %d", args.workers, host, port, port + args.workers - 1)
    commands = [worker_command(index, host, port, args.env_file) for index in range(args.workers)]
    return Supervisor(commands).run()


if __name__ == "__main__":
    sys.exit(main())
