"""Batched catch-ups against Strapi 5's own query engine: the same pages as one user at a time."""

from __future__ import annotations

import asyncio

import pytest

from adapter.inbox import Inbox
from adapter.notifications import KnownIds
from adapter.settings import Settings
from adapter.strapi import StrapiClient, build_http_client
from tests.conftest import make_settings
from tests.e2e.harness import Stack

pytestmark = pytest.mark.e2e


def _settings(stack: Stack) -> Settings:
    return make_settings(
        strapi_url=stack.strapi.url, strapi_api_token=stack.api_token, strapi_jwt_secret=stack.jwt_secret
    )


async def test_batched_catch_ups_equal_one_page_each_with_two_requests(stack: Stack, unique: str) -> None:
    ana, bea, cid = (stack.create_user(f"{unique}{name}") for name in ("ana", "bea", "cid"))
    first = stack.create_notification(message="for ana and bea", notification_users=[ana, bea])
    second = stack.create_notification(message="for bea", notification_users=[bea])
    third = stack.create_notification(message="for ana and cid", notification_users=[ana, cid])
    for document_id, readers in ((first["documentId"], [ana, bea]), (second["documentId"], [bea])):
        stack.api().post(
            "/api/read-notifications",
            json={
                "data": {
                    "notification": {"connect": [{"documentId": document_id}]},
                    "users_permissions_users": {"connect": [{"id": user_id} for user_id in readers]},
                }
            },
        ).raise_for_status()
    requests: list[str] = []
    async with build_http_client(stack.strapi.url, stack.api_token, 30) as http:
        settings = _settings(stack)
        one_by_one = Inbox(StrapiClient(http), settings, KnownIds(100))
        expected = {user: await one_by_one.page(user, cursor=None, limit=2) for user in (ana, bea, cid)}
        counted = StrapiClient(http, lambda method, status, seconds: requests.append(f"{method} {status}"))
        batched = Inbox(counted, settings, KnownIds(100))

        pages = await asyncio.gather(*(batched.catch_up(user, 2) for user in (ana, bea, cid)))

    assert dict(zip((ana, bea, cid), pages, strict=True)) == expected
    assert [item["documentId"] for item in expected[ana].items] == [third["documentId"]]
    assert (expected[ana].unread, expected[bea].unread, expected[cid].unread) == (1, 0, 1)
    assert requests == ["GET 200", "GET 200"]
