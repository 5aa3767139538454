"""The demo page in a real browser: headless Chromium (Debian's), driven by Playwright.

The whole demo stack runs as `make demo` runs it (Strapi, `python -m adapter`, the page server),
on free ports with a temporary data folder. The browser signs in as a demo user, receives a
notification published through Strapi's REST API, and marks it read with a click; the
READNOTIFICATION must then be in Strapi with that user.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from demo import DemoConfig, DemoStack

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
SCREENSHOT = ARTIFACTS / "browser-demo.png"
EXPECT_MS = 15_000


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    config = DemoConfig(strapi_port=0, sidecar_port=0, page_port=0, data_dir=tmp_path_factory.mktemp("demo"))
    with DemoStack(config) as stack:
        yield stack


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make e2e-deps` (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context; the test fails if the page logs an error or throws."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    opened.on("console", lambda message: _collect_error(message, problems))
    try:
        yield opened
    finally:
        context.close()
    assert problems == []


def _collect_error(message: ConsoleMessage, into: list[str]) -> None:
    if message.type == "error":
        into.append(f"console: {message.text}")


@pytest.fixture
def strapi(demo: DemoStack) -> Iterator[httpx.Client]:
    """Strapi's REST API with the demo's API token, as a back office would call it."""
    headers = {"Authorization": f"Bearer {demo.credentials.api_token}"}
    with httpx.Client(base_url=demo.strapi_url, headers=headers, timeout=30) as client:
        yield client


def sign_in(page: Page, demo: DemoStack, username: str) -> int:
    """Sign in through the page's form; return the user id the page connected with."""
    password = next(user.password for user in demo.credentials.users if user.username == username)
    page.goto(demo.page_url)
    page.fill("#identifier", username)
    page.fill("#password", password)
    page.click("#signin-button")
    expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=EXPECT_MS)
    user_id = page.locator("body").get_attribute("data-user-id")
    assert user_id is not None
    return int(user_id)


def eventually(check: Callable[[], Any], within: float = 15.0) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        time.sleep(0.2)
    return result


def readers_of(strapi: httpx.Client, document_id: str) -> list[int]:
    response = strapi.get(
        "/api/read-notifications",
        params={
            "filters[notification][documentId][$eq]": document_id,
            "populate[users_permissions_users][fields][0]": "id",
        },
    )
    response.raise_for_status()
    return sorted(int(u["id"]) for r in response.json()["data"] for u in r["users_permissions_users"])


@pytest.mark.timeout(180)  # the first test pays for starting Strapi, the sidecar and Chromium
def test_browser_receives_a_notification_and_marks_it_read(
    demo: DemoStack, page: Page, strapi: httpx.Client
) -> None:
    alice_id = sign_in(page, demo, "alice")
    [alice] = strapi.get("/api/users", params={"filters[username][$eq]": "alice"}).json()
    assert alice_id == alice["id"]

    message = f"Your report is ready ({secrets.token_hex(3)})"
    created = strapi.post(
        "/api/notifications",
        json={
            "data": {
                "message": message,
                "url": "https://example.com/reports/q3",
                "date": "2026-11-25T10:00:00Z",
                "notification_users": [alice_id],
            }
        },
    )
    created.raise_for_status()
    document_id = created.json()["data"]["documentId"]

    item = page.locator(".notification", has_text=message)
    expect(item).to_be_visible(timeout=EXPECT_MS)
    expect(item).to_have_attribute("data-read", "false")
    published = strapi.get(f"/api/notifications/{document_id}").json()["data"]
    assert item.get_attribute("data-id") == str(published["id"])  # the seed's data-id contract
    assert item.get_attribute("data-document-id") == document_id

    item.click()
    expect(item).to_have_attribute("data-read", "true", timeout=EXPECT_MS)
    expect(item).to_have_class(re.compile(r"\bis-read\b"))
    expect(item.locator(".state")).to_have_text("✓ Read")
    assert eventually(lambda: readers_of(strapi, document_id)) == [alice_id]

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_browser_publishes_to_all_users_from_the_form(demo: DemoStack, page: Page) -> None:
    sign_in(page, demo, "bob")
    assert demo.credentials.api_token not in page.content()
    assert demo.credentials.api_token not in page.evaluate("JSON.stringify(state.config)")

    message = f"Lunch is served ({secrets.token_hex(3)})"
    page.fill("#message", message)
    page.check("#all-users", force=True)  # the switch's box is visually hidden
    page.click("#send-button")
    expect(page.locator("#compose-feedback")).to_contain_text("Published to all users", timeout=EXPECT_MS)

    item = page.locator(".notification", has_text=message)
    expect(item).to_be_visible(timeout=EXPECT_MS)
    item.click()
    expect(item).to_have_attribute("data-read", "true", timeout=EXPECT_MS)
