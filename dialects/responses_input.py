"""The Responses request read for a translated target: `ResponsesRequest` (the fields a
translation reads), its tools planned for the target (`plan_tools`: functions as they are,
a namespace's functions as `<namespace>__<name>`, built-in and custom tools left out unless
`tool_choice` requires one), `text.format` as our `response_format`, and the input items
as our messages (`to_messages`: an assistant turn gathers the text, calls and reasoning
items in a row; reasoning items become `ThinkingPart`s, their `encrypted_content` the
signature)."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

import msgspec

from ..chat_types import (
    ChatMessage,
    ContentPart,
    FunctionCall,
    FunctionDefinition,
    ImagePart,
    ImageURL,
    JSONSchemaFormat,
    NamedFunction,
    NamedToolChoice,
    ReasoningEffort,
    ResponseFormat,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from ..errors import GatewayError, InvalidRequestError
from ..responses_store import Item

# --- the request ----------------------------------------------------------------------


class ReasoningConfig(msgspec.Struct):
    effort: str | None = None
    summary: str | None = None


class TextConfig(msgspec.Struct):
    format: dict[str, Any] | None = None


class ResponsesRequest(msgspec.Struct):
    """The fields of a Responses request a translation reads; the rest are ignored here
    (and passed through as sent to `openai`)."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: TextConfig | None = None
    max_output_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    reasoning: ReasoningConfig | None = None
    include: list[str] | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    background: bool | None = None
    stream: bool | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, Any] | None = None
    truncation: str | None = None
    user: str | None = None


responses_request_decoder = msgspec.json.Decoder(ResponsesRequest)

#: `reasoning.effort` → ours (`xhigh` is the most we can ask for: `high`).
EFFORTS: dict[str, ReasoningEffort] = {
    "none": "none",
    "minimal": "minimal",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
}
#: `include` value that shows reasoning items' `encrypted_content` (the provider's signature).
ENCRYPTED_CONTENT = "reasoning.encrypted_content"
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]")
#: What an upstream response id may look like (it goes into the upstream's path).
UPSTREAM_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")


class ResponseNotFoundError(GatewayError):
    status, type = 404, "response_not_found"


def not_found(response_id: str) -> ResponseNotFoundError:
    shown = response_id[:100]
    return ResponseNotFoundError(
        f"No response found with id '{shown}': it does not exist, has expired "
        "(RESPONSES_TTL_S), was created with store: false, or was deleted."
    )


class UnsupportedError(GatewayError):
    """A Responses feature the target cannot honour (a 400 naming it)."""

    status, type = 400, "unsupported_parameter"


# --- tools ----------------------------------------------------------------------------


class ToolPlan:
    """A request's tools as the target takes them: functions (namespaces flattened), the
    tool choice, and each flattened name's `(namespace, name)`."""

    __slots__ = ("names", "tool_choice", "tools")

    def __init__(
        self, tools: list[Tool] | None, tool_choice: ToolChoice | None, names: dict[str, tuple[str, str]]
    ) -> None:
        self.tools = tools
        self.tool_choice = tool_choice
        self.names = names


def flat_name(namespace: str, name: str) -> str:
    """`<namespace>__<name>` as a name every provider takes (`^[A-Za-z0-9_-]{1,64}$`)."""
    flat = _NOT_NAME.sub("_", f"{namespace}__{name}")
    if len(flat) > 64:
        flat = flat[:55] + "_" + hashlib.sha256(flat.encode()).hexdigest()[:8]
    return flat


def function_tool(spec: dict[str, Any], name: str, where: str) -> Tool:
    if not _TOOL_NAME.fullmatch(name):
        raise InvalidRequestError(f"{where}.name: {name[:80]!r} must match ^[A-Za-z0-9_-]{{1,64}}$")
    parameters = spec.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequestError(f"{where}.parameters: must be a JSON Schema object")
    description = spec.get("description")
    strict = spec.get("strict")
    return Tool(
        FunctionDefinition(
            name,
            description if isinstance(description, str) else None,
            parameters,
            strict if isinstance(strict, bool) else None,
        )
    )


def plan_tools(tools: list[dict[str, Any]] | None, choice: str | dict[str, Any] | None, provider: str) -> ToolPlan:
    """Functions and namespaces offered as functions; built-in and custom tools left out,
    unless `tool_choice` requires one (then a 400 naming it)."""
    functions: list[Tool] = []
    names: dict[str, tuple[str, str]] = {}
    left_out: list[str] = []
    for index, spec in enumerate(tools or ()):
        kind = spec.get("type")
        where = f"$.tools[{index}]"
        if kind == "function":
            functions.append(function_tool(spec, str(spec.get("name", "")), where))
        elif kind == "namespace":
            namespace = str(spec.get("name", ""))
            for number, inner in enumerate(spec.get("tools") or ()):
                if isinstance(inner, dict) and inner.get("type") == "function":
                    name = str(inner.get("name", ""))
                    flat = flat_name(namespace, name)
                    names[flat] = (namespace, name)
                    functions.append(function_tool(inner, flat, f"{where}.tools[{number}]"))
        else:
            left_out.append(str(kind))
    tool_choice: ToolChoice | None = None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequestError(f"$.tool_choice: {choice[:40]!r} is not auto, none or required")
        if choice == "required" and not functions:
            raise UnsupportedError(
                f"$.tool_choice: required, but the only tools are built-in ones "
                f"({', '.join(left_out) or 'none'}), which {provider} cannot run",
                provider=provider,
            )
        tool_choice = choice  # type: ignore[assignment]
    elif isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function":
            tool_choice = NamedToolChoice(NamedFunction(str(choice.get("name", ""))))
        elif kind == "allowed_tools":
            tool_choice = "required" if choice.get("mode") == "required" else "auto"
            allowed = {str(t.get("name")) for t in choice.get("tools") or () if isinstance(t, dict)}
            functions = [
                tool
                for tool in functions
                if tool.function.name in allowed or names.get(tool.function.name, ("", ""))[1] in allowed
            ]
            if tool_choice == "required" and not functions:
                raise UnsupportedError(
                    f"$.tool_choice.tools: no function tool is allowed, and {provider} can run no built-in one",
                    provider=provider,
                )
        else:
            raise UnsupportedError(
                f"$.tool_choice: requires the built-in tool {str(kind)[:40]!r}, which {provider} "
                "cannot run; use auto, or send the request to an openai model",
                provider=provider,
            )
    if not functions:
        return ToolPlan(None, None, names)
    return ToolPlan(functions, tool_choice, names)


def response_format_of(text: TextConfig | None) -> ResponseFormat | None:
    """`text.format` → our `response_format` (`json_schema`'s fields sit in the format itself)."""
    spec = text.format if text is not None else None
    if not spec or spec.get("type") in (None, "text"):
        return None
    if spec.get("type") == "json_object":
        return ResponseFormat("json_object")
    if spec.get("type") != "json_schema":
        raise InvalidRequestError(
            f"$.text.format.type: {str(spec.get('type'))[:40]!r} is not text, json_object or json_schema"
        )
    schema = spec.get("schema")
    strict = spec.get("strict")
    description = spec.get("description")
    return ResponseFormat(
        "json_schema",
        JSONSchemaFormat(
            str(spec.get("name", "response")),
            schema if isinstance(schema, dict) else None,
            description if isinstance(description, str) else None,
            strict if isinstance(strict, bool) else None,
        ),
    )


# --- input items → our messages -------------------------------------------------------


def user_content(content: Any, where: str) -> str | list[ContentPart]:
    """A message's content: a string, or its parts (`input_text`, `output_text`,
    `refusal` → text; `input_image` → an image); one text part is a string."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where}: must be a string or a list of parts")
    parts: list[ContentPart] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            parts.append(TextPart(str(part.get("text", ""))))
        elif kind == "refusal":
            parts.append(TextPart(str(part.get("refusal", ""))))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise UnsupportedError(
                    f"{where}[{index}].image_url: send the image as a URL (a data: URL or "
                    "https://); file_id images need an openai model"
                )
            detail = part.get("detail")
            parts.append(ImagePart(ImageURL(url, detail if detail in ("auto", "low", "high") else None)))
        else:
            raise UnsupportedError(
                f"{where}[{index}].type: {str(kind)[:40]!r} parts need an openai model; send "
                "input_text and input_image parts"
            )
    if len(parts) == 1 and type(parts[0]) is TextPart:
        return parts[0].text
    return parts


class Turns:
    """Input items → messages: an assistant turn gathers the text, calls and reasoning
    items in a row, up to the next user, system or tool item (the target's own order of
    reasoning, text and calls is the adapter's to make)."""

    __slots__ = ("calls", "messages", "names", "text", "thinking")

    def __init__(self, names: dict[str, tuple[str, str]]) -> None:
        self.messages: list[ChatMessage] = []
        self.text: list[str] = []
        self.calls: list[ToolCall] = []
        self.thinking: list[ThinkingPart] = []
        self.names = {value: key for key, value in names.items()}

    def close(self) -> None:
        if self.text or self.calls:
            self.messages.append(
                ChatMessage(
                    role="assistant",
                    content="".join(self.text),
                    tool_calls=self.calls or None,
                    thinking=self.thinking or None,
                )
            )
        self.text, self.calls, self.thinking = [], [], []

    def add(self, item: Item, where: str) -> None:
        kind = item.get("type") or "message"
        if kind == "message":
            role = item.get("role")
            content = item.get("content", "")
            if role == "assistant":
                text = user_content(content, f"{where}.content")
                self.text.append(
                    text if type(text) is str else "".join(part.text for part in text if type(part) is TextPart)
                )
                return
            self.close()
            if role in ("system", "developer"):
                text = user_content(content, f"{where}.content")
                self.messages.append(
                    ChatMessage(
                        role="system",
                        content=text
                        if type(text) is str
                        else "\n".join(part.text for part in text if type(part) is TextPart),
                    )
                )
            elif role == "user":
                self.messages.append(ChatMessage(role="user", content=user_content(content, f"{where}.content")))
            else:
                raise InvalidRequestError(
                    f"{where}.role: {str(role)[:40]!r} is not user, assistant, system or developer"
                )
        elif kind == "function_call":
            name = str(item.get("name", ""))
            namespace = item.get("namespace")
            if namespace:
                name = self.names.get((namespace, name)) or flat_name(str(namespace), name)
            call_id = item.get("call_id") or item.get("id") or ""
            self.calls.append(ToolCall(str(call_id), FunctionCall(name, str(item.get("arguments") or "{}"))))
        elif kind == "function_call_output":
            self.close()
            output = item.get("output", "")
            content = output if isinstance(output, str) else user_content(output, f"{where}.output")
            self.messages.append(ChatMessage(role="tool", content=content, tool_call_id=str(item.get("call_id", ""))))
        elif kind == "reasoning":  # part of the assistant turn it is in (before or after its text)
            summary = item.get("summary") or ()
            text = "".join(str(part.get("text", "")) for part in summary if isinstance(part, dict))
            signature = item.get("encrypted_content")
            if text or signature:
                self.thinking.append(ThinkingPart(text, signature if isinstance(signature, str) else None))
        else:
            raise UnsupportedError(
                f"{where}.type: {str(kind)[:40]!r} items need an openai model; send message, "
                "function_call, function_call_output, reasoning and item_reference items"
            )


def to_messages(instructions: str | None, items: list[Item], names: dict[str, tuple[str, str]]) -> list[ChatMessage]:
    turns = Turns(names)
    if instructions:
        turns.messages.append(ChatMessage(role="system", content=instructions))
    for index, item in enumerate(items):
        turns.add(item, f"$.input[{index}]")
    turns.close()
    return turns.messages


def is_reference(item: Item) -> bool:
    """An `item_reference` (its `type` may be left out: then it is an `id` and nothing else)."""
    kind = item.get("type")
    return kind == "item_reference" or (kind is None and "role" not in item and "id" in item)


def input_items(value: str | list[dict[str, Any]] | None) -> list[Item]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}] if value else []
    return value
