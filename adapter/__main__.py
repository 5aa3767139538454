"""`python -m adapter`: run the sidecar with uvicorn.

Every setting comes from the environment (or `.env`); see the README for the list.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn
from pydantic import ValidationError

from adapter import __version__
from adapter.app import Sidecar, build_sidecar
from adapter.settings import Settings, describe_validation_error

__all__ = ["main"]

logger = logging.getLogger("adapter")

GRACEFUL_SHUTDOWN_SECONDS = 10
DESCRIPTION = """\
Real-time notification sidecar for Strapi v5.

Serves, on one port: Socket.IO (path /socket.io/), POST /webhooks/strapi for Strapi's webhooks,
and GET /healthz. Configuration comes from environment variables or a .env file; required:
STRAPI_API_TOKEN, STRAPI_JWT_SECRET, WEBHOOK_SECRET. See README.md for every setting.
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
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


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
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Strapi request is noise
    sidecar = build_sidecar(settings)
    config = uvicorn.Config(
        sidecar.asgi,
        host=settings.sidecar_host,
        port=settings.sidecar_port,
        lifespan="on",
        access_log=False,
        log_config=None,
        ws="websockets-sansio",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    asyncio.run(_Server(config, sidecar).serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
