"""Settings from the environment and a `.env` file in the working directory.

`starlette.config.Config` reads both (the environment wins) and names the variable
when a value does not parse, so a typo fails at start-up, not at the first request.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from starlette.config import Config


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    openai_api_key: str | None = None
    anthropic_api_key: str | None = None
    gemini_api_key: str | None = None
    together_api_key: str | None = None
    openai_base_url: str | None = None
    anthropic_base_url: str | None = None
    gemini_base_url: str | None = None
    together_base_url: str | None = None
    gateway_api_key: str | None = None
    cors_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = 1_048_576
    upstream_timeout_s: float = 60.0
    upstream_max_retries: int = 2
    sse_heartbeat_s: float = 15.0
    echo_delay_ms: float = 20.0
    shutdown_grace_s: float = 30.0

    @classmethod
    def from_env(cls, env_file: str | Path = ".env") -> Settings:
        config = Config(env_file if Path(env_file).is_file() else None)

        def text(name: str) -> str | None:
            return config(name, default=None) or None

        def number(name: str, cast: type, default: float, minimum: float) -> float:
            value = config(name, cast=cast, default=default)
            if value < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {value}")
            return value

        origins = config("CORS_ORIGINS", default="*")
        return cls(
            host=config("HOST", default="127.0.0.1"),
            port=int(number("PORT", int, 8000, 0)),
            openai_api_key=text("OPENAI_API_KEY"),
            anthropic_api_key=text("ANTHROPIC_API_KEY"),
            gemini_api_key=text("GEMINI_API_KEY"),
            together_api_key=text("TOGETHER_API_KEY"),
            openai_base_url=text("OPENAI_BASE_URL"),
            anthropic_base_url=text("ANTHROPIC_BASE_URL"),
            gemini_base_url=text("GEMINI_BASE_URL"),
            together_base_url=text("TOGETHER_BASE_URL"),
            gateway_api_key=text("GATEWAY_API_KEY"),
            cors_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
            max_body_bytes=int(number("MAX_BODY_BYTES", int, 1_048_576, 1)),
            upstream_timeout_s=number("UPSTREAM_TIMEOUT_S", float, 60.0, 0.001),
            upstream_max_retries=int(number("UPSTREAM_MAX_RETRIES", int, 2, 0)),
            sse_heartbeat_s=number("SSE_HEARTBEAT_S", float, 15.0, 0.001),
            echo_delay_ms=number("ECHO_DELAY_MS", float, 20.0, 0),
            shutdown_grace_s=number("SHUTDOWN_GRACE_S", float, 30.0, 0),
        )
