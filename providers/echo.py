"""The built-in `echo` provider: no key, no network.

Streams the last user message back word by word (the whitespace after each word stays
with it, so the concatenated content is exactly the message), `ECHO_DELAY_MS` apart.

It also plays a model that calls tools and reasons, so the frames of both, and a whole
agent loop, can be seen without a key (the README's "echo" section):

- with `tools` (and `tool_choice` not `"none"`), each line of the last user message that
  starts with `/tool` is a call: `/tool NAME ARGS` calls `NAME` (a tool of the request)
  with `ARGS` (the text up to the next `/tool` line, stripped; `{}` when empty) as its
  arguments; without a NAME of the request's tools, the call goes to the tool
  `tool_choice` names, else the first tool. The text before the first `/tool` line
  (trailing whitespace stripped) is the answer's text; the stream ends with
  `finish_reason: "tool_calls"`. `tool_choice`
  `"required"` or a named tool, with no `/tool` line, is one call with `{}`.
- when the last message is a `tool` message, the answer is each trailing tool result as
  `NAME returned: CONTENT`, one per line.
- asked to reason (`reasoning_effort` other than `"none"`, or `thinking_enabled`), it
  "thinks" a short scripted sentence: counted in `usage.reasoning_tokens`, and streamed
  first as reasoning when the request has `include_reasoning`.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncGenerator, Sequence

from ..adapter import ChunkStream
from ..chat_types import (
    ChatMessage,
    ChatRequest,
    Chunk,
    FinishReason,
    NamedToolChoice,
    ReasoningChunk,
    StreamChunk,
    Tool,
    ToolCallChunk,
    Usage,
)
from ..errors import ModelNotSupportedError

_WORD = re.compile(r"\s*\S+\s*|\s+")
_TOOL_LINE = re.compile(r"^/tool(?:[ \t]|$)", re.M)
_NAME = re.compile(r"\s*(\S+)")

#: How many characters of a call's arguments go in one `tool_call` chunk.
ARGUMENTS_PIECE = 6
REASONING = "I am echo: my answer is the last message, word for word."


class EchoCall:
    """One scripted tool call: its id, the tool's name and the arguments' JSON text."""

    __slots__ = ("id", "name", "arguments")

    def __init__(self, name: str, arguments: str) -> None:
        self.id = f"call_{secrets.token_hex(12)}"
        self.name = name
        self.arguments = arguments


class EchoAdapter:
    name = "echo"
    default_model = "echo"
    configured = True
    models = ("echo",)

    def __init__(self, delay_ms: float = 20.0) -> None:
        self.delay_s = delay_ms / 1000

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        model = request.model or self.default_model
        if model not in self.models:
            raise ModelNotSupportedError(
                f"model {model!r} is not supported by echo; supported: echo", provider=self.name
            )
        prompt_words = sum(len(m.text.split()) for m in request.messages)
        calls: list[EchoCall] = []
        if request.messages[-1].role == "tool":
            text = tool_results(request.messages)
        else:
            text = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
            if request.tools and request.tool_choice != "none":
                text, calls = plan_calls(text, request.tools, request.tool_choice)
        thinks = request.thinking_enabled or request.reasoning_effort not in (None, "none")
        if not calls and not thinks:
            return ChunkStream(self._words(text, model, prompt_words))
        reasoning = REASONING if thinks else ""
        answer = self._answer(text, calls, reasoning, request.include_reasoning, model, prompt_words)
        return ChunkStream(answer)  # every chunk kind, as the pipeline takes

    async def _words(self, text: str, model: str, prompt_words: int) -> AsyncGenerator[StreamChunk, None]:
        words = _WORD.findall(text)
        for index, word in enumerate(words):
            if index and self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield StreamChunk(word, None, model, self.name)
        usage = Usage.of(prompt_words, len(text.split()))
        yield StreamChunk("", FinishReason.STOP, model, self.name, usage)

    async def _answer(
        self, text: str, calls: list[EchoCall], reasoning: str, show_reasoning: bool, model: str, prompt_words: int
    ) -> AsyncGenerator[Chunk, None]:
        """Reasoning (when shown), then text, then the calls: each piece `delay_s` after
        the one before. The usage counts the reasoning, shown or not."""
        pieces: list[Chunk] = []
        if show_reasoning:
            pieces += [ReasoningChunk(word, model, self.name) for word in _WORD.findall(reasoning)]
        pieces += [StreamChunk(word, None, model, self.name) for word in _WORD.findall(text)]
        for index, call in enumerate(calls):
            pieces.append(ToolCallChunk(index, call.id, call.name, ""))
            arguments = call.arguments
            pieces += [
                ToolCallChunk(index, arguments=arguments[start : start + ARGUMENTS_PIECE])
                for start in range(0, len(arguments), ARGUMENTS_PIECE)
            ]
        for index, piece in enumerate(pieces):
            if index and self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield piece
        reasoning_words = len(reasoning.split())
        completion_words = reasoning_words + len(text.split()) + sum(len(c.arguments.split()) for c in calls)
        usage = Usage.of(prompt_words, completion_words, reasoning_words or None)
        finish = FinishReason.TOOL_CALLS if calls else FinishReason.STOP
        yield StreamChunk("", finish, model, self.name, usage)

    async def list_models(self) -> list[str]:
        return list(self.models)

    async def aclose(self) -> None:
        return None


def plan_calls(text: str, tools: Sequence[Tool], tool_choice: object) -> tuple[str, list[EchoCall]]:
    """The answer's text and calls for the last user message (the module docstring's
    `/tool` lines)."""
    names = {tool.function.name for tool in tools}
    default = tool_choice.function.name if type(tool_choice) is NamedToolChoice else tools[0].function.name
    starts = [match.start() for match in _TOOL_LINE.finditer(text)]
    if not starts:
        if tool_choice == "required" or type(tool_choice) is NamedToolChoice:
            return "", [EchoCall(default, "{}")]
        return text, []
    calls = []
    for start, end in zip(starts, [*starts[1:], len(text)]):
        rest = text[start + len("/tool") : end]
        word = _NAME.match(rest)
        name = default
        if word is not None and word.group(1) in names:
            name, rest = word.group(1), rest[word.end() :]
        calls.append(EchoCall(name, rest.strip() or "{}"))
    return text[: starts[0]].rstrip(), calls


def tool_results(messages: Sequence[ChatMessage]) -> str:
    """`NAME returned: CONTENT` for each `tool` message at the end of the conversation."""
    names = {call.id: call.function.name for m in messages if m.tool_calls for call in m.tool_calls}
    results = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(f"{names.get(message.tool_call_id or '', 'the tool')} returned: {message.text}")
    return "\n".join(reversed(results))
