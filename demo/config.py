"""Where the demo listens and keeps its data: flags first, then DEMO_* variables, then defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_PAGE_PORT",
    "DEFAULT_SIDECAR_PORT",
    "DEFAULT_STRAPI_PORT",
    "DemoConfig",
    "browser_host",
    "parse_config",
]

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_DATA_DIR = PACKAGE_DIR / ".data"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_STRAPI_PORT = 1337
DEFAULT_SIDECAR_PORT = 1338
DEFAULT_PAGE_PORT = 8080

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 (recognised, not bound)

EPILOG = """\
Every flag has an environment variable: DEMO_HOST, DEMO_STRAPI_PORT, DEMO_SIDECAR_PORT,
DEMO_PAGE_PORT, DEMO_DATA_DIR. A port of 0 picks a free one. Delete the data folder to start over
(new users, passwords and secrets).
"""


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """The demo's three ports (0: any free port), its address and its data folder."""

    host: str = DEFAULT_HOST
    strapi_port: int = DEFAULT_STRAPI_PORT
    sidecar_port: int = DEFAULT_SIDECAR_PORT
    page_port: int = DEFAULT_PAGE_PORT
    data_dir: Path = DEFAULT_DATA_DIR


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {value}")
    return value


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> DemoConfig:
    """Read the command line and the environment into a `DemoConfig`."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Run Strapi, the notification sidecar and a page to try them, until Ctrl-C.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=env.get("DEMO_HOST", DEFAULT_HOST), help="listen address")
    for name, default, what in (
        ("strapi", DEFAULT_STRAPI_PORT, "Strapi"),
        ("sidecar", DEFAULT_SIDECAR_PORT, "the sidecar"),
        ("page", DEFAULT_PAGE_PORT, "the demo page"),
    ):
        variable = f"DEMO_{name.upper()}_PORT"
        parser.add_argument(
            f"--{name}-port",
            type=_port,
            default=env.get(variable, str(default)),  # a string default goes through `type`
            help=f"port of {what} (default {default}, or ${variable})",
        )
    default_dir = env.get("DEMO_DATA_DIR", str(DEFAULT_DATA_DIR))
    parser.add_argument("--data-dir", type=Path, default=Path(default_dir), help="kept between runs")
    args = parser.parse_args(argv)
    return DemoConfig(args.host, args.strapi_port, args.sidecar_port, args.page_port, args.data_dir.resolve())


def browser_host(host: str) -> str:
    """The address a browser (or Strapi's webhook) on this machine uses to reach `host`."""
    return "127.0.0.1" if host in WILDCARD_HOSTS else host
