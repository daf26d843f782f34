"""The client dialects, one module each. A dialect module has `routes(gateway)` (its
endpoints, chat ones built on `pipeline.ChatEndpoint`), `RESTORERS` (its resumable
frames rebuilt from their `meta()`, by dialect name) and `ERROR_SENDERS` (path prefix →
the sender of its error shape, for refusals before a route is reached). Adding one is
one module and one line here."""

from __future__ import annotations

from types import ModuleType

from . import anthropic_messages, native, openai_chat, openai_responses

DIALECTS: tuple[ModuleType, ...] = (native, openai_chat, anthropic_messages, openai_responses)
