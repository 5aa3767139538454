"""adapter/settings.py and the `python -m adapter` entry point's handling of bad configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapter.__main__ import main
from adapter.settings import Settings, describe_validation_error
from tests.conftest import API_TOKEN, JWT_SECRET, WEBHOOK_SECRET, make_settings

SECRET_FIELDS = ["strapi_api_token", "strapi_jwt_secret", "webhook_secret"]


@pytest.fixture(autouse=True)
def _no_settings_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's exported STRAPI_URL (or secret) must not change what these tests see."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def _secrets(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "strapi_api_token": API_TOKEN,
        "strapi_jwt_secret": JWT_SECRET,
        "webhook_secret": WEBHOOK_SECRET,
        "_env_file": None,
    }
    values.update(overrides)
    return values


def _error_line(**values: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    return describe_validation_error(caught.value)


def test_settings_defaults_match_the_documented_table() -> None:
    settings = Settings(**_secrets())

    assert settings.strapi_url == "http://127.0.0.1:1337"
    assert settings.sidecar_host == "127.0.0.1"
    assert settings.sidecar_port == 1338
    assert settings.cors_origins == ["*"]


def test_settings_default_content_model_is_the_seeds() -> None:
    settings = Settings(**_secrets())

    assert settings.notification_collection == "notifications"
    assert settings.read_collection == "read-notifications"
    assert settings.audience_field == "notification_users"
    assert settings.read_users_field == "users_permissions_users"
    assert settings.read_notification_field == "notification"


def test_settings_default_wire_contract_is_the_seeds() -> None:
    settings = Settings(**_secrets())

    assert settings.event_notification == "notificacion"
    assert settings.event_read == "notification:read"
    assert settings.room_prefix == "user-"


def test_settings_cors_star_is_a_one_item_list() -> None:
    assert make_settings(cors_origins="*").cors_origins == ["*"]


def test_settings_cors_origins_split_on_commas() -> None:
    settings = make_settings(cors_origins=" https://a.example ,https://b.example:8443,, ")

    assert settings.cors_origins == ["https://a.example", "https://b.example:8443"]


def test_settings_strapi_url_trailing_slash_is_dropped() -> None:
    assert make_settings(strapi_url="https://cms.example/strapi/").strapi_url == "https://cms.example/strapi"


@pytest.mark.parametrize("url", ["127.0.0.1:1337", "ftp://cms.example", "http://", "http://cms example"])
def test_settings_strapi_url_that_is_not_http_is_refused(url: str) -> None:
    assert "STRAPI_URL" in _error_line(**_secrets(strapi_url=url))


def test_settings_log_level_accepts_any_case_and_refuses_unknown_levels() -> None:
    assert make_settings(log_level="debug").log_level == "debug"
    assert "LOG_LEVEL" in _error_line(**_secrets(log_level="verbose"))


def test_settings_reads_environment_variables_by_their_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRAPI_URL", "https://cms.example/")
    monkeypatch.setenv("STRAPI_API_TOKEN", "env-api-token")
    monkeypatch.setenv("STRAPI_JWT_SECRET", "env-jwt-secret")
    monkeypatch.setenv("WEBHOOK_SECRET", "env-webhook-secret")
    monkeypatch.setenv("SIDECAR_PORT", "4000")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("EVENT_NOTIFICATION", "notification")

    settings = Settings(_env_file=None)

    assert settings.strapi_url == "https://cms.example"
    assert settings.strapi_api_token.get_secret_value() == "env-api-token"
    assert settings.strapi_jwt_secret.get_secret_value() == "env-jwt-secret"
    assert settings.webhook_secret.get_secret_value() == "env-webhook-secret"
    assert settings.sidecar_port == 4000
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.event_notification == "notification"


def test_settings_missing_secrets_are_named_in_one_line() -> None:
    line = _error_line(_env_file=None)

    assert "\n" not in line
    assert line.startswith("invalid configuration: ")
    assert "STRAPI_API_TOKEN is required" in line
    assert "STRAPI_JWT_SECRET is required" in line
    assert "WEBHOOK_SECRET is required" in line


def test_settings_error_line_never_echoes_a_secret() -> None:
    line = _error_line(
        _env_file=None,
        strapi_jwt_secret="jwt-secret-that-must-stay-hidden",
        webhook_secret="webhook-secret-that-must-stay-hidden",
        sidecar_port=70000,
    )

    assert "STRAPI_API_TOKEN is required" in line
    assert "SIDECAR_PORT" in line
    assert "must-stay-hidden" not in line


@pytest.mark.parametrize("field", SECRET_FIELDS)
@pytest.mark.parametrize("blank", ["", "   "])
def test_settings_blank_secret_is_refused(field: str, blank: str) -> None:
    line = _error_line(**_secrets(**{field: blank}))

    assert field.upper() in line
    assert "must not be empty" in line


def test_settings_repr_and_str_hide_secrets() -> None:
    settings = make_settings()

    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert API_TOKEN not in text
        assert JWT_SECRET not in text
        assert WEBHOOK_SECRET not in text
    assert settings.strapi_api_token.get_secret_value() == API_TOKEN


def test_settings_room_for_names_a_users_room() -> None:
    assert make_settings().room_for(5) == "user-5"
    assert make_settings(room_prefix="u:").room_for(42) == "u:42"
    assert make_settings(room_prefix="u:").rooms_for([42, 7]) == ["u:42", "u:7"]


def test_main_missing_setting_exits_2_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--env-file", str(tmp_path / "absent.env")])

    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("invalid configuration: ")
    assert "STRAPI_API_TOKEN is required" in err


def test_main_reads_env_file_and_never_prints_its_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "sidecar.env"
    env_file.write_text("STRAPI_JWT_SECRET=jwt-from-file-hidden\nWEBHOOK_SECRET=hook-from-file-hidden\n")

    code = main(["--env-file", str(env_file)])

    err = capsys.readouterr().err
    assert code == 2
    assert err == "invalid configuration: STRAPI_API_TOKEN is required\n"


def test_main_bad_port_option_exits_2_naming_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "sidecar.env"
    env_file.write_text("STRAPI_API_TOKEN=t\nSTRAPI_JWT_SECRET=j\nWEBHOOK_SECRET=w\n")

    code = main(["--env-file", str(env_file), "--port", "70000"])

    err = capsys.readouterr().err
    assert code == 2
    assert "SIDECAR_PORT" in err
    assert err.count("\n") == 1


def test_main_help_exits_0_and_mentions_the_webhook_route(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    assert "/webhooks/strapi" in capsys.readouterr().out
