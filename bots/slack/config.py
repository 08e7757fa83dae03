"""Bot settings from the environment and an optional .env file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from dotenv import dotenv_values

from bots.slack.errors import ConfigError

DEFAULT_API_BASE = "http://engine:8080/v1"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"


@dataclass(frozen=True)
class BotConfig:
    slack_bot_token: str
    slack_app_token: str
    api_base: str = DEFAULT_API_BASE
    api_key: str | None = None
    # None: ask the server (GET /models) and use the first model it lists.
    model: str | None = None
    system_prompt: str | None = None
    max_tokens: int | None = None
    # A workstation engine decodes a handful of sequences at once at full speed; more
    # requests only slow every answer down, so the rest wait in a visible queue.
    concurrency: int = 2
    max_waiting: int = 20
    # chat.update is a Tier 3 method (~50/min per workspace): 1.5 s keeps a few live
    # answers well inside it.
    update_interval: float = 1.5
    # Seconds without a byte from the server before giving up. Prefill of a long thread on
    # a 671B model can take minutes before the first token.
    read_timeout: float = 600.0
    connect_timeout: float = 10.0
    # Seconds running generations get to finish on SIGTERM before they are cut off.
    shutdown_grace: float = 5.0
    slack_api_url: str = DEFAULT_SLACK_API_URL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, env_file: str | None = ".env") -> BotConfig:
        """Read settings from `environ` (default os.environ), falling back to `env_file`.

        Variables already in the environment win over the file, as with docker compose.
        """
        values: dict[str, str] = {}
        if env_file and os.path.isfile(env_file):
            values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        values.update(os.environ if environ is None else environ)

        def text(name: str) -> str | None:
            value = values.get(name, "").strip()
            return value or None

        def number(name: str, default: float, kind: type, minimum: float) -> float:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}; set it to a number.") from None
            if value < minimum:
                raise ConfigError(f"{name}={raw} is too small; it must be at least {minimum}.")
            return value

        missing = [
            f"{name} (the {what} token, starts with {prefix})"
            for name, what, prefix in (
                ("SLACK_BOT_TOKEN", "bot", "xoxb-"),
                ("SLACK_APP_TOKEN", "app-level", "xapp-"),
            )
            if not text(name)
        ]
        if missing:
            raise ConfigError(
                "missing " + " and ".join(missing) + ". Put them in the environment or in a .env file "
                "next to where the bot runs; README.md, section 'Slack bot', says how to get them."
            )
        app_token = text("SLACK_APP_TOKEN")
        if not app_token.startswith("xapp-"):
            raise ConfigError(
                "SLACK_APP_TOKEN must be an app-level token (xapp-…) with the connections:write scope, "
                "made under Basic Information → App-Level Tokens; Socket Mode does not work with a bot token."
            )
        max_tokens = text("MOEBOX_MAX_TOKENS")
        return cls(
            slack_bot_token=text("SLACK_BOT_TOKEN"),
            slack_app_token=app_token,
            api_base=(text("MOEBOX_API_BASE") or DEFAULT_API_BASE).rstrip("/"),
            api_key=text("MOEBOX_API_KEY"),
            model=text("MOEBOX_MODEL"),
            system_prompt=text("MOEBOX_SYSTEM_PROMPT"),
            max_tokens=int(number("MOEBOX_MAX_TOKENS", 0, int, 1)) if max_tokens else None,
            concurrency=int(number("MOEBOX_SLACK_CONCURRENCY", cls.concurrency, int, 1)),
            max_waiting=int(number("MOEBOX_SLACK_MAX_WAITING", cls.max_waiting, int, 0)),
            update_interval=number("MOEBOX_SLACK_UPDATE_INTERVAL", cls.update_interval, float, 0.05),
            read_timeout=number("MOEBOX_TIMEOUT", cls.read_timeout, float, 1),
            shutdown_grace=number("MOEBOX_SLACK_SHUTDOWN_GRACE", cls.shutdown_grace, float, 0),
            slack_api_url=text("SLACK_API_URL") or DEFAULT_SLACK_API_URL,
        )
