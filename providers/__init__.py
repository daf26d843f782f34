"""Provider adapters and the registry from provider name to adapter.

Each adapter module holds one provider's translation from its SDK's stream to our
`StreamChunk`; `types`, `errors`, `settings` and `base` are shared by all of them.
"""

from __future__ import annotations

from providers.anthropic_stream import AnthropicStreamAdapter
from providers.base import Adapter
from providers.echo import EchoAdapter
from providers.gemini_stream import GeminiStreamAdapter
from providers.llama4_stream import Llama4StreamAdapter
from providers.openai_stream import OpenAIStreamAdapter
from providers.settings import Settings


def build_adapters(settings: Settings) -> dict[str, Adapter]:
    """One adapter per provider of the contract's table, each with its long-lived client."""
    return {
        "openai": OpenAIStreamAdapter(settings),
        "llama4": Llama4StreamAdapter(settings),
        "anthropic": AnthropicStreamAdapter(settings),
        "gemini": GeminiStreamAdapter(settings),
        "echo": EchoAdapter(settings.echo_delay_ms),
    }
