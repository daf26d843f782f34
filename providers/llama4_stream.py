"""The `llama4` provider: Llama 4 on Together, through `openai.AsyncOpenAI`.

Together speaks OpenAI's Chat Completions wire, so this is the OpenAI adapter with
another key, base URL and model list; the chunk parsing is the same code (Together's
`eos` finish reason is mapped there). Together takes the length limit as `max_tokens`,
and Llama 4 Maverick and Scout do not reason, so no `reasoning_effort` is sent. The model
is checked against `SUPPORTED_LLAMA_MODELS` before any network call.

The openai SDK also fills its headers from OpenAI's environment (`OPENAI_ORG_ID`,
`OPENAI_PROJECT_ID`, `OPENAI_CUSTOM_HEADERS`, which may even hold an OpenAI
`Authorization`): none of that may reach Together, so its requests (the chat and the
model list) keep only the protocol, SDK-identification and `x-stainless-*` headers, with
Together's own key.
"""

from __future__ import annotations

from openai import Omit
from openai._types import Headers

from ..adapter import default_first
from ..chat_types import ChatRequest, ReasoningEffort
from ..errors import ModelNotSupportedError
from ..providers.openai_stream import OpenAIStreamAdapter, _WireRequest
from ..settings import Settings, SettingsError

TOGETHER_BASE_URL = "https://api.together.xyz/v1"
#: Request headers a Together call keeps from the SDK's (besides `x-stainless-*`).
TOGETHER_HEADERS = frozenset({b"host", b"accept", b"accept-encoding", b"connection", b"content-type", b"user-agent"})
SUPPORTED_LLAMA_MODELS = (
    "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8",
    "meta-llama/Llama-4-Scout-17B-16E-Instruct",
)


def _kept(name: bytes) -> bool:
    name = name.lower()
    return name in TOGETHER_HEADERS or name.startswith(b"x-stainless-")


class Llama4StreamAdapter(OpenAIStreamAdapter):
    name = "llama4"
    key_env = "TOGETHER_API_KEY"
    _request_type = _WireRequest
    has_responses_api = False  # Together serves Chat Completions only

    @staticmethod
    def _key_and_base_url(settings: Settings) -> tuple[str | None, str]:
        return settings.together_api_key, settings.together_base_url or TOGETHER_BASE_URL

    @staticmethod
    def _default_and_models(settings: Settings) -> tuple[str, tuple[str, ...]]:
        """`TOGETHER_DEFAULT_MODEL` must be a supported model (checked at start-up)."""
        default = settings.together_default_model or SUPPORTED_LLAMA_MODELS[0]
        if default not in SUPPORTED_LLAMA_MODELS:
            raise SettingsError(
                f"TOGETHER_DEFAULT_MODEL={default!r} is not valid: expected one of {', '.join(SUPPORTED_LLAMA_MODELS)}"
            )
        return default, default_first(default, SUPPORTED_LLAMA_MODELS)

    @staticmethod
    def _upstream_headers(headers: list[tuple[bytes, bytes]], api_key: str) -> list[tuple[bytes, bytes]]:
        kept = [(name, value) for name, value in headers if _kept(name)]
        return [*kept, (b"authorization", b"Bearer " + api_key.encode())]

    def _list_headers(self, api_key: str) -> Headers:
        """Every SDK default header Together must not get, omitted; Together's key."""
        headers: dict[str, str | Omit] = {
            name: Omit() for name in self._client.default_headers if not _kept(name.encode())
        }
        headers["Authorization"] = f"Bearer {api_key}"
        return headers

    def check_model(self, model: str) -> None:
        if model not in SUPPORTED_LLAMA_MODELS:
            supported = ", ".join(SUPPORTED_LLAMA_MODELS)
            raise ModelNotSupportedError(
                f"$.model: {model!r} is not supported by llama4; supported: {supported}", provider=self.name
            )

    @staticmethod
    def reasoning_effort(request: ChatRequest, model: str) -> ReasoningEffort | None:
        """None: the supported Llama 4 models do not reason."""
        return None

    @staticmethod
    def chat_models(ids: list[str]) -> list[str]:
        """The supported models Together lists (its list is every model it serves)."""
        return [model for model in ids if model in SUPPORTED_LLAMA_MODELS]
