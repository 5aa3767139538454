"""adapter/collector.py: no garbage collector pause from a publish webhook's parse until its
notification has been delivered, and never a collector left switched off."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from adapter.collector import CollectorHold, PauseLog, collector, pauses
from adapter.metrics import Metrics
from tests.conftest import WEBHOOK_SECRET, make_settings
from tests.unit.test_dispatch import FakeLifecycle, make_dispatcher, sample
from webhooks.receiver import WebhookReceiver


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    assert not collector.held  # every test leaves the shared hold released
    gc.enable()


async def test_holds_are_counted_and_the_last_release_turns_the_collector_back_on() -> None:
    hold = CollectorHold()
    hold.acquire()
    hold.acquire()
    assert not gc.isenabled()
    hold.release()
    assert not gc.isenabled()  # another delivery still holds it
    hold.release()
    assert gc.isenabled()
    hold.release()  # one release too many changes nothing
    assert gc.isenabled()


async def test_a_collector_switched_off_by_someone_else_stays_off() -> None:
    gc.disable()
    hold = CollectorHold()
    with hold.holding():
        assert not gc.isenabled()
    assert not gc.isenabled()


async def test_a_hold_never_outlasts_its_limit(caplog: pytest.LogCaptureFixture) -> None:
    hold = CollectorHold(max_seconds=0.05)
    hold.acquire()
    assert not gc.isenabled()
    with caplog.at_level(logging.WARNING, logger="adapter.collector"):
        await asyncio.sleep(0.15)
    assert gc.isenabled()  # a delivery stuck on Redis does not switch the collector off for good
    assert any("resumed" in record.getMessage() for record in caplog.records)
    hold.release()
    assert gc.isenabled()


async def test_no_collection_runs_from_a_publish_webhook_until_its_announcement_is_done() -> None:
    lifecycle = FakeLifecycle()
    lifecycle.announce_gate = asyncio.Event()
    dispatcher = make_dispatcher(lifecycle)
    receiver = WebhookReceiver(make_settings(), dispatcher)
    app = Starlette(routes=[Route("/webhooks/strapi", receiver.handle, methods=["POST"])])
    collections: list[str] = []
    states: list[bool] = []

    def noted(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collections.append("collected")

    body = json.dumps(sample("entry.publish", "api::notification.notification"))
    gc.callbacks.append(noted)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sidecar"
        ) as http:
            response = await http.post(
                "/webhooks/strapi", content=body, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"}
            )
            assert response.status_code == 202
            await asyncio.sleep(0.05)
            assert len(lifecycle.delivered) == 1  # the announcement is under way...
            states.append(gc.isenabled())
            # ...and allocations that would make the collector run do not, meanwhile
            before = len(collections)
            garbage = [[index] for index in range(3 * gc.get_threshold()[0])]
            del garbage
            assert len(collections) == before
            lifecycle.announce_gate.set()
            await asyncio.sleep(0.05)
            assert len(lifecycle.announced) == 1
            states.append(gc.isenabled())
    finally:
        gc.callbacks.remove(noted)
    assert states == [False, True]


def test_each_collection_lands_in_the_first_bucket_it_fits_by_generation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([0.0, 0.004, 1.0, 1.05, 2.0, 2.004, 3.0, 5.0])
    monkeypatch.setattr("adapter.collector.time.perf_counter", lambda: next(clock))
    log = PauseLog(buckets=(0.005, 0.1))
    for generation in (0, 1, 0, 2):
        log._on_collection("start", {"generation": generation})
        log._on_collection("stop", {"generation": generation})
    snapshot = log.snapshot()
    assert snapshot[0][0] == [2, 2, 2]  # 4 ms twice: both within the first bucket
    assert snapshot[0][1] == pytest.approx(0.008)
    assert snapshot[1][0] == [0, 1, 1]  # 50 ms
    assert snapshot[2][0] == [0, 0, 1]  # 2 s: over the last bucket, in the total only
    assert snapshot[2][1] == pytest.approx(2.0)


def test_the_metric_times_the_process_s_real_collections() -> None:
    metrics = Metrics()
    Metrics()  # another app in the same process

    def samples() -> dict[str, float]:
        text = metrics.render().decode()
        return {
            sample: float(value)
            for sample, _, value in (line.rpartition(" ") for line in text.splitlines())
            if sample.startswith("sidecar_gc_pause_seconds")
        }

    before = samples()
    gc.collect(0)
    gc.collect(0)
    gc.collect(2)
    after = samples()

    def grew(sample: str) -> float:
        return after.get(sample, 0.0) - before.get(sample, 0.0)

    assert grew('sidecar_gc_pause_seconds_count{generation="0"}') >= 2
    assert grew('sidecar_gc_pause_seconds_count{generation="2"}') >= 1
    assert grew('sidecar_gc_pause_seconds_sum{generation="2"}') > 0  # a full collection takes time
    assert (
        after['sidecar_gc_pause_seconds_bucket{generation="2",le="+Inf"}']
        == (after['sidecar_gc_pause_seconds_count{generation="2"}'])
    )
    assert gc.callbacks.count(pauses._on_collection) == 1  # one hook, however many apps
