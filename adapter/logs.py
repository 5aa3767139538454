"""Log lines: plain text (the default) or JSON lines (`LOG_FORMAT=json`), never with a secret.

`configure_logging(settings)` is called once, by the entry point, before anything logs. Both
formats go through one redaction step: each configured secret (the API token, the JWT secret,
the webhook secret, the Redis password) is replaced by `[redacted]` wherever it shows up - a
message, an exception, a field - in case a library ever prints one.

A JSON line holds `time` (UTC, ISO 8601), `level`, `logger`, `message`, `pid`, `worker` (with
`--workers`), `exception` when there is one, and any `extra` fields the caller attached.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from adapter.settings import Settings

__all__ = ["JsonFormatter", "Redactor", "TextFormatter", "configure_logging", "secrets_of"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s [worker %(worker)s] %(name)s: %(message)s"
REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4  # shorter "secrets" would redact ordinary words
QUIETER = {"httpx": logging.WARNING}  # one line per Strapi request is noise
# python-socketio and python-engineio give their loggers a handler of their own unless a level is
# set first; with one set, their lines reach ours (once, and formatted like every other line).
LIBRARY_LOGGERS = ("socketio.server", "engineio.server")
# A record's own attributes (not `extra` fields); uvicorn's `color_message` repeats the message.
RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value the settings hold (the Redis URL's password included)."""
    values = [
        settings.strapi_api_token.get_secret_value(),
        settings.strapi_jwt_secret.get_secret_value(),
        settings.webhook_secret.get_secret_value(),
    ]
    redis_url = settings.redis_url.get_secret_value()
    if redis_url:
        password = urlsplit(redis_url).password
        if password:
            values += [password, unquote(password)]
    return values


class Redactor:
    """Replaces each secret in a text with `[redacted]` (longest first)."""

    def __init__(self, secrets: Iterable[str]):
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, redacted."""

    def __init__(self, redact: Redactor, worker: int | None = None):
        super().__init__(TEXT_FORMAT if worker is None else WORKER_TEXT_FORMAT)
        self._redact = redact
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        if self._worker is not None:
            record.worker = self._worker
        return self._redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, every string in it redacted."""

    def __init__(self, redact: Redactor, worker: int | None = None):
        super().__init__()
        self._redact = redact
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if self._worker is not None:
            entry["worker"] = self._worker
        for name, value in vars(record).items():
            if name not in RECORD_FIELDS and name not in entry and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(self._redacted(entry), default=str, ensure_ascii=False)

    def _redacted(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, dict):
            return {key: self._redacted(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._redacted(item) for item in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self._redact(str(value))


def configure_logging(settings: Settings, *, worker: int | None = None) -> logging.Handler:
    """Send every log line to stderr, in the configured format; returns the handler."""
    redact = Redactor(secrets_of(settings))
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter if settings.log_format == "json" else TextFormatter
    handler.setFormatter(formatter(redact, worker))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name, level in QUIETER.items():
        logging.getLogger(name).setLevel(level)
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.setLevel(logging.ERROR)
        for old in list(library.handlers):
            library.removeHandler(old)
    return handler
