"""Liveness and readiness, for load balancers and orchestrators.

- `GET /healthz`: 200 while the process runs (liveness: restart me only if this fails).
- `GET /readyz`: 200 when this process can do its job: Strapi answers `GET /_health`, and with
  `REDIS_URL`, Redis answers PING and events published through it come back to this process.
  Otherwise 503, with a JSON body naming each check and what is wrong with it. Send no new
  clients to a process while it is not ready.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from adapter.errors import StrapiError
from adapter.scaleout import Cluster
from adapter.strapi import StrapiClient

__all__ = ["Readiness"]

STRAPI_TIMEOUT_SECONDS = 3.0


class Readiness:
    """Runs the readiness checks; `endpoint` serves them as `GET /readyz`."""

    def __init__(self, strapi: StrapiClient, cluster: Cluster):
        self._strapi = strapi
        self._cluster = cluster

    async def check(self) -> dict[str, Any]:
        """`{"status": "ready"|"unready", "checks": {name: {"ok": bool, "error"?: str}}}`."""
        strapi, redis = await asyncio.gather(self._strapi_problem(), self._cluster.ping())
        problems: dict[str, str | None] = {"strapi": strapi}
        if self._cluster.scaled_out:
            problems["redis"] = redis
            problems["pubsub"] = self._cluster.pubsub_problem()
        checks = {
            name: {"ok": True} if problem is None else {"ok": False, "error": problem}
            for name, problem in problems.items()
        }
        ready = all(problem is None for problem in problems.values())
        return {"status": "ready" if ready else "unready", "checks": checks}

    async def endpoint(self, _: Request) -> JSONResponse:
        body = await self.check()
        return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)

    async def _strapi_problem(self) -> str | None:
        try:
            async with asyncio.timeout(STRAPI_TIMEOUT_SECONDS):
                await self._strapi.ping()
        except TimeoutError:
            return f"Strapi did not answer GET /_health within {STRAPI_TIMEOUT_SECONDS:g} s"
        except StrapiError as exc:
            return f"Strapi GET /_health failed: {exc}"
        return None
