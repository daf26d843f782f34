"""Server-Sent Events framing, sans-I/O: values in, bytes out (and, for the adapters
reading an upstream's stream, the bench client and the tests, bytes in, events out).

Framing follows the WHATWG HTML standard, section 9.2 "Server-sent events":
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
Lines end with LF; a blank line ends an event. A value holding a newline is sent as
several `data:` lines, so no raw CR or LF ever reaches a field.
"""

from __future__ import annotations

import re

import msgspec

DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b": keep-alive\n\n"

_NEWLINE = re.compile(r"\r\n|\r|\n")


def message_frame(event_id: int, data_json: bytes) -> bytes:
    """The hot-path frame: `id`, `event: message` and one `data` line of JSON.

    JSON from msgspec never holds a raw CR or LF (they are escaped), so it is one line.
    """
    return b"id: %d\nevent: message\ndata: %b\n\n" % (event_id, data_json)


def event_frame(event_id: int, event: bytes, data_json: bytes) -> bytes:
    """`message_frame` with another event type (`reasoning`, `tool_call`, `error`)."""
    return b"id: %d\nevent: %b\ndata: %b\n\n" % (event_id, event, data_json)


def data_frame(data_json: bytes) -> bytes:
    """A frame of one `data` line only (the OpenAI dialect's chunks)."""
    return b"data: %b\n\n" % data_json


def numbered(frames: bytes, last_id: int) -> tuple[bytes, int]:
    """`frames` (each ending in a blank line, none holding one) with an `id:` line each,
    numbered on from `last_id`; and the last id given (for a resumable stream's frames)."""
    out = []
    for frame in frames.split(b"\n\n")[:-1]:
        last_id += 1
        out.append(b"id: %d\n%b\n\n" % (last_id, frame))
    return b"".join(out), last_id


def encode_event(
    data: str | None = None,
    *,
    event: str | None = None,
    event_id: str | int | None = None,
    retry_ms: int | None = None,
) -> bytes:
    """Encode one event. `data` may hold any newlines: each line becomes a `data:` line."""
    parts: list[str] = []
    if event_id is not None:
        parts.append(f"id: {_single_line('id', str(event_id))}\n")
    if event is not None:
        parts.append(f"event: {_single_line('event', event)}\n")
    if retry_ms is not None:
        if retry_ms < 0:
            raise ValueError("retry must be a non-negative number of milliseconds")
        parts.append(f"retry: {int(retry_ms)}\n")
    if data is not None:
        parts.extend(f"data: {line}\n" for line in _NEWLINE.split(data))
    parts.append("\n")
    return "".join(parts).encode()


def encode_comment(text: str) -> bytes:
    """A comment, ignored by clients; one `:` line per line of `text`."""
    return ("".join(f": {line}\n" for line in _NEWLINE.split(text)) + "\n").encode()


def _single_line(field: str, value: str) -> str:
    if "\r" in value or "\n" in value or (field == "id" and "\0" in value):
        raise ValueError(f"SSE field {field!r} cannot hold CR, LF (or NUL in an id)")
    return value


class Event(msgspec.Struct, frozen=True, gc=False):
    """One event (`gc=False`: it holds only strings and a number, so never a cycle, and one
    is made per upstream event without the collector tracking it)."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class Comment(msgspec.Struct, frozen=True, gc=False):
    text: str


_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"

#: The longest line `Decoder` accepts (bytes, without its line end): a line that never
#: ends must not grow the buffer without bound.
MAX_LINE_BYTES = 1024 * 1024


class LineTooLongError(ValueError):
    """A line longer than `MAX_LINE_BYTES`: the stream is broken (or hostile)."""


class Decoder:
    """An incremental WHATWG event-stream parser: `feed(bytes)` returns what completed.

    It splits bytes, not text, and decodes each value once it is whole, so a UTF-8
    character split across two reads stays intact; lines end only at CRLF, CR or LF
    (never at U+2028 or U+0085, unlike `str.splitlines`). Used by the tests, the bench
    client and the adapters that read an upstream's SSE bytes. A line longer than
    `MAX_LINE_BYTES` raises `LineTooLongError` (the buffer never holds more than that
    plus one fed chunk).
    """

    __slots__ = ("_buffer", "_started", "_pending_cr", "_data", "_event", "_last_id", "_retry")

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False
        self._pending_cr = False
        self._data: list[bytes] = []
        self._event = b""
        self._last_id = ""
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event | Comment]:
        if self._pending_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]  # the LF of a CRLF split across two reads
        self._pending_cr = False
        buffer = self._buffer + chunk if self._buffer else chunk
        if not self._started:
            if len(buffer) < 3 and _BOM.startswith(buffer):
                self._buffer = buffer
                return []
            self._started = True
            buffer = buffer.removeprefix(_BOM)
        lines = _LINE_END.split(buffer) if b"\r" in buffer else buffer.split(b"\n")
        self._buffer = lines.pop()
        if len(buffer) > MAX_LINE_BYTES:
            _refuse_long_lines([*lines, self._buffer])
        self._pending_cr = buffer.endswith(b"\r")
        out: list[Event | Comment] = []
        data = self._data
        for line in lines:
            if line[:6] == b"data: ":  # the usual line, taken here without a call
                data.append(line[6:])
            elif line or not data:
                self._line(line, out)
                data = self._data
            else:  # the blank line ending an event with data: the usual end, here without a call
                text = (data[0] if len(data) == 1 else b"\n".join(data)).decode("utf-8", "replace")
                event = self._event.decode("utf-8", "replace") if self._event else "message"
                out.append(Event(text, event, self._last_id, self._retry))
                data = self._data = []
                self._event, self._retry = b"", None
        return out

    def _line(self, line: bytes, out: list[Event | Comment]) -> None:
        if not line:
            if self._data:
                data = b"\n".join(self._data).decode("utf-8", "replace")
                event = self._event.decode("utf-8", "replace") if self._event else "message"
                out.append(Event(data, event, self._last_id, self._retry))
            self._data, self._event, self._retry = [], b"", None
            return
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if not field:
            out.append(Comment(value.decode("utf-8", "replace")))
        elif field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value
        elif field == b"id" and b"\0" not in value:
            self._last_id = value.decode("utf-8", "replace")
        elif field == b"retry" and value.isdigit():
            self._retry = int(value)


def _refuse_long_lines(lines: list[bytes]) -> None:
    if any(len(line) > MAX_LINE_BYTES for line in lines):
        raise LineTooLongError(f"an event-stream line is longer than {MAX_LINE_BYTES} bytes")
