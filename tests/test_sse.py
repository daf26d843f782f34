"""sse.py: what the encoder emits, decoded by the WHATWG decoder fed one byte at a time."""

from __future__ import annotations

import msgspec
import pytest
from streamgate import sse
from streamgate.sse import Comment, Decoder, Event


def decode_bytewise(raw: bytes) -> list[Event | Comment]:
    decoder = Decoder()
    out: list[Event | Comment] = []
    for index in range(len(raw)):
        out += decoder.feed(raw[index : index + 1])
    return out


TEXTS = [
    "plain",
    "two\nlines",
    "carriage\rreturn",
    "crlf\r\nline",
    "trailing newline\n",
    "\n\nleading blank lines",
    "line separator \u2028 and next line \u0085 stay inside one line",
    "emoji 🎉🚀 and CJK 日本語のテキスト",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_encode_event_round_trips_any_text_byte_by_byte(text: str) -> None:
    raw = sse.encode_event(text, event="message", event_id=7)
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    assert decode_bytewise(raw) == [Event(expected, "message", "7")]
    assert b"\r" not in raw


def test_multi_line_data_becomes_several_data_lines() -> None:
    assert sse.encode_event("a\nb\r\nc", event="x") == b"event: x\ndata: a\ndata: b\ndata: c\n\n"


def test_u2028_is_not_a_line_break() -> None:
    raw = sse.encode_event("a\u2028b")
    assert raw == "data: a\u2028b\n\n".encode()


@pytest.mark.parametrize("field", ["event", "event_id"])
def test_fields_other_than_data_refuse_newlines(field: str) -> None:
    with pytest.raises(ValueError):
        sse.encode_event("x", **{field: "bad\nvalue"})


def test_retry_and_comment() -> None:
    assert sse.encode_event("x", retry_ms=1500) == b"retry: 1500\ndata: x\n\n"
    assert sse.encode_comment("keep-alive") == sse.KEEP_ALIVE
    assert decode_bytewise(sse.encode_comment("a\nb")) == [Comment("a"), Comment("b")]


def test_message_frame_matches_the_contract_shape() -> None:
    data = msgspec.json.encode({"content": "日本\n🎉"})
    raw = sse.message_frame(3, data)
    assert raw == b'id: 3\nevent: message\ndata: {"content":"\xe6\x97\xa5\xe6\x9c\xac\\n\xf0\x9f\x8e\x89"}\n\n'
    (event,) = decode_bytewise(raw)
    assert isinstance(event, Event)
    assert (event.id, event.event, msgspec.json.decode(event.data)) == ("3", "message", {"content": "日本\n🎉"})


def test_constant_frames() -> None:
    assert decode_bytewise(sse.DONE) == [Event("[DONE]")]
    assert decode_bytewise(sse.KEEP_ALIVE) == [Comment("keep-alive")]
    assert sse.data_frame(b"{}") == b"data: {}\n\n"


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_decoder_accepts_every_line_ending(newline: bytes) -> None:
    raw = newline.join([b"event: e", b"id: 9", b"data: one", b"data: two", b"", b": note", b"", b"data: 3", b"", b""])
    expected = [Event("one\ntwo", "e", "9"), Comment("note"), Event("3", "message", "9")]
    assert decode_bytewise(raw) == expected
    assert Decoder().feed(raw) == expected


def test_decoder_whatwg_details() -> None:
    raw = (
        b"\xef\xbb\xbfdata\n\n"  # a leading BOM is dropped; a field with no colon has an empty value
        b"data:no space\n\n"
        b"data:  two spaces\n\n"
        b"event: only-event\n\n"  # no data: nothing is dispatched
        b"id: a\x00b\ndata: x\n\n"  # an id with NUL is ignored
        b"retry: 12x\nunknown: field\ndata: y\n\n"
        b"data: incomplete"  # no blank line yet: not dispatched
    )
    assert decode_bytewise(raw) == [
        Event(""),
        Event("no space"),
        Event(" two spaces"),
        Event("x"),
        Event("y"),
    ]


def test_utf8_split_anywhere_stays_whole() -> None:
    text = "🎉日本語€"
    raw = sse.encode_event(text)
    for cut in range(len(raw)):
        decoder = Decoder()
        events = decoder.feed(raw[:cut]) + decoder.feed(raw[cut:])
        assert events == [Event(text)]


# --- the line limit ---------------------------------------------------------------------------


def test_a_line_of_the_limit_is_read() -> None:
    data = b"x" * (sse.MAX_LINE_BYTES - len(b"data: "))
    decoder = Decoder()
    assert decoder.feed(b"data: " + data[:100]) == []
    assert decoder.feed(data[100:] + b"\n\n") == [Event(data.decode())]


def test_a_line_that_never_ends_is_refused_once_past_the_limit() -> None:
    decoder = Decoder()
    piece = b"x" * 65536
    decoder.feed(b"data: ")
    fed = 6
    with pytest.raises(sse.LineTooLongError, match="longer than 1048576 bytes"):
        while True:
            decoder.feed(piece)
            fed += len(piece)
            assert fed <= sse.MAX_LINE_BYTES  # refused at the first feed past the limit
    assert fed + len(piece) > sse.MAX_LINE_BYTES


def test_a_whole_line_over_the_limit_in_one_chunk_is_refused() -> None:
    with pytest.raises(sse.LineTooLongError):
        Decoder().feed(b"data: ok\n" + b"data: " + b"x" * sse.MAX_LINE_BYTES + b"\n\n")
