"""The contract's error table as exceptions: each knows its HTTP status and `type`.

Raise one before the upstream has accepted a request and the client gets that status;
raise one after the `200` and the stream ends with an error frame of that type.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Base of every error a client may see. `message` is written for a person."""

    status: int = 502
    type: str = "upstream_error"
    #: Worth another try before the first token (429, 5xx, connection failures).
    retryable: bool = False
    #: More response headers of the error (a caller's `x-ratelimit-*`), after `Retry-After`.
    headers: list[tuple[bytes, bytes]] | None = None

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        retry_after: str | None = None,
        upstream_body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        if status is not None:
            self.status = status
        self.retry_after = retry_after
        #: A passthrough's upstream error body (bounded), answered as the upstream sent it
        #: by the dialect that speaks the upstream's own shape.
        self.upstream_body = upstream_body

    def body(self) -> dict[str, Any]:
        """The `{"error": {...}}` object of the contract."""
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.provider is not None:
            error["provider"] = self.provider
        return {"error": error}


class InvalidJSONError(GatewayError):
    status, type = 400, "invalid_json"


class UnauthorizedError(GatewayError):
    status, type = 401, "unauthorized"


class ProviderAuthError(GatewayError):
    status, type = 401, "provider_auth_error"


class ProviderNotConfiguredError(ProviderAuthError):
    """The provider's key is not set: a 401 `provider_auth_error` on the native endpoint,
    a 400 `provider_not_configured` on `/v1` (where a 401 means the gateway's own key)."""


class InvalidHostError(GatewayError):
    status, type = 400, "invalid_host"


class ForbiddenOriginError(GatewayError):
    status, type = 403, "forbidden_origin"


class ForbiddenModelError(GatewayError):
    """A caller (`[[callers]]`) asked for a model outside its `models`."""

    status, type = 403, "forbidden_model"


class StreamNotFoundError(GatewayError):
    status, type = 404, "stream_not_found"


class NotFoundError(GatewayError):
    """No endpoint at that path (or not for that method)."""

    status, type = 404, "not_found"


class MethodNotAllowedError(GatewayError):
    status, type = 405, "method_not_allowed"


class BodyTooLargeError(GatewayError):
    status, type = 413, "body_too_large"


class InvalidRequestError(GatewayError):
    status, type = 422, "invalid_request"


class UnknownProviderError(GatewayError):
    status, type = 422, "unknown_provider"


class ModelNotSupportedError(GatewayError):
    status, type = 422, "model_not_supported"


class RateLimitedError(GatewayError):
    status, type, retryable = 429, "rate_limited", True


class UpstreamError(GatewayError):
    """Upstream 5xx, malformed upstream data, connection failure (502) or a passed-on 4xx."""

    status, type = 502, "upstream_error"


class UpstreamTimeoutError(GatewayError):
    status, type, retryable = 504, "upstream_timeout", True


class ShuttingDownError(GatewayError):
    """A stream cut because the server is shutting down (the grace ran out)."""

    status, type = 503, "shutting_down"


class CancelledError(GatewayError):
    """A resumable stream stopped by `DELETE`."""

    status, type = 499, "cancelled"


class StreamError(GatewayError):
    """A failure after the stream started whose `type` is not one of the above,
    e.g. a Gemini safety block (`content_filter`)."""

    def __init__(self, message: str, *, type: str, provider: str | None = None) -> None:
        super().__init__(message, provider=provider)
        self.type = type


#: The most of an upstream's own error message passed on to the client, in characters.
MAX_UPSTREAM_MESSAGE = 1000


def error_from_status(
    status: int, message: str, *, provider: str, key_env: str, retry_after: str | None = None
) -> GatewayError:
    """Map an upstream HTTP error status to the contract's error (shared by all adapters).
    The upstream's `message` is cut to `MAX_UPSTREAM_MESSAGE` characters."""
    if len(message) > MAX_UPSTREAM_MESSAGE:
        message = message[:MAX_UPSTREAM_MESSAGE] + "..."
    if status == 401:
        return ProviderAuthError(f"{provider} rejected the API key; check {key_env}", provider=provider)
    if status == 429:
        return RateLimitedError(f"{provider} rate limit: {message}", provider=provider, retry_after=retry_after)
    if status in (408, 504):
        return UpstreamTimeoutError(f"{provider} timed out: {message}", provider=provider)
    if 400 <= status < 500:
        return UpstreamError(f"{provider} refused the request: {message}", provider=provider, status=status)
    error = UpstreamError(f"{provider} failed with HTTP {status}: {message}", provider=provider)
    error.retryable = True
    return error
