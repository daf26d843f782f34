"""What a decoded `ChatRequest` must satisfy beyond its types, checked before any upstream
call on both endpoints: a failure is a `422 invalid_request` naming the field
(`$.messages[2].tool_call_id`).

The types (`chat_types`) already hold the shapes, ranges, enum values and the tool-name
pattern; these are the rules that span fields (a `tool` message answers an earlier call,
`tool_choice` names a tool that exists) or look inside a value (an image URL). A plain
text request pays one pass over its messages with a few attribute checks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .chat_types import ChatMessage, ChatRequest, ImagePart, NamedToolChoice, ResponseFormat, Tool
from .errors import InvalidRequestError

#: The largest image a `data:` URL may carry, decoded (OpenAI's own per-image limit).
MAX_IMAGE_BYTES = 20 * 1024 * 1024
IMAGE_DATA_URL = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,")
#: Strict base64 (RFC 4648 alphabet, padding only at the end; the length a multiple of 4).
BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_request(request: ChatRequest) -> None:
    """Raise `InvalidRequestError` naming the first field that breaks a rule."""
    only_system = True
    call_ids: set[str] = set()
    for index, message in enumerate(request.messages):
        role = message.role
        if role != "system":
            only_system = False
        if type(message.content) is not str:
            check_content(message, index)
        if message.tool_calls is not None or message.tool_call_id is not None or role == "tool":
            check_tool_turn(message, index, call_ids)
    if only_system:
        raise InvalidRequestError("$.messages: at least one message must be user, assistant or tool")
    if request.tools is not None or request.tool_choice is not None:
        check_tools(request.tools, request.tool_choice)
    if request.response_format is not None:
        check_response_format(request.response_format)


def check_content(message: ChatMessage, index: int) -> None:
    """A missing content (allowed only for an assistant message with calls), or a list of
    parts: not empty, images only from the user."""
    content = message.content
    if content is None:
        if message.role == "assistant" and message.tool_calls:
            return
        raise InvalidRequestError(f"$.messages[{index}].content: required field is missing")
    if not content:
        raise InvalidRequestError(f"$.messages[{index}].content: an empty list of parts; send at least one")
    for part_index, part in enumerate(content):
        if type(part) is ImagePart:
            where = f"$.messages[{index}].content[{part_index}]"
            if message.role != "user":
                raise InvalidRequestError(f"{where}: image parts are allowed in user messages only")
            check_image_url(part.image_url.url, f"{where}.image_url.url")


def check_image_url(url: str, where: str) -> None:
    """A base64 `data:` URL of a PNG, JPEG, GIF or WebP image of at most `MAX_IMAGE_BYTES`,
    or an `https://` URL (the gateway never fetches it; the provider does)."""
    if url.startswith("https://"):
        if len(url) == len("https://") or url[8] in "/?#":
            raise InvalidRequestError(f"{where}: an https URL needs a host")
        return
    prefix = IMAGE_DATA_URL.match(url)
    if prefix is None:
        raise InvalidRequestError(f"{where}: send a data:image/(png|jpeg|gif|webp);base64,… URL or an https:// URL")
    start = prefix.end()
    encoded = len(url) - start
    if encoded // 4 * 3 > MAX_IMAGE_BYTES + 2:  # refused before decoding anything
        raise InvalidRequestError(f"{where}: the image is over {MAX_IMAGE_BYTES} bytes")
    if encoded % 4 or BASE64.fullmatch(url, start) is None:  # checked in place: no copy, nothing decoded
        raise InvalidRequestError(f"{where}: the data URL's base64 does not decode")
    size = encoded // 4 * 3 - (url.endswith("==") + url.endswith("="))
    if size == 0:
        raise InvalidRequestError(f"{where}: the data URL holds no image")
    if size > MAX_IMAGE_BYTES:
        raise InvalidRequestError(f"{where}: the image is over {MAX_IMAGE_BYTES} bytes")


def check_tool_turn(message: ChatMessage, index: int, call_ids: set[str]) -> None:
    """Calls come from the assistant, with ids not used before; a `tool` message answers
    one of them (its `tool_call_id`)."""
    where = f"$.messages[{index}]"
    if message.tool_calls is not None:
        if message.role != "assistant":
            raise InvalidRequestError(f"{where}.tool_calls: only assistant messages carry tool calls")
        for call_index, call in enumerate(message.tool_calls):
            if not call.id or call.id in call_ids:
                problem = "is empty" if not call.id else f"{call.id!r} is used by an earlier call"
                raise InvalidRequestError(f"{where}.tool_calls[{call_index}].id: {problem}")
            call_ids.add(call.id)
    if message.role != "tool":
        if message.tool_call_id is not None:
            raise InvalidRequestError(f"{where}.tool_call_id: only tool messages carry one")
        return
    if message.tool_call_id is None:
        raise InvalidRequestError(f"{where}.tool_call_id: required for role 'tool'")
    if message.tool_call_id not in call_ids:
        raise InvalidRequestError(
            f"{where}.tool_call_id: {message.tool_call_id!r} answers no earlier assistant tool call"
        )


def check_tools(tools: Sequence[Tool] | None, tool_choice: object) -> None:
    """Each tool's `parameters` an object schema and its name unique; `tool_choice` only
    with `tools`, and naming one of them."""
    if tools is None:
        raise InvalidRequestError("$.tool_choice: given without tools; send tools too, or omit it")
    if not tools:
        raise InvalidRequestError("$.tools: an empty list; send at least one tool, or omit it")
    names: set[str] = set()
    for index, tool in enumerate(tools):
        function = tool.function
        if function.name in names:
            raise InvalidRequestError(f"$.tools[{index}].function.name: {function.name!r} is defined twice")
        names.add(function.name)
        parameters = function.parameters
        if parameters is not None and parameters.get("type") != "object":
            raise InvalidRequestError(
                f'$.tools[{index}].function.parameters.type: must be "object" (a JSON Schema object)'
            )
    if type(tool_choice) is NamedToolChoice and tool_choice.function.name not in names:
        raise InvalidRequestError(
            f"$.tool_choice.function.name: {tool_choice.function.name!r} is not one of the tools "
            f"({', '.join(sorted(names)) or 'none given'})"
        )


def check_response_format(response_format: ResponseFormat) -> None:
    """`json_schema` needs `json_schema` with a `name` and a `schema` object."""
    if response_format.type != "json_schema":
        return
    json_schema = response_format.json_schema
    if json_schema is None:
        raise InvalidRequestError("$.response_format.json_schema: required for type 'json_schema'")
    if SCHEMA_NAME.fullmatch(json_schema.name) is None:
        raise InvalidRequestError("$.response_format.json_schema.name: 1 to 64 letters, digits, underscores or dashes")
    if json_schema.schema is None:
        raise InvalidRequestError("$.response_format.json_schema.schema: required field is missing")
