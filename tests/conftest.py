"""Fixtures shared by the whole suite."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from adapter.settings import Settings

STRAPI_URL = "http://strapi.test"
API_TOKEN = "test-api-token"
JWT_SECRET = "test-jwt-secret-with-enough-length-for-hs256"
WEBHOOK_SECRET = "test-webhook-secret"


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "strapi_url": STRAPI_URL,
        "strapi_api_token": API_TOKEN,
        "strapi_jwt_secret": JWT_SECRET,
        "webhook_secret": WEBHOOK_SECRET,
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)


def legacy_token(user_id: int, *, secret: str = JWT_SECRET, ttl: float = 3600, **extra: Any) -> str:
    """A token as Strapi's users-permissions issues it in legacy mode."""
    now = int(time.time())
    return jwt.encode({"id": user_id, "iat": now, "exp": now + ttl, **extra}, secret, algorithm="HS256")


def access_token(user_id: int, *, secret: str = JWT_SECRET, ttl: float = 600, kind: str = "access") -> str:
    """A token as Strapi issues it in refresh mode (`type` "access" or "refresh")."""
    now = int(time.time())
    claims = {"userId": str(user_id), "sessionId": "s-1", "type": kind, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.fixture
def settings() -> Settings:
    return make_settings()
