"""Configuration: one `Settings` object, read from the environment (and an optional `.env`).

Build it once at the entry point and hand it down; nothing reads the environment elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "describe_validation_error"]

REDIS_SCHEMES = ("redis", "rediss", "unix")


class Settings(BaseSettings):
    """Every knob of the sidecar. Field names are the environment variable names, upper-cased."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,  # an invalid REDIS_URL may hold a password
    )

    # Where Strapi is and how to talk to it.
    strapi_url: str = Field("http://127.0.0.1:1337", pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    strapi_api_token: SecretStr
    strapi_jwt_secret: SecretStr
    strapi_timeout: float = Field(10.0, gt=0)

    # The webhook Strapi calls: `Authorization: Bearer <WEBHOOK_SECRET>`.
    webhook_secret: SecretStr
    # Strapi puts every selected user in a notification's webhook (~290 bytes each): 16 MiB is
    # ~55,000 users. The body is read only after the secret is checked, and never beyond this.
    webhook_max_body_bytes: int = Field(16_777_216, gt=0)

    # Where the sidecar listens.
    sidecar_host: str = "127.0.0.1"
    sidecar_port: int = Field(1338, ge=0, le=65535)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    log_level: str = Field("INFO", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    log_format: Literal["text", "json"] = "text"

    # Scale-out: several processes share events and state through Redis (empty: one process).
    redis_url: SecretStr = SecretStr("")
    redis_channel: str = Field("strapi-notify", pattern=r"^[A-Za-z0-9_.:-]+$")
    pubsub_check_seconds: float = Field(5.0, gt=0)

    # The Strapi content model (the seed's names by default).
    notification_collection: str = "notifications"
    notification_uid: str = "api::notification.notification"
    read_collection: str = "read-notifications"
    read_uid: str = "api::read-notification.read-notification"
    audience_field: str = "notification_users"
    read_users_field: str = "users_permissions_users"
    read_notification_field: str = "notification"
    user_uid: str = "plugin::users-permissions.user"

    # The Socket.IO wire contract (the seed's names by default).
    event_notification: str = "notificacion"
    event_read: str = "notification:read"
    room_prefix: str = "user-"
    # Inbox events beyond the seed (see docs/protocol.md).
    event_sync: str = "notification:sync"
    event_unread: str = "notification:unread"
    event_read_all: str = "notification:read-all"
    event_read_echo: str = "notification:read"
    event_removed: str = "notification:removed"
    event_auth_expired: str = "auth:expired"
    event_auth_refresh: str = "auth:refresh"

    # Behaviour.
    user_cache_ttl: float = Field(30.0, ge=0)
    connect_chunk_size: int = Field(500, gt=0)
    emitted_ledger_size: int = Field(10_000, gt=0)
    catchup_limit: int = Field(50, ge=0, le=100)
    unread_delay: float = Field(0.25, ge=0, le=10)
    read_retry_seconds: float = Field(30.0, ge=0)
    reconcile_interval: float = Field(60.0, ge=0)
    reconcile_lookback: float = Field(3600.0, ge=0)

    # Abuse limits (0 turns a limit off).
    max_sockets_per_user: int = Field(20, ge=0)
    socket_events_per_minute: int = Field(120, ge=0)
    user_events_per_minute: int = Field(600, ge=0)
    event_burst: int = Field(30, gt=0)
    handshake_failures_per_minute: int = Field(30, ge=0)
    max_payload_bytes: int = Field(65_536, ge=1024)
    renotify_on_republish: bool = False

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("strapi_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value().strip()
        if url and url.split("://", 1)[0].lower() not in REDIS_SCHEMES:
            raise ValueError("must start with redis://, rediss:// or unix://")
        return SecretStr(url)

    @field_validator("strapi_api_token", "strapi_jwt_secret", "webhook_secret")
    @classmethod
    def _not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    def room_for(self, user_id: int) -> str:
        """The Socket.IO room of one user (`user-5`)."""
        return f"{self.room_prefix}{user_id}"

    def rooms_for(self, user_ids: Iterable[int]) -> list[str]:
        """`room_for` of each user, in order (the settings read once, not once per user)."""
        prefix = self.room_prefix
        return [f"{prefix}{user_id}" for user_id in user_ids]


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad setting by its environment variable, never echoing a value."""
    parts = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]).upper() or "settings"
        reason = "is required" if item["type"] == "missing" else item["msg"].lower()
        parts.append(f"{name} {reason}")
    return "invalid configuration: " + "; ".join(parts)
