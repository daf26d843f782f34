"""The Messages API body for a valid `ChatRequest`: OpenAI's shapes (the lingua franca of
our contract) turned into Anthropic's, encoded with msgspec.

A plain request (string contents, no tools) sends our `ChatMessage`s as they are: they
encode as `{"role", "content"}`, which is Anthropic's shape too. Only a request with
parts, tool calls or tool results gets its turns rebuilt as content blocks.

What this provider cannot do is refused here, before any upstream call, as a `422`
naming the field (`InvalidRequestError`).

An assistant turn's `thinking` goes back first in its turn, as the API requires: a
`ThinkingPart` with a signature as a `thinking` block, a redacted one (`redacted`, or a
signature marked `REDACTED_SIGNATURE`, as `anthropic_stream` emits it) as a
`redacted_thinking` block. A part without a signature, or with another provider's (one
with a `:`, which Anthropic's base64 signatures never hold), is dropped: the API refuses
thinking it did not sign.
"""

from __future__ import annotations

import enum
from typing import Any, Literal, NamedTuple

import anthropic
import msgspec

from ..chat_types import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    ImagePart,
    NamedToolChoice,
    ResponseFormat,
    TextPart,
    ThinkingPart,
    Tool,
    ToolChoice,
)
from ..errors import InvalidRequestError

PROVIDER = "anthropic"

#: `max_tokens` when a request names none: the Messages API requires one, and it must
#: leave room for extended thinking plus the answer.
DEFAULT_MAX_TOKENS = 16384

#: The smallest `budget_tokens` the API takes.
MIN_THINKING_BUDGET = 1024

#: `reasoning_effort` → `budget_tokens` for models with manual extended thinking
#: (`thinking_enabled` alone counts as `medium`); capped at `max_tokens - 1`.
THINKING_BUDGETS = {"minimal": 1024, "low": 4096, "medium": 8192, "high": 12288}

#: `reasoning_effort` → `output_config.effort` for models with adaptive thinking.
EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high"}

#: How a `redacted_thinking` block's `data` travels as a signature (`SignatureChunk`,
#: `ThinkingPart.signature`).
REDACTED_SIGNATURE = "redacted_thinking:"


# --- the body ---------------------------------------------------------------------------


class TextBlock(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class Base64Source(msgspec.Struct, tag="base64", tag_field="type"):
    media_type: str
    data: str


class URLSource(msgspec.Struct, tag="url", tag_field="type"):
    url: str


class ImageBlock(msgspec.Struct, tag="image", tag_field="type"):
    source: Base64Source | URLSource


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: msgspec.Raw  # the call's arguments, the client's JSON text as it came


class ToolResultBlock(msgspec.Struct, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock]


class ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str


class RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", tag_field="type"):
    data: str


Block = TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock


class WireMessage(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class WireTool(msgspec.Struct, omit_defaults=True):
    name: str
    input_schema: dict[str, Any]
    description: str | None = None
    strict: bool | None = None


class WireToolChoice(msgspec.Struct, omit_defaults=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None


class Thinking(msgspec.Struct, omit_defaults=True):
    type: Literal["enabled", "adaptive", "disabled", "between_tools"]
    budget_tokens: int | None = None
    display: Literal["summarized"] | None = None


class JSONOutputFormat(msgspec.Struct, tag="json_schema", tag_field="type"):
    schema: dict[str, Any]


class OutputConfig(msgspec.Struct, omit_defaults=True):
    effort: str | None = None
    format: JSONOutputFormat | None = None


class WireRequest(msgspec.Struct, omit_defaults=True):
    """The Messages API body: system messages joined into the top-level `system`."""

    model: str
    max_tokens: int
    messages: list[ChatMessage] | list[WireMessage]
    stream: bool
    system: str | None = None
    stop_sequences: list[str] | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    tools: list[WireTool] | None = None
    tool_choice: WireToolChoice | None = None

    @classmethod
    def of(cls, request: ChatRequest, model: str) -> WireRequest:
        messages = request.messages
        system = "\n\n".join(m.text for m in messages if m.role == "system") or None
        plain = [m for m in messages if m.role != "system"]
        turns: list[ChatMessage] | list[WireMessage] = plain
        for message in plain:  # a plain request's messages go as they are: `{"role", "content"}`
            if (
                type(message.content) is not str
                or message.role == "tool"
                or message.tool_calls is not None
                or message.tool_call_id is not None
                or message.thinking
            ):
                turns = wire_turns(messages)
                break
        wire = cls(model, request.max_tokens or DEFAULT_MAX_TOKENS, turns, True, system)
        if request.stop is not None:
            wire.stop_sequences = request.stop_sequences
        if request.tools:
            wire.tools = wire_tools(request.tools)
            if request.tool_choice is not None:
                wire.tool_choice = wire_tool_choice(request.tool_choice, model)
        effort: str | None = None
        thinking = model_thinking(model)
        if forces_tool(wire.tool_choice) and thinking.form is ThinkingForm.ADAPTIVE:
            # The API refuses thinking with a forced tool: the model's thinking-off form.
            wire.thinking, effort = _OFF[thinking.off]
        elif request.reasoning_effort is not None or request.thinking_enabled or request.include_reasoning:
            wire.thinking, effort = thinking_of(request, model, wire.max_tokens)
            if wire.thinking is not None and wire.thinking.type == "enabled" and forces_tool(wire.tool_choice):
                raise InvalidRequestError(
                    "$.tool_choice: anthropic cannot force a tool call with manual extended thinking; "
                    "use tool_choice auto or none, or reasoning_effort none",
                    provider=PROVIDER,
                )
        output_format = output_format_of(request.response_format) if request.response_format is not None else None
        if effort is not None or output_format is not None:
            wire.output_config = OutputConfig(effort, output_format)
        return wire


# --- messages -----------------------------------------------------------------------------


def wire_turns(messages: list[ChatMessage]) -> list[WireMessage]:
    """The turns as content blocks. `tool` messages become `tool_result` blocks of one
    `user` turn (consecutive results together, as the API requires, and a user message
    right after them joins that turn after the results)."""
    turns: list[WireMessage] = []
    results: list[Block] | None = None  # the open turn of tool results, if the last is one
    for index, message in enumerate(messages):
        role = message.role
        if role == "system":
            continue
        if role == "assistant":
            turns.append(WireMessage("assistant", assistant_content(message, index)))
            results = None
        elif role == "tool":
            result = tool_result(message, index)
            if results is None:
                results = [result]
                turns.append(WireMessage("user", results))
            else:
                results.append(result)
        elif results is not None:
            results.extend(content_blocks(message.content, index))
            results = None
        else:
            content = message.content
            blocks: str | list[Block] = content if isinstance(content, str) else list(content_blocks(content, index))
            turns.append(WireMessage("user", blocks))
    return turns


def assistant_content(message: ChatMessage, index: int) -> str | list[Block]:
    """Text as a string; with signed thinking or tool calls, the thinking blocks, a text
    block (if any), then `tool_use` blocks."""
    text = message.text
    blocks: list[Block] = thinking_blocks(message.thinking) if message.thinking else []
    if not message.tool_calls and not blocks:
        return text
    if text:
        blocks.append(TextBlock(text))
    for number, call in enumerate(message.tool_calls or ()):
        path = f"$.messages[{index}].tool_calls[{number}].function.arguments"
        arguments = tool_arguments(call.function.arguments, path)
        blocks.append(ToolUseBlock(call.id, call.function.name, arguments))
    return blocks


def thinking_blocks(parts: list[ThinkingPart]) -> list[Block]:
    """The parts Anthropic signed, as the blocks it sent them in (see the module's docstring)."""
    blocks: list[Block] = []
    for part in parts:
        signature = part.signature or ""
        if part.redacted:
            if part.text:
                blocks.append(RedactedThinkingBlock(part.text))
        elif signature.startswith(REDACTED_SIGNATURE):
            blocks.append(RedactedThinkingBlock(signature[len(REDACTED_SIGNATURE) :]))
        elif signature and ":" not in signature:
            blocks.append(ThinkingBlock(part.text, signature))
    return blocks


_object_decoder = msgspec.json.Decoder(dict[str, Any])


def tool_arguments(arguments: str, path: str) -> msgspec.Raw:
    """A call's `arguments` (a JSON object's text) as the `input` object, passed through
    untouched; an empty string is `{}`."""
    if not arguments.strip():
        return msgspec.Raw(b"{}")
    try:
        _object_decoder.decode(arguments)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidRequestError(f"{path}: not a JSON object", provider=PROVIDER) from None
    except RecursionError:
        raise InvalidRequestError(f"{path}: nested too deep", provider=PROVIDER) from None
    return msgspec.Raw(arguments.encode())


def tool_result(message: ChatMessage, index: int) -> ToolResultBlock:
    if message.tool_call_id is None:
        raise InvalidRequestError(f"$.messages[{index}].tool_call_id: required field is missing", provider=PROVIDER)
    content = message.content
    if content is None or type(content) is str:
        return ToolResultBlock(message.tool_call_id, content or "")
    return ToolResultBlock(message.tool_call_id, content_blocks(content, index))


def content_blocks(content: str | list[ContentPart] | None, index: int) -> list[TextBlock | ImageBlock]:
    """Parts as blocks, in order (a string is one text block; empty text is left out)."""
    if content is None or type(content) is str:
        return [TextBlock(content)] if content else []
    blocks: list[TextBlock | ImageBlock] = []
    for number, part in enumerate(content):
        if type(part) is TextPart:
            if part.text:
                blocks.append(TextBlock(part.text))
        else:
            path = f"$.messages[{index}].content[{number}].image_url.url"
            blocks.append(image_block(part, path))  # type: ignore[arg-type]
    return blocks


def image_block(part: ImagePart, path: str) -> ImageBlock:
    """A `data:` URL's base64 text as it came (not decoded, not re-encoded); an `https:`
    URL as a `url` source (Anthropic fetches it)."""
    url = part.image_url.url
    if url.startswith("https://"):
        return ImageBlock(URLSource(url))
    head, comma, data = url.partition(",")
    if url.startswith("data:") and comma and head.endswith(";base64"):
        return ImageBlock(Base64Source(head[5:-7], data))
    raise InvalidRequestError(
        f"{path}: anthropic takes a data:image/…;base64 URL or an https:// URL", provider=PROVIDER
    )


# --- tools and output format ----------------------------------------------------------------


def wire_tools(tools: list[Tool]) -> list[WireTool]:
    """`parameters` → `input_schema` (`{"type": "object"}` when absent); a `strict` tool's
    schema goes through the SDK's `transform_schema` (the subset strict mode takes)."""
    wire: list[WireTool] = []
    for index, tool in enumerate(tools):
        function = tool.function
        schema = function.parameters if function.parameters is not None else {"type": "object"}
        if "type" not in schema:
            schema = {"type": "object", **schema}
        if function.strict:
            schema = strict_schema(schema, f"$.tools[{index}].function.parameters")
        wire.append(WireTool(function.name, schema, function.description, True if function.strict else None))
    return wire


def wire_tool_choice(choice: ToolChoice, model: str) -> WireToolChoice:
    if type(choice) is NamedToolChoice:
        wire = WireToolChoice("tool", choice.function.name)
    else:
        wire = WireToolChoice("any" if choice == "required" else choice)  # type: ignore[arg-type]
    if forces_tool(wire) and refuses_forced_tools(model):
        raise InvalidRequestError(
            f"$.tool_choice: {model} cannot be made to call a tool (required or a named tool); use auto",
            provider=PROVIDER,
        )
    return wire


def forces_tool(choice: WireToolChoice | None) -> bool:
    return choice is not None and choice.type in ("any", "tool")


def output_format_of(response_format: ResponseFormat | None) -> JSONOutputFormat | None:
    """`json_object` → the schema `{"type": "object"}`; `json_schema` → its schema through
    the SDK's `transform_schema` (Anthropic always decodes to the schema: `strict` or not)."""
    if response_format is None or response_format.type == "text":
        return None
    json_schema = response_format.json_schema
    if response_format.type == "json_object" or json_schema is None or json_schema.schema is None:
        return JSONOutputFormat({"type": "object"})
    return JSONOutputFormat(strict_schema(json_schema.schema, "$.response_format.json_schema.schema"))


def strict_schema(schema: dict[str, Any], path: str) -> dict[str, Any]:
    try:
        return anthropic.transform_schema(schema)
    except (ValueError, TypeError, AttributeError, AssertionError, KeyError, RecursionError) as error:
        # The SDK's helper meets what it does not take in many ways (`"type": ["string",
        # "null"]` fails an `assert_never`): each is the client's schema, never a 5xx.
        detail = str(error)[:200] or type(error).__name__
        raise InvalidRequestError(
            f"{path}: anthropic cannot use this schema ({detail}); a nullable type "
            'is written `"anyOf": [{"type": "string"}, {"type": "null"}]`',
            provider=PROVIDER,
        ) from None


# --- thinking -------------------------------------------------------------------------------


class ThinkingForm(enum.Enum):
    """How a model takes thinking."""

    NONE = "none"  # it cannot think (before Claude 3.7)
    BUDGET = "budget"  # manual extended thinking, `budget_tokens`; off unless asked (3.7 – 4.5)
    ADAPTIVE = "adaptive"  # adaptive thinking, depth set by `output_config.effort` (4.6 on)


class ThinkingOff(enum.Enum):
    """How a model with adaptive thinking runs without up-front thinking."""

    UNSENT = "unsent"  # `thinking` left out: off unless asked (Claude 4.6)
    DISABLED = "disabled"  # `{"type": "disabled"}` (Sonnet 5, Opus 5, Haiku 5.5: on by default)
    BETWEEN_TOOLS = "between_tools"  # Sonnet 5.5's lowest setting (it refuses `disabled`)
    LOW_EFFORT = "low_effort"  # always on (Opus 4.7 on, Opus 5.5, Fable, Mythos): effort `low` instead


class ModelThinking(NamedTuple):
    form: ThinkingForm
    off: ThinkingOff


def model_thinking(model: str) -> ModelThinking:
    """What the Claude docs say each model generation takes; a name without a version
    (`claude-mythos-preview`) or one newer than this table counts as always thinking,
    the setting no current model refuses."""
    family, version = model_family(model), model_version(model)
    if version is None:
        return ModelThinking(ThinkingForm.ADAPTIVE, ThinkingOff.LOW_EFFORT)
    if version < (3, 7):
        return ModelThinking(ThinkingForm.NONE, ThinkingOff.UNSENT)
    if version < (4, 6):
        return ModelThinking(ThinkingForm.BUDGET, ThinkingOff.UNSENT)
    if version == (4, 6):
        return ModelThinking(ThinkingForm.ADAPTIVE, ThinkingOff.UNSENT)
    if (family == "haiku" and version[0] == 5) or (family in ("sonnet", "opus") and version == (5, 0)):
        return ModelThinking(ThinkingForm.ADAPTIVE, ThinkingOff.DISABLED)
    if family == "sonnet" and version == (5, 5):
        return ModelThinking(ThinkingForm.ADAPTIVE, ThinkingOff.BETWEEN_TOOLS)
    return ModelThinking(ThinkingForm.ADAPTIVE, ThinkingOff.LOW_EFFORT)


def model_family(model: str) -> str:
    """`claude-sonnet-4-5` and `claude-3-7-sonnet-20250219` → `sonnet`."""
    return next((part for part in model.split("-") if part.isalpha() and part != "claude"), "")


def model_version(model: str) -> tuple[int, int] | None:
    """`claude-sonnet-4-5` → (4, 5), `claude-3-7-sonnet-20250219` → (3, 7),
    `claude-sonnet-5` → (5, 0); a date is not a version."""
    numbers = [int(part) for part in model.split("-") if part.isdigit() and len(part) <= 2]
    if not numbers:
        return None
    return numbers[0], numbers[1] if len(numbers) > 1 else 0


def refuses_forced_tools(model: str) -> bool:
    """Opus and Sonnet from 5.5, Fable and Mythos from 5.1 take no `tool_choice` `any`/`tool`."""
    family, version = model_family(model), model_version(model)
    if version is None:
        return False
    return (family in ("opus", "sonnet") and version >= (5, 5)) or (family in ("fable", "mythos") and version >= (5, 1))


_OFF: dict[ThinkingOff, tuple[Thinking | None, str | None]] = {
    ThinkingOff.UNSENT: (None, None),
    ThinkingOff.DISABLED: (Thinking("disabled"), None),
    ThinkingOff.BETWEEN_TOOLS: (Thinking("between_tools"), None),
    ThinkingOff.LOW_EFFORT: (None, "low"),
}


def thinking_of(request: ChatRequest, model: str, max_tokens: int) -> tuple[Thinking | None, str | None]:
    """`thinking` and `output_config.effort` for a request that mentions reasoning.

    A manual-thinking request that continues a tool-use turn (its last assistant message
    has tool calls) gets no thinking: the API then wants that turn's signed thinking
    blocks back first, which the OpenAI shape cannot carry and we keep no state for; the
    API's own advice is to disable thinking. Adaptive thinking takes such turns as they
    are (the model may always have skipped thinking), so nothing changes there.
    """
    form, off = model_thinking(model)
    effort = request.reasoning_effort
    asked = effort is not None or request.thinking_enabled
    if form is ThinkingForm.NONE:
        return None, None
    if form is ThinkingForm.BUDGET:
        if not asked or effort == "none" or continues_tool_use(request.messages):
            return None, None
        budget = min(THINKING_BUDGETS[effort or "medium"], max_tokens - 1)
        return (Thinking("enabled", budget) if budget >= MIN_THINKING_BUDGET else None), None
    if effort == "none":
        return _OFF[off]
    display: Literal["summarized"] | None = "summarized" if request.include_reasoning else None
    if asked:
        return Thinking("adaptive", display=display), EFFORTS.get(effort or "")
    if display is not None and off is not ThinkingOff.UNSENT:  # thinking runs by default: show it
        return Thinking("adaptive", display=display), None
    return None, None


def continues_tool_use(messages: list[ChatMessage]) -> bool:
    """Whether the last assistant turn called tools without its signed thinking sent back
    (with it, manual thinking can stay on: the API gets the blocks it wants)."""
    for message in reversed(messages):
        if message.role == "assistant":
            return bool(message.tool_calls) and not thinking_blocks(message.thinking or [])
    return False
