"""The demo's secrets and users: generated on the first run, then read back from the data folder.

Strapi's database outlives a run, so the API token, the JWT secret and the users' passwords must
too: a new JWT secret would invalidate every token, a new password would lock the user out.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["CREDENTIALS_FILE", "DEMO_USERNAMES", "Credentials", "DemoUser"]

CREDENTIALS_FILE = "demo-credentials.json"
DEMO_USERNAMES = ("alice", "bob", "carol")
EMAIL_DOMAIN = "example.com"


@dataclass(frozen=True, slots=True)
class DemoUser:
    username: str
    email: str
    password: str


@dataclass(frozen=True, slots=True)
class Credentials:
    """Everything secret the three processes share. `repr` never shows a secret."""

    api_token: str
    jwt_secret: str
    webhook_secret: str
    users: tuple[DemoUser, ...]

    @classmethod
    def generate(cls) -> Credentials:
        users = tuple(
            DemoUser(name, f"{name}@{EMAIL_DOMAIN}", f"{name}-{secrets.token_hex(3)}")
            for name in DEMO_USERNAMES
        )
        return cls(secrets.token_hex(32), secrets.token_hex(32), secrets.token_hex(24), users)

    @classmethod
    def load_or_create(cls, folder: Path) -> Credentials:
        """Read them from `folder`, or generate and store them there (readable by the owner only)."""
        path = folder / CREDENTIALS_FILE
        if path.exists():
            return cls._from_json(json.loads(path.read_text(encoding="utf-8")), path)
        created = cls.generate()
        folder.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(asdict(created), indent=2) + "\n", encoding="utf-8")
        return created

    @classmethod
    def _from_json(cls, raw: Any, path: Path) -> Credentials:
        try:
            users = tuple(DemoUser(**user) for user in raw["users"])
            return cls(str(raw["api_token"]), str(raw["jwt_secret"]), str(raw["webhook_secret"]), users)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a demo credentials file; delete it to start over") from exc

    def seed_users(self) -> list[dict[str, str]]:
        """The users as the Strapi fixture's `seed_users` wants them."""
        return [asdict(user) for user in self.users]

    def __repr__(self) -> str:
        names = ", ".join(user.username for user in self.users)
        return f"Credentials(users=[{names}], secrets=**********)"
