"""sdk_internals: the start-up check names the package, its version and what is missing."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from anthropic._models import FinalRequestOptions as AnthropicOptions
from openai._models import FinalRequestOptions as OpenAIOptions
from streamgate.providers.anthropic_stream import AnthropicStreamAdapter
from streamgate.providers.gemini_stream import GeminiStreamAdapter
from streamgate.providers.openai_stream import OpenAIStreamAdapter
from streamgate.providers.stainless import AnthropicRequest, OpenAIRequest
from streamgate.sdk_internals import SDKMismatchError, require_internals
from streamgate.upstream_http import UpstreamTransport
from support import settings


def test_a_missing_member_names_the_package_its_version_and_the_member() -> None:
    with pytest.raises(SDKMismatchError) as caught:
        require_internals("openai", openai.AsyncOpenAI, ("_build_request", "_no_such_member", "_not_either"))
    version = metadata.version("openai")
    assert str(caught.value) == (
        f"openai {version} has no _no_such_member, _not_either on AsyncOpenAI; "
        "streamgate needs a openai release within the range its pyproject.toml pins"
    )


def test_a_member_that_is_not_callable_counts_as_missing() -> None:
    class Renamed(openai.AsyncOpenAI):
        _send_request = None  # type: ignore[assignment]

    client = Renamed(api_key="sk-test", http_client=httpx2.AsyncClient())
    with pytest.raises(SDKMismatchError, match=r"^openai .* has no _send_request on Renamed;"):
        OpenAIRequest(client, OpenAIOptions.construct(method="post", url="/chat/completions", content=b""))


def test_anthropic_request_checks_its_send_path() -> None:
    class Renamed(anthropic.AsyncAnthropic):
        _prepare_request = None  # type: ignore[assignment]

    client = Renamed(api_key="sk-test", http_client=httpx2.AsyncClient())
    with pytest.raises(SDKMismatchError, match=r"^anthropic .* has no _prepare_request on Renamed;"):
        AnthropicRequest(client, AnthropicOptions.construct(method="post", url="/v1/messages", content=b""))


def test_the_installed_releases_have_every_member_the_adapters_call() -> None:
    """Building each adapter (and the HTTP transport) runs the check against the real packages."""
    config = settings(openai_api_key="sk-a", anthropic_api_key="sk-b", gemini_api_key="k-c")
    assert OpenAIStreamAdapter(config).configured
    assert AnthropicStreamAdapter(config).configured
    assert GeminiStreamAdapter(config).configured
    UpstreamTransport()


def test_every_private_member_listed_exists_in_the_installed_releases() -> None:
    from streamgate.sdk_internals import PRIVATE_MEMBERS, require_private_members

    require_private_members({distribution for distribution, _, _ in PRIVATE_MEMBERS})


def test_every_dependency_reached_into_has_an_upper_bound() -> None:
    import tomllib
    from pathlib import Path

    from streamgate.sdk_internals import PRIVATE_MEMBERS

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    pins = {dep.split(">")[0].split("<")[0].split(";")[0].strip(): dep for dep in pyproject["project"]["dependencies"]}
    assert all("<" in pins[distribution] for distribution, _, _ in PRIVATE_MEMBERS)


def test_an_aiohttp_whose_request_skips_a_step_we_override_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_Request` overrides steps `ClientRequest.__init__` calls; an aiohttp that no longer
    calls one (its body or headers then made elsewhere) is refused when the transport is built."""
    import aiohttp

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        self.update_headers(kwargs.get("headers"))

    monkeypatch.setattr(aiohttp.ClientRequest, "__init__", init)
    with pytest.raises(
        SDKMismatchError,
        match=r"^aiohttp .* has no ClientRequest.__init__ calling update_auto_headers, update_body_from_data;",
    ):
        UpstreamTransport()
