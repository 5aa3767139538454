"""GET /readyz and GET /healthz of one process (no Redis); the Redis checks are in test_scaleout.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from adapter.app import create_app
from tests.conftest import STRAPI_URL, make_settings
from tests.serving import serve

EMPTY = {"data": [], "meta": {"pagination": {"page": 1, "pageSize": 25, "pageCount": 0, "total": 0}}}


def _app(router: respx.MockRouter) -> Any:
    router.get(f"{STRAPI_URL}/api/notifications").respond(json=EMPTY)  # the start-up reconciler
    settings = make_settings(reconcile_interval=0)
    return create_app(settings, transport=httpx.MockTransport(router.async_handler))


@pytest.fixture
def strapi() -> respx.MockRouter:
    return respx.MockRouter(assert_all_mocked=True, assert_all_called=False)


@pytest.fixture
async def sidecar(strapi: respx.MockRouter) -> AsyncIterator[str]:
    async with serve(_app(strapi)) as url:
        yield url


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(url)


async def test_readyz_is_ready_when_strapi_answers(sidecar: str, strapi: respx.MockRouter) -> None:
    health = strapi.get(f"{STRAPI_URL}/_health").respond(204)

    response = await _get(f"{sidecar}/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"strapi": {"ok": True}}}
    assert health.called


async def test_readyz_says_what_is_wrong_when_strapi_is_down(sidecar: str, strapi: respx.MockRouter) -> None:
    strapi.get(f"{STRAPI_URL}/_health").mock(side_effect=httpx.ConnectError("refused"))

    response = await _get(f"{sidecar}/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unready",
        "checks": {
            "strapi": {
                "ok": False,
                "error": "Strapi GET /_health failed: unreachable: ConnectError (GET /_health)",
            }
        },
    }


async def test_readyz_is_unready_while_strapi_fails(sidecar: str, strapi: respx.MockRouter) -> None:
    strapi.get(f"{STRAPI_URL}/_health").respond(503, json={"error": {"message": "starting"}})

    response = await _get(f"{sidecar}/readyz")

    assert response.status_code == 503
    assert (
        response.json()["checks"]["strapi"]["error"]
        == "Strapi GET /_health failed: 503 starting (GET /_health)"
    )


async def test_healthz_stays_alive_while_strapi_is_down(sidecar: str, strapi: respx.MockRouter) -> None:
    strapi.get(f"{STRAPI_URL}/_health").mock(side_effect=httpx.ConnectError("refused"))

    response = await _get(f"{sidecar}/healthz")

    assert response.status_code == 200


async def test_readyz_does_not_wait_long_for_a_hanging_strapi(
    sidecar: str, strapi: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("adapter.health.STRAPI_TIMEOUT_SECONDS", 0.2)

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(204)

    strapi.get(f"{STRAPI_URL}/_health").mock(side_effect=hang)

    response = await _get(f"{sidecar}/readyz")

    assert response.status_code == 503
    assert "did not answer GET /_health" in response.json()["checks"]["strapi"]["error"]
