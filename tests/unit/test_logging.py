"""adapter/logs.py: text and JSON log lines, and no secret in either."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from adapter.logs import JsonFormatter, Redactor, TextFormatter, configure_logging, secrets_of
from adapter.settings import Settings, describe_validation_error
from tests.conftest import API_TOKEN, JWT_SECRET, WEBHOOK_SECRET, make_settings

REDIS_PASSWORD = "r3dis-pass/word"  # in REDIS_URL as r3dis-pass%2Fword


def _record(
    message: str, *args: object, exc: BaseException | None = None, **extra: object
) -> logging.LogRecord:
    record = logging.LogRecord("adapter.test", logging.WARNING, __file__, 1, message, args, None)
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    for name, value in extra.items():
        setattr(record, name, value)
    return record


@pytest.fixture
def redact() -> Redactor:
    return Redactor(secrets_of(make_settings(redis_url="redis://:r3dis-pass%2Fword@cache:6379/0")))


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging() rewires the root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    libraries = {
        name: logging.getLogger(name).level for name in ("socketio.server", "engineio.server", "httpx")
    }
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in libraries.items():
            logging.getLogger(name).setLevel(old)


def test_logging_text_line_is_time_level_logger_message(redact: Redactor) -> None:
    line = TextFormatter(redact).format(_record("user %s connected", 5))

    assert line.endswith(" WARNING adapter.test: user 5 connected")


def test_logging_text_line_names_the_worker(redact: Redactor) -> None:
    line = TextFormatter(redact, worker=2).format(_record("hello"))

    assert "WARNING [worker 2] adapter.test: hello" in line


def test_logging_json_line_has_the_fields_and_extras(redact: Redactor) -> None:
    line = JsonFormatter(redact, worker=1).format(_record("emit to %d rooms", 3, redis_exception="boom"))

    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "adapter.test"
    assert entry["message"] == "emit to 3 rooms"
    assert entry["worker"] == 1
    assert entry["redis_exception"] == "boom"
    assert isinstance(entry["pid"], int)
    assert entry["time"].endswith("+00:00")
    assert "args" not in entry


def test_logging_json_line_carries_the_exception(redact: Redactor) -> None:
    try:
        raise RuntimeError("it broke")
    except RuntimeError as exc:
        line = JsonFormatter(redact).format(_record("failed", exc=exc))

    assert "RuntimeError: it broke" in json.loads(line)["exception"]


@pytest.mark.parametrize("secret", [API_TOKEN, JWT_SECRET, WEBHOOK_SECRET, REDIS_PASSWORD])
@pytest.mark.parametrize("formatter", [TextFormatter, JsonFormatter])
def test_logging_never_prints_a_secret(
    redact: Redactor, secret: str, formatter: type[TextFormatter] | type[JsonFormatter]
) -> None:
    try:
        raise ValueError(f"bad value {secret}")
    except ValueError as exc:
        record = _record("header was Bearer %s", secret, exc=exc, detail={"token": secret})
    line = formatter(redact).format(record)

    assert secret not in line
    assert "[redacted]" in line


def test_logging_redacts_a_redis_url_password_in_any_spelling(redact: Redactor) -> None:
    line = TextFormatter(redact).format(_record("cannot reach redis://:%s@cache", "r3dis-pass%2Fword"))

    assert "r3dis-pass" not in line


def test_logging_configure_sends_library_lines_through_one_handler(root_logging: None) -> None:
    handler = configure_logging(make_settings(log_format="json", log_level="debug"))

    root = logging.getLogger()
    assert root.handlers == [handler]
    assert root.level == logging.DEBUG
    assert isinstance(handler.formatter, JsonFormatter)
    # python-socketio adds a handler of its own to a logger without a level: it has one now.
    assert logging.getLogger("socketio.server").level == logging.ERROR
    assert logging.getLogger("socketio.server").handlers == []
    assert logging.getLogger("httpx").level == logging.WARNING


def test_logging_format_setting_is_text_or_json() -> None:
    assert make_settings().log_format == "text"
    assert make_settings(log_format="JSON").log_format == "json"
    with pytest.raises(ValidationError, match="log_format") as caught:
        Settings(
            _env_file=None,
            strapi_api_token=API_TOKEN,
            strapi_jwt_secret=JWT_SECRET,
            webhook_secret=WEBHOOK_SECRET,
            log_format="xml",
        )
    assert describe_validation_error(caught.value).startswith("invalid configuration: LOG_FORMAT")
