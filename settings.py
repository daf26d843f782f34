"""Settings from the environment and a `.env` file in the working directory.

`starlette.config.Config` reads both (the environment wins). A value that does not parse
fails at start-up, not at the first request, with one line naming the variable and the
form it takes (`SettingsError`; `server.py` prints it and exits with status 2).
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
from starlette.config import Config

#: `HOST` values that serve only this machine, and the `Host` names they are reached by
#: (any port): the default `ALLOWED_HOSTS` for them.
LOOPBACK_ADDRESSES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
#: Among `allowed_hosts`: any IP literal is accepted as a `Host` (`10.0.0.5:8000`, `[::1]`):
#: no DNS name, so nothing a rebinding page can reach the server by.
ANY_IP = "<any IP address>"
#: The spellings a boolean variable may take.
BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


#: A password in a URL: in its userinfo (`redis://:pw@host`, `https://user:pw@host`) or as a
#: query parameter (`?password=pw`, `&token=…`).
_SECRETS_IN_URLS = re.compile(
    r"(?<=://)([^/@\s:]*):[^/@\s]*(?=@)|(?<=[?&])((?:password|passwd|pass|pwd|token|"
    r"secret|api_key|key)=)[^&#\s'\"]*",
    re.IGNORECASE,
)


def redacted(text: str) -> str:
    """`text` (a URL, or a message that may hold one) with every password in a URL as `***`."""
    return _SECRETS_IN_URLS.sub(lambda m: f"{m[1]}:***" if m[1] is not None else f"{m[2]}***", text)


class SettingsError(ValueError):
    """A variable whose value does not parse; the message names it and the form expected."""


#: A host name (RFC 1123 labels); an all-numeric dotted name must be an IP address.
HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def check_host(host: str) -> str:
    """`HOST`: an IP address or a host name to listen on."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
        return bare
    except ValueError:
        pass
    if HOST_NAME.fullmatch(host) and not host.replace(".", "").isdigit():
        return host
    raise SettingsError(f"HOST={host!r} is not valid: expected an IP address (127.0.0.1, 0.0.0.0, ::1) or a host name")


def check_url(name: str, value: str | None, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """A URL setting: one of `schemes` and a host (the path is kept)."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.hostname or parts.scheme == "unix"):
        forms = " or ".join(f"{scheme}://" for scheme in schemes)
        raise SettingsError(
            f"{name}={redact_url(value)!r} is not valid: expected a URL starting with {forms} and naming a host"
        )
    return value


def check_origin(origin: str) -> str:
    """One `CORS_ORIGINS` entry: `*` or `scheme://host[:port]`, as browsers send `Origin`."""
    if origin == "*":
        return origin
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query:
        raise SettingsError(
            f"CORS_ORIGINS entry {origin!r} is not valid: expected an origin such as "
            f"https://app.example.com or http://localhost:3000 (scheme, host, optional port), or *"
        )
    return origin


def redact_url(url: str) -> str:
    """`url` with any password (in the userinfo or a `password=` query field) replaced by `***`."""
    url = re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"(?i)([?&](?:password|pass|pwd)=)[^&]*", r"\1***", url)


def plain(value: float) -> str:
    """`8000`, `0.001`: a number as an operator writes it."""
    return str(int(value)) if float(value).is_integer() else str(value)


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
    openai_default_model: str | None = None
    anthropic_default_model: str | None = None
    gemini_default_model: str | None = None
    together_default_model: str | None = None
    gateway_api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    #: `Host` values accepted; empty: any; `ANY_IP` among them: any IP literal too. When
    #: `ALLOWED_HOSTS` is unset `from_env` fills the loopback names for a loopback `HOST`,
    #: and for any other `HOST` (`0.0.0.0`) `localhost`, this machine's name and `ANY_IP`.
    allowed_hosts: tuple[str, ...] = ()
    max_detached_streams: int = 256
    metrics_public: bool = False
    max_body_bytes: int = 1_048_576
    upstream_timeout_s: float = 60.0
    upstream_max_retries: int = 2
    sse_heartbeat_s: float = 15.0
    echo_delay_ms: float = 20.0
    shutdown_grace_s: float = 30.0
    workers: int = 1
    redis_url: str | None = None
    resume_ttl_s: float = 600.0
    #: How long a stored `/v1/responses` response can be continued or read (30 days).
    responses_ttl_s: float = 2_592_000.0
    access_log: bool = True
    #: Seconds between asks of the providers' list-models endpoints; 0: never ask (the
    #: built-in lists stay).
    model_catalog_refresh_s: float = 3600.0
    #: `STREAMGATE_CONFIG`: the TOML file of routes and callers (`config.load_config`);
    #: unset: `./streamgate.toml` when it exists.
    streamgate_config: str | None = None

    @classmethod
    def from_env(cls, env_file: str | Path = ".env") -> Settings:
        """The settings of the environment (and `env_file`); a value that does not parse
        raises `SettingsError` naming the variable and the form expected."""
        config = Config(env_file if Path(env_file).is_file() else None)

        def text(name: str) -> str | None:
            return config(name, default=None) or None

        def number(
            name: str, cast: type[int] | type[float], default: float, minimum: float, maximum: float | None = None
        ) -> float:
            raw = config(name, default=None)
            if raw is None or not raw.strip():
                return default
            kind = "a whole number" if cast is int else "a number"
            bounds = f"from {plain(minimum)} to {plain(maximum)}" if maximum is not None else f">= {plain(minimum)}"
            expected = f"expected {kind} {bounds} (default {plain(default)})"
            try:
                value = cast(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not valid: {expected}") from None
            if not math.isfinite(value):
                raise SettingsError(f"{name}={raw!r} is not valid: {expected}")
            if value < minimum or (maximum is not None and value > maximum):
                raise SettingsError(f"{name}={raw!r} is out of range: {expected}")
            return value

        def flag(name: str, default: bool) -> bool:
            raw = config(name, default=None)
            if raw is None or not raw.strip():
                return default
            value = BOOLEANS.get(raw.strip().lower())
            if value is None:
                raise SettingsError(
                    f"{name}={raw!r} is not valid: expected 1, 0, true or false (default {int(default)})"
                )
            return value

        origins = config("CORS_ORIGINS", default="")
        host = check_host(config("HOST", default="127.0.0.1"))
        hosts = config("ALLOWED_HOSTS", default="")
        allowed_hosts = tuple(h.strip() for h in hosts.split(",") if h.strip()) or (
            LOOPBACK_HOSTS if host in LOOPBACK_ADDRESSES else ("localhost", socket.gethostname(), ANY_IP)
        )
        return cls(
            host=host,
            port=int(number("PORT", int, 8000, 0, 65535)),
            openai_api_key=text("OPENAI_API_KEY"),
            anthropic_api_key=text("ANTHROPIC_API_KEY"),
            gemini_api_key=text("GEMINI_API_KEY"),
            together_api_key=text("TOGETHER_API_KEY"),
            openai_base_url=check_url("OPENAI_BASE_URL", text("OPENAI_BASE_URL")),
            anthropic_base_url=check_url("ANTHROPIC_BASE_URL", text("ANTHROPIC_BASE_URL")),
            gemini_base_url=check_url("GEMINI_BASE_URL", text("GEMINI_BASE_URL")),
            together_base_url=check_url("TOGETHER_BASE_URL", text("TOGETHER_BASE_URL")),
            openai_default_model=text("OPENAI_DEFAULT_MODEL"),
            anthropic_default_model=text("ANTHROPIC_DEFAULT_MODEL"),
            gemini_default_model=text("GEMINI_DEFAULT_MODEL"),
            together_default_model=text("TOGETHER_DEFAULT_MODEL"),
            gateway_api_key=text("GATEWAY_API_KEY"),
            cors_origins=tuple(check_origin(o.strip()) for o in origins.split(",") if o.strip()),
            allowed_hosts=allowed_hosts,
            max_detached_streams=int(number("MAX_DETACHED_STREAMS", int, 256, 1)),
            metrics_public=flag("METRICS_PUBLIC", False),
            max_body_bytes=int(number("MAX_BODY_BYTES", int, 1_048_576, 1)),
            upstream_timeout_s=number("UPSTREAM_TIMEOUT_S", float, 60.0, 0.001),
            upstream_max_retries=int(number("UPSTREAM_MAX_RETRIES", int, 2, 0)),
            sse_heartbeat_s=number("SSE_HEARTBEAT_S", float, 15.0, 0.001),
            echo_delay_ms=number("ECHO_DELAY_MS", float, 20.0, 0),
            shutdown_grace_s=number("SHUTDOWN_GRACE_S", float, 30.0, 0),
            workers=int(number("WORKERS", int, 1, 1)),
            redis_url=check_url("REDIS_URL", text("REDIS_URL"), ("redis", "rediss", "unix")),
            resume_ttl_s=number("RESUME_TTL_S", float, 600.0, 1),
            responses_ttl_s=number("RESPONSES_TTL_S", float, 2_592_000.0, 1),
            access_log=flag("ACCESS_LOG", True),
            model_catalog_refresh_s=number("MODEL_CATALOG_REFRESH_S", float, 3600.0, 0),
            streamgate_config=text("STREAMGATE_CONFIG"),
        )
