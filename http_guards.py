"""Who may call the gateway, decided before any work: the `Host` (`ALLOWED_HOSTS`, against
DNS rebinding), the `Origin` (the server's own or `CORS_ORIGINS`, against cross-site
pages) and the bearer token (`GATEWAY_API_KEY`).

Plain ASGI middleware, cheap per request and free per frame: a request without an `Origin`
(curl, the SDKs, other servers) gets no `send` wrapper. Paths are matched as the router
matches them, with the ASGI `root_path` removed (`route_path`), so no prefix a proxy or
`uvicorn --root-path` adds can route a request past a check.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Iterable, Mapping

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from . import metrics
from .callers import CALLER, Callers
from .errors import ForbiddenOriginError, GatewayError, InvalidHostError, UnauthorizedError
from .pipeline import ErrorSender, StreamProgress, log_request, send_error, status_noted
from .route_path import route_path
from .settings import ANY_IP

DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(value: str) -> tuple[str, int | None] | None:
    """A `Host` (or an origin's host part) as `(name, port)`, lower-cased: `"[::1]:8000"`
    → `("[::1]", 8000)`, `"localhost"` → `("localhost", None)`; None when malformed."""
    value = value.lower()
    if value.startswith("["):
        end = value.find("]") + 1
        name, rest = value[:end], value[end:]
        if not end or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = value.partition(":")
    if not port:
        return (name, None) if name and not value.endswith(":") else None
    return (name, int(port)) if port.isascii() and port.isdigit() else None


def host_allowed(host: bytes | None, allowed: frozenset[str], ip_literals: bool = False) -> bool:
    """Whether `host` is in `allowed` as sent (`gw.example:8443`) or by its name alone
    (`gw.example`: any port), or with `ip_literals` is an IP address (`10.0.0.5:8000`,
    `[::1]`): no DNS name, so nothing a rebinding page can be reached by."""
    if host is None:
        return False
    value = host.decode("latin-1").lower()
    if value in allowed:
        return True
    parsed = split_host(value)
    if parsed is None:
        return False
    return parsed[0] in allowed or (ip_literals and is_ip_literal(parsed[0]))


def is_ip_literal(name: str) -> bool:
    """`10.0.0.5`, `[::1]`: an IP address as a `Host` spells it."""
    try:
        ipaddress.ip_address(name[1:-1] if name.startswith("[") and name.endswith("]") else name)
    except ValueError:
        return False
    return True


def accepted_hosts(allowed_hosts: Iterable[str]) -> str:
    """The `Host` names accepted, in words, for the start-up log line."""
    names = [host.strip() for host in allowed_hosts if host.strip()]
    if not names or "*" in names:
        return "any Host (ALLOWED_HOSTS=*)" if names else "any Host (no ALLOWED_HOSTS check)"
    shown = ", ".join("any IP address" if name == ANY_IP else name for name in names)
    return f"Host {shown}; list any other name in ALLOWED_HOSTS"


def same_origin(origin: bytes, host: bytes | None, scheme: str) -> bool:
    """Whether `origin` is the request's own: the same scheme, host and port (a missing port
    is the scheme's default), as browsers compare origins. Loopback aliases (`localhost`,
    `127.0.0.1`) are different origins, as they are to the browser."""
    if host is None:
        return False
    origin_scheme, sep, origin_host = origin.decode("latin-1").lower().partition("://")
    theirs, ours = split_host(origin_host) if sep else None, split_host(host.decode("latin-1"))
    if theirs is None or ours is None or origin_scheme != scheme:
        return False
    default = DEFAULT_PORTS.get(scheme)
    return theirs[0] == ours[0] and (theirs[1] or default) == (ours[1] or default)


class ErrorShapes:
    """Which dialect's error shape a path is answered in: the sender of the longest
    matching path prefix (from each dialect's `ERROR_SENDERS`), else the native one."""

    def __init__(self, senders: Mapping[str, ErrorSender] | None = None, *, log_refusals: bool = False) -> None:
        self.senders = sorted((senders or {}).items(), key=lambda item: -len(item[0]))
        #: `ACCESS_LOG`: a refusal by the guards gets its request-log line like any request.
        self.log_refusals = log_refusals

    def sender(self, path: str) -> ErrorSender:
        for prefix, sender in self.senders:
            if path.startswith(prefix):
                return sender
        return send_error


async def refuse(
    scope: Scope, send: Send, error: GatewayError, shapes: ErrorShapes, chat_paths: frozenset[str]
) -> None:
    """Answer `error` in the dialect of the route asked for; a refused chat request is
    counted like every other refusal (`metrics.record_rejected`), and every refusal is in
    the request log (`log_request`)."""
    path = route_path(scope)
    if scope["method"] == "POST" and path in chat_paths:
        metrics.record_rejected(error.type)
    if not shapes.log_refusals:
        await shapes.sender(path)(send, error)
        return
    progress = StreamProgress()
    await shapes.sender(path)(status_noted(send, progress), error)
    log_request(scope, progress.status, error.provider, None, error_type=error.type)


class OriginGuard:
    """`400 invalid_host` unless the `Host` is in `allowed_hosts` (empty or `*`: any);
    `403 forbidden_origin` for a request whose `Origin` is neither the server's own
    (`same_origin`) nor in `cors_origins` (`*`: any). A request from another allowed origin
    goes through Starlette's CORS: it answers preflights (before the bearer check behind
    it) and adds the CORS headers. A request without an `Origin` or from the server's own
    needs no CORS headers; `vary_without_origin` sends it through CORS all the same, for
    the `Vary: Origin` a cache of GET answers needs, while the chat POSTs (which no cache
    keeps) skip it and its per-frame `send` wrapper."""

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Iterable[str] = (),
        cors_origins: Iterable[str] = (),
        *,
        error_shapes: ErrorShapes | None = None,
        chat_paths: frozenset[str] = frozenset(),
        vary_without_origin: bool = True,
    ) -> None:
        self.app = app
        origins = [origin.strip().rstrip("/").lower() for origin in cors_origins]
        self.any_origin = "*" in origins
        self.cors_origins = frozenset(origins)
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["*"],  # the OpenAI JS SDK sends x-stainless-* headers
            expose_headers=["X-Stream-Id", "Retry-After"],
        )
        self.without_origin = self.cors if vary_without_origin else app
        hosts = {host.strip().lower() for host in allowed_hosts} - {""}
        any_ip = ANY_IP.lower()
        self.allow_ip_hosts = any_ip in hosts
        self.allowed_hosts = None if not hosts or "*" in hosts else frozenset(hosts - {any_ip})
        #: `Host` values accepted already, as sent (`127.0.0.1:8000`): a few, asked again on
        #: every request; at most `MAX_ACCEPTED_HOSTS` (a refused one is never kept).
        self.accepted_hosts: set[bytes] = set()
        self.error_shapes = error_shapes or ErrorShapes()
        self.chat_paths = chat_paths

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The next app's awaitable (or the refusal's), not a coroutine of its own: a
        request passed on keeps no frame of this guard while it streams (`BearerAuth` too)."""
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
        if self.allowed_hosts is not None and host not in self.accepted_hosts and not self.host_allowed(host):
            shown = (host or b"").decode("latin-1")[:100]
            error: GatewayError = InvalidHostError(f"Host {shown!r} is not served here; add it to ALLOWED_HOSTS")
        elif origin is None or same_origin(origin, host, scope["scheme"]):
            return self.without_origin(scope, receive, send)
        elif self.any_origin or origin.decode("latin-1") in self.cors_origins:
            return self.cors(scope, receive, send)
        else:
            shown = origin.decode("latin-1")[:100]
            error = ForbiddenOriginError(
                f"Origin {shown!r} may not call this gateway: it is neither the server's own origin nor in CORS_ORIGINS"
            )
        return refuse(scope, send, error, self.error_shapes, self.chat_paths)

    def host_allowed(self, host: bytes | None) -> bool:
        """`host_allowed` against `allowed_hosts`, an accepted `host` remembered."""
        assert self.allowed_hosts is not None
        if not host_allowed(host, self.allowed_hosts, self.allow_ip_hosts):
            return False
        if host is not None and len(self.accepted_hosts) < MAX_ACCEPTED_HOSTS:
            self.accepted_hosts.add(host)
        return True


#: The most `Host` values an `OriginGuard` remembers as accepted (with `ANY_IP`, every IP
#: address and port a client sends would be one).
MAX_ACCEPTED_HOSTS = 256


class BearerAuth:
    """With `GATEWAY_API_KEY` set, `/api/*`, `/v1/*` and `/metrics` (unless `metrics_public`)
    need `Authorization: Bearer <key>` (the scheme in any case, RFC 9110) or
    `x-api-key: <key>` (Anthropic's clients), the token compared in constant time. With
    `callers` (`[[callers]]` in the config file), the key must be a caller's
    (`GATEWAY_API_KEY` is the caller `default`), and the caller goes into the scope
    (`callers.CALLER`) for the endpoint's checks and limits. Every 401 says
    `WWW-Authenticate: Bearer` (`pipeline.error_headers`)."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None,
        *,
        callers: Callers | None = None,
        error_shapes: ErrorShapes | None = None,
        chat_paths: frozenset[str] = frozenset(),
        metrics_public: bool = False,
    ) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.callers = callers
        #: The paths that need the key: the API, and `/metrics` unless `METRICS_PUBLIC=1`.
        self.guarded = ("/api/", "/v1/") if metrics_public else ("/api/", "/v1/", "/metrics")
        self.error_shapes = error_shapes or ErrorShapes()
        self.chat_paths = chat_paths

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if self.callers is not None:
            if scope["type"] == "http" and route_path(scope).startswith(self.guarded):
                caller = self.callers.find(request_key(scope))
                if caller is None:
                    error = UnauthorizedError(
                        "missing or unknown key; send Authorization: Bearer <your caller key> (or x-api-key)"
                    )
                    return refuse(scope, send, error, self.error_shapes, self.chat_paths)
                scope[CALLER] = caller
        elif (
            self.api_key is not None
            and scope["type"] == "http"
            and route_path(scope).startswith(self.guarded)
            and not hmac.compare_digest(self._token(scope), self.api_key)
        ):
            error = UnauthorizedError("missing or wrong bearer token; send Authorization: Bearer <GATEWAY_API_KEY>")
            return refuse(scope, send, error, self.error_shapes, self.chat_paths)
        return self.app(scope, receive, send)

    @staticmethod
    def _token(scope: Scope) -> bytes:
        return request_key(scope)


def request_key(scope: Scope) -> bytes:
    """The key a request carries: `Authorization: Bearer <key>`, else `x-api-key`."""
    api_key = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.lstrip(b" ") if scheme.lower() == b"bearer" else b""
        if name == b"x-api-key":
            api_key = value
    return api_key
