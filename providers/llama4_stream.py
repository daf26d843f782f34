"""The `llama4` provider: Llama 4 on Together, through `openai.AsyncOpenAI`.

Together speaks OpenAI's Chat Completions wire, so this is the OpenAI adapter with
another key, base URL and model list; the chunk parsing is the same code (Together's
`eos` finish reason is mapped there). The model is checked against
`SUPPORTED_LLAMA_MODELS` before any network call.

The openai SDK also fills its headers from OpenAI's environment (`OPENAI_ORG_ID`,
`OPENAI_PROJECT_ID`, `OPENAI_CUSTOM_HEADERS`, which may even hold an OpenAI
`Authorization`): none of that may reach Together, so its requests keep only the
protocol, SDK-identification and `x-stainless-*` headers, with Together's own key.
"""

from __future__ import annotations

from streamgate.errors import ModelNotSupportedError
from streamgate.providers.openai_stream import OpenAIStreamAdapter
from streamgate.settings import Settings

TOGETHER_BASE_URL = "https://api.together.xyz/v1"
#: Request headers a Together call keeps from the SDK's (besides `x-stainless-*`).
TOGETHER_HEADERS = frozenset({b"host", b"accept", b"accept-encoding", b"connection", b"content-type", b"user-agent"})
SUPPORTED_LLAMA_MODELS = (
    "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8",
    "meta-llama/Llama-4-Scout-17B-16E-Instruct",
)


class Llama4StreamAdapter(OpenAIStreamAdapter):
    name = "llama4"
    key_env = "TOGETHER_API_KEY"
    default_model = SUPPORTED_LLAMA_MODELS[0]
    models = SUPPORTED_LLAMA_MODELS

    @staticmethod
    def _key_and_base_url(settings: Settings) -> tuple[str | None, str]:
        return settings.together_api_key, settings.together_base_url or TOGETHER_BASE_URL

    @staticmethod
    def _upstream_headers(headers: list[tuple[bytes, bytes]], api_key: str) -> list[tuple[bytes, bytes]]:
        kept = [(name, value) for name, value in headers
                if name.lower() in TOGETHER_HEADERS or name.lower().startswith(b"x-stainless-")]
        return [*kept, (b"authorization", b"Bearer " + api_key.encode())]

    def check_model(self, model: str) -> None:
        if model not in SUPPORTED_LLAMA_MODELS:
            supported = ", ".join(SUPPORTED_LLAMA_MODELS)
            raise ModelNotSupportedError(
                f"$.model: {model!r} is not supported by llama4; supported: {supported}", provider=self.name
            )
