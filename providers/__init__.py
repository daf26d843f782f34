"""Provider adapters and the registry from provider name to adapter.

Each adapter module holds one provider's translation from its SDK's stream to our
`StreamChunk`; `types`, `errors`, `settings` and `base` are shared by all of them.
"""

from __future__ import annotations

from streamgate.providers.anthropic_stream import AnthropicStreamAdapter
from streamgate.providers.base import Adapter
from streamgate.providers.echo import EchoAdapter
from streamgate.providers.gemini_stream import GeminiStreamAdapter
from streamgate.providers.llama4_stream import Llama4StreamAdapter
from streamgate.providers.openai_stream import OpenAIStreamAdapter
from streamgate.settings import Settings


def build_adapters(settings: Settings) -> dict[str, Adapter]:
    """One adapter per provider of the contract's table, each with its long-lived client."""
    return {
        "openai": OpenAIStreamAdapter(settings),
        "llama4": Llama4StreamAdapter(settings),
        "anthropic": AnthropicStreamAdapter(settings),
        "gemini": GeminiStreamAdapter(settings),
        "echo": EchoAdapter(settings.echo_delay_ms),
    }
