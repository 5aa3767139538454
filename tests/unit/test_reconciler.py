"""The reconciler: notifications changed without a webhook are processed anyway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from adapter.strapi import StrapiClient, build_http_client
from tests.conftest import STRAPI_URL, make_settings
from webhooks.reconciler import Reconciler

NOTIFICATIONS = f"{STRAPI_URL}/api/notifications"


class Versions:
    def __init__(self, **versions: str) -> None:
        self.versions = versions

    def processed_version(self, document_id: str) -> str | None:
        return self.versions.get(document_id)


class Scheduler:
    def __init__(self) -> None:
        self.scheduled: list[tuple[str, bool]] = []

    def reconcile(self, document_id: str, *, announce: bool) -> str:
        self.scheduled.append((document_id, announce))
        return "queued"


@pytest.fixture
async def strapi() -> AsyncIterator[StrapiClient]:
    async with build_http_client(STRAPI_URL, "tok", 5.0) as http:
        yield StrapiClient(http)


def _listing(*items: tuple[str, str]) -> dict[str, Any]:
    data = [{"documentId": doc, "updatedAt": at} for doc, at in items]
    return {
        "data": data,
        "meta": {"pagination": {"page": 1, "pageSize": 100, "pageCount": 1, "total": len(data)}},
    }


def _by_status(drafts: dict[str, Any], published: dict[str, Any]) -> Any:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=drafts if request.url.params["status"] == "draft" else published)

    return answer


async def test_reconciler_schedules_what_changed_after_the_processed_version(
    strapi: StrapiClient, respx_mock: respx.MockRouter
) -> None:
    drafts = _listing(("seen", "2026-11-25T10:00:00.000Z"), ("edited", "2026-11-25T10:05:00.000Z"))
    published = _listing(("seen", "2026-11-25T10:00:00.000Z"), ("lost", "2026-11-25T10:06:00.000Z"))
    route = respx_mock.get(NOTIFICATIONS).mock(side_effect=_by_status(drafts, published))
    scheduler = Scheduler()
    versions = Versions(seen="2026-11-25T10:00:00.000Z", edited="2026-11-25T10:01:00.000Z")
    reconciler = Reconciler(strapi, make_settings(), versions, scheduler)

    count = await reconciler.pass_once("2026-11-25T09:00:00.000Z", announce=True)

    assert count == 2
    # A lost publish is announced; a draft change only gets its selection checked.
    assert scheduler.scheduled == [("edited", False), ("lost", True)]
    params = route.calls[0].request.url.params
    assert params["filters[updatedAt][$gt]"] == "2026-11-25T09:00:00.000Z"
    assert params["sort[0]"] == "updatedAt:asc"


async def test_reconciler_start_up_pass_never_announces(
    strapi: StrapiClient, respx_mock: respx.MockRouter
) -> None:
    published = _listing(("whiledown", "2026-11-25T10:06:00.000Z"))
    respx_mock.get(NOTIFICATIONS).mock(side_effect=_by_status(_listing(), published))
    scheduler = Scheduler()
    reconciler = Reconciler(strapi, make_settings(), Versions(), scheduler)

    await reconciler.pass_once(None, announce=False)

    assert scheduler.scheduled == [("whiledown", False)]


async def test_reconciler_moves_its_watermark_with_a_small_overlap(
    strapi: StrapiClient, respx_mock: respx.MockRouter
) -> None:
    published = _listing(("a", "2026-11-25T10:06:00.000Z"))
    route = respx_mock.get(NOTIFICATIONS).mock(side_effect=_by_status(_listing(), published))
    reconciler = Reconciler(strapi, make_settings(), Versions(a="2026-11-25T10:06:00.000Z"), Scheduler())

    await reconciler.pass_once("2026-11-25T09:00:00.000Z", announce=True)
    await reconciler.pass_once(reconciler._since, announce=True)

    assert route.calls[-1].request.url.params["filters[updatedAt][$gt]"] == "2026-11-25T10:05:55.000Z"


async def test_reconciler_survives_strapi_being_down(
    strapi: StrapiClient, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.get(NOTIFICATIONS).mock(side_effect=httpx.ConnectError("down"))
    reconciler = Reconciler(strapi, make_settings(), Versions(), Scheduler())

    await reconciler._pass_logged(None, announce=True)

    assert "reconciler: cannot list notifications" in caplog.text
