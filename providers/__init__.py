"""The provider adapters, one module each, loaded only when an app is built.

`build_adapters` imports each adapter module by name when it makes the adapter, so
importing the core (`pipeline`, `resume`, the dialects) imports no SDK; the adapter
interface itself lives in `adapter.py`, outside this package.
"""

from __future__ import annotations

import importlib

from ..adapter import Adapter
from ..sdk_internals import require_private_members
from ..settings import Settings

#: Provider name → the module and class of its adapter (imported when first built).
ADAPTER_CLASSES = {
    "openai": ("openai_stream", "OpenAIStreamAdapter"),
    "llama4": ("llama4_stream", "Llama4StreamAdapter"),
    "anthropic": ("anthropic_stream", "AnthropicStreamAdapter"),
    "gemini": ("gemini_stream", "GeminiStreamAdapter"),
}
#: The distributions whose private members each adapter uses (`sdk_internals`).
SDK_OF = {
    "openai": ("openai", "aiohttp"),
    "llama4": ("openai", "aiohttp"),
    "anthropic": ("anthropic", "aiohttp"),
    "gemini": ("google-genai", "aiohttp"),
}
#: The providers of the contract's table, in its order.
PROVIDERS = (*ADAPTER_CLASSES, "echo")


def build_adapter(name: str, settings: Settings) -> Adapter:
    """The adapter of provider `name`, with its long-lived client."""
    if name == "echo":
        from .echo import EchoAdapter

        return EchoAdapter(settings.echo_delay_ms)
    module_name, class_name = ADAPTER_CLASSES[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    require_private_members(SDK_OF[name])
    adapter: Adapter = getattr(module, class_name)(settings)
    return adapter


def build_adapters(settings: Settings) -> dict[str, Adapter]:
    """One adapter per provider of the contract's table."""
    return {name: build_adapter(name, settings) for name in PROVIDERS}
