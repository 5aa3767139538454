"""The sidecar's exceptions. Foreign errors (httpx, PyJWT) are translated where they enter.

SidecarError
├── StrapiError                  Strapi answered with an error, or could not be reached
│   ├── StrapiUnavailable        network failure, timeout or 5xx: worth retrying
│   └── StrapiNotFound           404
├── SharedStateUnavailable       Redis (REDIS_URL) could not be reached: worth retrying
├── AuthError                    a socket handshake is refused; `code` is stable
│   ├── MissingToken
│   ├── InvalidToken
│   ├── ExpiredToken
│   ├── UserMismatch
│   ├── BlockedUser
│   ├── UnknownUser
│   └── AuthUnavailable          Strapi could not confirm the user right now
└── ReadError                    a `notification:read` that cannot succeed; `code` is stable
    ├── InvalidPayload
    ├── NotificationNotFound
    └── UpstreamError            Strapi failed while recording the read
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "AuthUnavailable",
    "BlockedUser",
    "ExpiredToken",
    "InvalidPayload",
    "InvalidToken",
    "MissingToken",
    "NotificationNotFound",
    "ReadError",
    "SharedStateUnavailable",
    "SidecarError",
    "StrapiError",
    "StrapiNotFound",
    "StrapiUnavailable",
    "UnknownUser",
    "UpstreamError",
    "UserMismatch",
]


class SidecarError(Exception):
    """Base of every error the sidecar raises on purpose."""


class StrapiError(SidecarError):
    """A Strapi request failed. `status` is the HTTP status, or None when nothing came back."""

    def __init__(self, message: str, *, status: int | None = None, method: str = "", path: str = ""):
        super().__init__(message)
        self.message = message
        self.status = status
        self.method = method
        self.path = path

    def __str__(self) -> str:
        where = f" ({self.method} {self.path})" if self.method else ""
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.message}{where}"


class StrapiUnavailable(StrapiError):
    """Strapi could not be reached, timed out, or failed on its side (5xx)."""


class StrapiNotFound(StrapiError):
    """Strapi answered 404."""


class SharedStateUnavailable(SidecarError):
    """The Redis that processes share state through could not be reached, or timed out."""


class AuthError(SidecarError):
    """A handshake refusal. `code` and `message` reach the client in `connect_error`."""

    code = "unauthorized"
    message = "unauthorized"

    def __init__(self, detail: str | None = None):
        super().__init__(detail or self.message)
        self.detail = detail


class MissingToken(AuthError):
    code, message = "missing_token", "missing token"


class InvalidToken(AuthError):
    code, message = "invalid_token", "invalid token"


class ExpiredToken(AuthError):
    code, message = "expired_token", "expired token"


class UserMismatch(AuthError):
    code, message = "user_mismatch", "user mismatch"


class BlockedUser(AuthError):
    code, message = "blocked_user", "blocked user"


class UnknownUser(AuthError):
    code, message = "unknown_user", "unknown user"


class AuthUnavailable(AuthError):
    code, message = "auth_unavailable", "cannot verify user right now"


class ReadError(SidecarError):
    """A `notification:read` that cannot be done; `code` goes into the error acknowledgement."""

    code = "read_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidPayload(ReadError):
    code = "invalid_payload"


class NotificationNotFound(ReadError):
    code = "not_found"


class UpstreamError(ReadError):
    code = "upstream_error"
