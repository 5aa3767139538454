"""Every setting is documented where a newcomer looks: the README table and .env.example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapter.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NAMES = sorted(name.upper() for name in Settings.model_fields)


@pytest.mark.parametrize("name", NAMES)
def test_docs_readme_lists_every_setting(name: str) -> None:
    assert f"`{name}`" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_docs_env_example_lists_every_setting(name: str) -> None:
    assert re.search(rf"^{name}=", (ROOT / ".env.example").read_text(), re.MULTILINE)


def test_docs_env_example_loads_as_settings_once_secrets_are_filled(tmp_path: Path) -> None:
    text = (ROOT / ".env.example").read_text()
    for secret in ("STRAPI_API_TOKEN", "STRAPI_JWT_SECRET", "WEBHOOK_SECRET"):
        text = text.replace(f"{secret}=\n", f"{secret}=filled-in\n")
    env_file = tmp_path / ".env"
    env_file.write_text(text)
    loaded = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert loaded == Settings(
        _env_file=None,  # type: ignore[call-arg]
        strapi_api_token="filled-in",
        strapi_jwt_secret="filled-in",
        webhook_secret="filled-in",
    )
