"""`python -m demo` (what `make demo` runs): start everything, print where to go, stop on Ctrl-C."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from demo.config import DemoConfig, parse_config
from demo.stack import DemoStack, PortInUse

__all__ = ["main"]

WATCH_INTERVAL = 0.5


class Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def _say(line: str = "") -> None:
    print(line, flush=True)


def _banner(stack: DemoStack, config: DemoConfig, seconds: float) -> str:
    width = max(len(user.username) for user in stack.credentials.users)
    users = "\n".join(
        f"      {user.username:<{width}}  password {user.password}" for user in stack.credentials.users
    )
    return f"""
  Ready in {seconds:.1f} s.

  Open the demo page:  {stack.page_url}

    Strapi   {stack.strapi_url}   (REST API; no admin panel)
    Sidecar  {stack.sidecar_url}   (Socket.IO, POST /webhooks/strapi, GET /healthz)

    Demo users (sign in with any of them; try two browser windows side by side):
{users}

  Data and logs: {config.data_dir}  (kept between runs; delete it to start over)
  Press Ctrl-C to stop everything.
"""


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(argv)
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    began = time.monotonic()
    stack: DemoStack | None = None
    started = False
    try:
        stack = DemoStack(config, announce=_say)
        stack.start()
        started = True
        _say(_banner(stack, config, time.monotonic() - began))
        while (problem := stack.problem()) is None:
            time.sleep(WATCH_INTERVAL)
        print(f"demo: {problem}", file=sys.stderr)
        return 1
    except Stop as stop:
        _say(f"\nStopping ({stop}) ...")
        started = True
        return 0
    except (PortInUse, RuntimeError, ValueError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if stack is not None:
            stack.stop()
        if started:
            _say("Stopped: Strapi, the sidecar and the page are down.")


if __name__ == "__main__":
    sys.exit(main())
