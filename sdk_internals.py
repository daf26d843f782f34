"""The private members of our dependencies that streamgate uses, in one list, and the
start-up check of them: a release that renamed one fails when the adapters are built,
naming the package and its version, not on the first request. Each dependency listed
has an upper bound in pyproject.toml; `.ci/newest-sdks` runs the tests against the
newest releases those bounds allow.

Why each is used (the public API has no equivalent that keeps the hot path thin):
- openai / anthropic (Stainless SDKs): `_build_request` + `_prepare_request` build a
  request once per model as a template, `_client` sends it, `_prepare_url` gives another
  path's URL under the base URL, as the SDK joins them (providers/stainless.py);
  `_models.FinalRequestOptions` is the options type those take.
- google-genai: `BaseApiClient._build_request` builds the URL and headers
  (providers/gemini_stream.py).
- aiohttp: `ClientResponse` header fields dropped once copied, and `TCPConnector._get`
  (upstream_http.py: memory per open stream, pool hygiene); the steps of
  `ClientSession._request` driven directly (`BaseConnector.connect`, the protocol's
  `set_response_params`, `ClientResponse.start`), and the `ClientRequest` steps its
  `__init__` calls, overridden (`update_headers`, `update_auto_headers`,
  `update_body_from_data`: the headers given); the request's head serialized by
  `http_writer._serialize_headers` (its CR/LF/NUL check; a prepared request's headers once
  per request line) and written with its body in one `transport.write`, no `StreamWriter`
  (upstream_http.py: CPU and latency per request); the protocol's `read_timeout` set to
  None and `start_timeout` once the head is read (its pending read timer dropped: no timer
  re-armed per read of a body), and its `set_exception` when `_ReadWatchdog` fails a read
  as aiohttp's timer would (upstream_http.py: CPU per read, memory per open stream); the
  `deque`s of an open body (`StreamReader._buffer`, `_http_chunk_splits`) and of its
  connection (`DataQueue._buffer`) replaced by lists (upstream_http.py `_LightQueue`:
  memory per open stream; which `deque` methods aiohttp calls is checked there).
- uvicorn: `uvicorn.lifespan.on.LifespanOn` (server.py: the app's shutdown on a forced exit);
  `HttpToolsProtocol`'s `pipeline`, `flow` and each request's
  `RequestResponseCycle.message_event`, `ProxyHeadersMiddleware.app` (http_protocol.py: lists
  instead of `deque`s, no suspended middleware coroutine; memory per open stream; it checks
  what only an instance shows when imported, `require_uvicorn_internals`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib import metadata

#: (distribution, module, attribute path) of every private member we use.
PRIVATE_MEMBERS: tuple[tuple[str, str, str], ...] = (
    ("openai", "openai", "AsyncOpenAI._build_request"),
    ("openai", "openai", "AsyncOpenAI._prepare_request"),
    ("openai", "openai", "AsyncOpenAI._prepare_url"),
    ("openai", "openai._models", "FinalRequestOptions"),
    ("anthropic", "anthropic", "AsyncAnthropic._build_request"),
    ("anthropic", "anthropic", "AsyncAnthropic._prepare_request"),
    ("anthropic", "anthropic", "AsyncAnthropic._prepare_url"),
    ("anthropic", "anthropic._models", "FinalRequestOptions"),
    ("google-genai", "google.genai._api_client", "BaseApiClient._build_request"),
    ("aiohttp", "aiohttp", "TCPConnector._get"),
    ("aiohttp", "aiohttp", "BaseConnector.connect"),
    ("aiohttp", "aiohttp.client_proto", "ResponseHandler.set_response_params"),
    ("aiohttp", "aiohttp.client_proto", "ResponseHandler.start_timeout"),
    ("aiohttp", "aiohttp.client_proto", "ResponseHandler.set_exception"),
    ("aiohttp", "aiohttp.client_proto", "ResponseHandler.read_timeout"),
    ("aiohttp", "aiohttp", "ClientRequest.update_headers"),
    ("aiohttp", "aiohttp", "ClientRequest.update_auto_headers"),
    ("aiohttp", "aiohttp", "ClientRequest.update_body_from_data"),
    ("aiohttp", "aiohttp", "ClientResponse.start"),
    ("aiohttp", "aiohttp.http_writer", "_serialize_headers"),
    ("aiohttp", "aiohttp.streams", "StreamReader._buffer"),
    ("aiohttp", "aiohttp.streams", "StreamReader._http_chunk_splits"),
    ("uvicorn", "uvicorn.lifespan.on", "LifespanOn"),
    ("uvicorn", "uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol.connection_made"),
    ("uvicorn", "uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol.on_headers_complete"),
    ("uvicorn", "uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol.on_response_complete"),
    ("uvicorn", "uvicorn.protocols.http.httptools_impl", "RequestResponseCycle"),
    ("uvicorn", "uvicorn.protocols.http.flow_control", "FlowControl"),
    ("uvicorn", "uvicorn.middleware.proxy_headers", "ProxyHeadersMiddleware"),
)


class SDKMismatchError(RuntimeError):
    """A dependency's release lacks a private member streamgate calls."""


def require_internals(distribution: str, owner: object, names: Iterable[str]) -> None:
    """Raise `SDKMismatchError` if `owner` (a client, or a class) lacks any of the
    callables `names`."""
    missing = [name for name in names if not callable(getattr(owner, name, None))]
    if missing:
        kind = owner.__name__ if isinstance(owner, type) else type(owner).__name__
        raise mismatch(distribution, f"{', '.join(missing)} on {kind}")


def require_private_members(distributions: Iterable[str]) -> None:
    """Check every `PRIVATE_MEMBERS` entry of `distributions` (imports their modules)."""
    wanted = set(distributions)
    for distribution, module_name, path in PRIVATE_MEMBERS:
        if distribution not in wanted:
            continue
        owner: object = importlib.import_module(module_name)
        for part in path.split("."):
            owner = getattr(owner, part, None)
            if owner is None:
                raise mismatch(distribution, f"{module_name}.{path}")


def mismatch(distribution: str, what: str) -> SDKMismatchError:
    return SDKMismatchError(
        f"{distribution} {metadata.version(distribution)} has no {what}; streamgate needs "
        f"a {distribution} release within the range its pyproject.toml pins"
    )
