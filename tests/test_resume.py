"""Resumable streams with the in-process store, over real HTTP: resume after any frame
(byte for byte, exactly once), the generation outliving its client, several readers,
heartbeats, DELETE, 404s, expiry, the memory bound, the `/v1` twin read by the official
openai SDK, and auth."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai._streaming import SSEDecoder
from openai.types.chat import ChatCompletionChunk
from processes import gateways
from resumable import resume_from, start
from streamgate import resume, sse
from streamgate.app import create_app
from streamgate.chat_types import FinishReason, ReasoningChunk, SignatureChunk, StreamChunk, ToolCallChunk
from streamgate.dialects.anthropic_messages import MessagesFrames, NumberedMessagesFrames
from streamgate.dialects.native import NativeFrames
from streamgate.dialects.openai_chat import NumberedOpenAIFrames, OpenAIFrames
from streamgate.errors import UpstreamError
from streamgate.providers.echo import EchoAdapter
from streamgate.resume import NumberedFrames
from streamgate.stream_store import Batch
from support import serve, settings

WORDS = " ".join(f"w{i}" for i in range(12))


def body(text: str = WORDS, **extra: Any) -> dict[str, Any]:
    return {"provider": "echo", "resumable": True, "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app(settings(sse_heartbeat_s=30.0), adapters={"echo": EchoAdapter(15)})


@pytest.fixture(scope="module")
def url(app: Any) -> Iterator[str]:
    with serve(app) as base_url:
        yield base_url


def after_frame(raw: bytes, frame_id: int) -> bytes:
    """What `raw` carried after the end of frame `frame_id` (0: all of it)."""
    if frame_id == 0:
        return raw
    start = (b"\n\n" + raw).index(b"\n\nid: %d\n" % frame_id)
    return raw[raw.index(b"\n\n", start) + 2 :]


def events(raw: bytes) -> list[sse.Event]:
    return [e for e in sse.Decoder().feed(raw) if isinstance(e, sse.Event)]


def text_of(raw: bytes) -> str:
    return "".join(json.loads(e.data)["content"] for e in events(raw) if e.event == "message" and e.data != "[DONE]")


def test_a_resume_after_any_frame_is_what_the_first_connection_carried_after_it(url: str) -> None:
    response = httpx.post(url + "/api/v1/chat/stream", json=body(), timeout=10)
    first = response.content
    stream_id = response.headers["x-stream-id"]
    assert len(stream_id) >= 22 and response.headers["content-type"] == "text/event-stream; charset=utf-8"
    last = int(events(first)[-2].id)
    assert last == 13 and text_of(first) == WORDS
    for after in range(last + 2):
        resumed = resume_from(url, stream_id, after)
        assert resumed.status_code == 200
        assert resumed.content == after_frame(first, min(after, last)), after
    assert resume_from(url, stream_id).content == first
    query = httpx.get(url + f"/api/v1/chat/stream/{stream_id}?last_event_id=5", timeout=10)
    assert query.content == after_frame(first, 5)


def test_the_generation_goes_on_after_its_client_leaves(url: str) -> None:
    stream_id, received = start(url, 2, body())
    last_seen = int(events(received)[-1].id)
    resumed = resume_from(url, stream_id, last_seen)  # joins while live, follows to the end
    assert text_of(received) + text_of(resumed.content) == WORDS
    ids = [int(e.id) for e in events(resumed.content)[:-1]]
    assert ids == list(range(last_seen + 1, last_seen + 1 + len(ids)))  # each frame exactly once
    assert resumed.content.endswith(
        b'"finish_reason":"stop","model":"echo","provider":"echo","usage":'
        b'{"prompt_tokens":12,"completion_tokens":12,"total_tokens":24}}\n\ndata: [DONE]\n\n'
    )


def test_several_readers_follow_one_live_stream(url: str) -> None:
    stream_id, _ = start(url, 1, body())
    results: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: results.append(resume_from(url, stream_id, 0).content)) for _ in range(3)
    ]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(10)
    assert len(results) == 3 and results[0] == results[1] == results[2]
    assert text_of(results[0]) == WORDS


def test_an_idle_reader_gets_heartbeats() -> None:
    app = create_app(settings(sse_heartbeat_s=0.2), adapters={"echo": EchoAdapter(700)})
    with serve(app) as base_url:
        stream_id, _ = start(base_url, 1, body("slow words"))
        resumed = resume_from(base_url, stream_id, 1)
    assert b": keep-alive\n\n" in resumed.content
    assert text_of(resumed.content) == "words"


def test_delete_stops_the_generation_and_ends_every_reader_with_cancelled(url: str) -> None:
    payload = body(" ".join(f"x{i}" for i in range(200)))
    with httpx.stream("POST", url + "/api/v1/chat/stream", json=payload, timeout=10) as first:
        stream_id = first.headers["x-stream-id"]
        chunks = first.iter_bytes()
        received = next(chunks)
        reader: list[bytes] = []
        thread = threading.Thread(target=lambda: reader.append(resume_from(url, stream_id, 0).content))
        thread.start()
        time.sleep(0.05)
        deleted = httpx.delete(url + f"/api/v1/chat/stream/{stream_id}", timeout=10)
        received += b"".join(chunks)
        thread.join(10)
    assert deleted.status_code == 204 and deleted.content == b""
    for raw in (received, reader[0]):
        end = events(raw)[-3:]
        assert json.loads(end[0].data)["finish_reason"] == "error"
        assert end[1].event == "error" and json.loads(end[1].data) == {
            "error": {"type": "cancelled", "message": "the stream was stopped by DELETE"}
        }
        assert end[2].data == "[DONE]"
        assert len(text_of(raw)) < len(payload["messages"][0]["content"])  # stopped, not run to the end
    assert reader[0] == received
    assert httpx.delete(url + f"/api/v1/chat/stream/{stream_id}", timeout=10).status_code == 204  # already ended


def test_an_unknown_stream_is_404_stream_not_found_in_each_dialect(url: str) -> None:
    for method in ("GET", "DELETE"):
        native = httpx.request(method, url + "/api/v1/chat/stream/AAAAAAAAAAAAAAAAAAAAAA", timeout=10)
        assert native.status_code == 404
        assert native.json()["error"]["type"] == "stream_not_found"
        v1 = httpx.request(method, url + "/v1/chat/completions/AAAAAAAAAAAAAAAAAAAAAA/stream", timeout=10)
        assert v1.status_code == 404
        assert v1.json()["error"]["code"] == "stream_not_found"
        assert v1.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(url + "/api/v1/chat/stream/no.such$id", timeout=10).status_code == 404


def test_a_bad_last_event_id_is_422(url: str) -> None:
    stream_id, _ = start(url, 1, body())
    response = resume_from(url, stream_id, None, headers={"last-event-id": "-1"})
    assert response.status_code == 422
    assert response.json()["error"] == {
        "type": "invalid_request",
        "message": "Last-Event-ID: must be a frame id, a non-negative integer",
    }


def test_the_stream_expires_resume_ttl_after_its_end() -> None:
    app = create_app(settings(resume_ttl_s=1.0), adapters={"echo": EchoAdapter(0)})
    with serve(app) as base_url:
        response = httpx.post(base_url + "/api/v1/chat/stream", json=body("a b"), timeout=10)
        stream_id = response.headers["x-stream-id"]
        assert resume_from(base_url, stream_id).content == response.content
        time.sleep(1.3)
        assert resume_from(base_url, stream_id).status_code == 404
        assert app.state.streams.store.logs == {}


def test_a_stream_past_the_memory_bound_ends_with_an_error(app: Any, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resume, "MAX_LOG_BYTES", 1000)
    response = httpx.post(url + "/api/v1/chat/stream", json=body(" ".join(["word"] * 100)), timeout=10)
    end = events(response.content)[-3:]
    assert json.loads(end[0].data)["finish_reason"] == "error"
    assert json.loads(end[1].data)["error"]["message"] == (
        "the answer passed 1000 bytes of frames, the most a resumable stream keeps"
    )
    kept = app.state.streams.store.logs[response.headers["x-stream-id"]].batches
    assert sum(len(batch.data) for batch in kept) < 1000 + 2 * 200  # the bound, one batch and the end
    assert resume_from(url, response.headers["x-stream-id"]).content == response.content


def test_a_plain_stream_is_not_resumable(url: str) -> None:
    response = httpx.post(url + "/api/v1/chat/stream", json=body(resumable=False), timeout=10)
    assert "x-stream-id" not in response.headers and text_of(response.content) == WORDS
    answer = httpx.post(url + "/api/v1/chat", json=body("a b"), timeout=10)
    assert answer.status_code == 200 and answer.json()["content"] == "a b"


def test_v1_resumable_frames_carry_ids_and_the_sdk_reads_them_and_the_resume(url: str) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    raw = client.chat.completions.with_raw_response.create(
        model="echo/echo",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"resumable": True},
    )
    stream_id = raw.headers["x-stream-id"]
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 6
    first = resume_from(url, stream_id, 0, path="/v1/chat/completions/{}/stream").content
    assert [int(e.id) for e in events(first)[:-1]] == [1, 2, 3, 4, 5]
    resumed = resume_from(url, stream_id, 2, path="/v1/chat/completions/{}/stream")
    assert resumed.content == after_frame(first, 2)
    sdk_events = list(SSEDecoder().iter_bytes(iter([resumed.content])))
    assert [e.id for e in sdk_events] == ["3", "4", "5", "5"]  # the SDK keeps the last id for [DONE]
    parsed = [ChatCompletionChunk.model_validate(e.json()) for e in sdk_events[:-1]]
    assert parsed[0].choices[0].delta.content == "three" and parsed[1].choices[0].finish_reason == "stop"
    assert sdk_events[-1].data == "[DONE]"
    assert httpx.delete(url + f"/v1/chat/completions/{stream_id}/stream", timeout=10).status_code == 204


def test_the_gateway_key_guards_resume_and_cancel() -> None:
    app = create_app(settings(gateway_api_key="k"), adapters={"echo": EchoAdapter(0)})
    with serve(app) as base_url:
        auth = {"authorization": "Bearer k"}
        stream_id, _ = start(base_url, 100, body("a"), headers=auth)
        assert resume_from(base_url, stream_id).status_code == 401
        assert httpx.delete(base_url + f"/api/v1/chat/stream/{stream_id}").status_code == 401
        assert httpx.get(base_url + f"/v1/chat/completions/{stream_id}/stream").status_code == 401
        assert resume_from(base_url, stream_id, headers=auth).status_code == 200
        assert httpx.delete(base_url + f"/api/v1/chat/stream/{stream_id}", headers=auth).status_code == 204


def test_bytes_after_cuts_a_batch_at_a_frame_end() -> None:
    data = b"id: 3\nevent: message\ndata: {}\n\nid: 4\nevent: error\ndata: {}\n\ndata: [DONE]\n\n"
    batch = Batch(4, data, True, True)
    assert resume.bytes_after(batch, 2, 0) == data
    assert resume.bytes_after(batch, 2, 2) == data
    assert resume.bytes_after(batch, 2, 3) == b"id: 4\nevent: error\ndata: {}\n\ndata: [DONE]\n\n"
    assert resume.bytes_after(batch, 2, 4) == b"data: [DONE]\n\n"
    assert resume.bytes_after(batch, 2, 5) == b""


def test_at_shutdown_a_detached_producer_gets_the_grace_then_ends_with_shutting_down() -> None:
    app = create_app(settings(shutdown_grace_s=0.3), adapters={"echo": EchoAdapter(100)})
    with serve(app) as base_url:
        short_id, _ = start(base_url, 1, body("a b"))
        long_id, _ = start(base_url, 1, body(" ".join(["word"] * 50)))
    logs = app.state.streams.store.logs
    assert text_of(b"".join(batch.data for batch in logs[short_id].batches)) == "a b"  # finished within the grace
    cut = b"".join(batch.data for batch in logs[long_id].batches)
    end = events(cut)[-3:]
    assert json.loads(end[0].data)["finish_reason"] == "error"
    assert json.loads(end[1].data) == {"error": {"type": "shutting_down", "message": "the server is shutting down"}}
    assert end[2].data == "[DONE]" and app.state.streams.producers == set()


def test_sigterm_ends_an_attached_resumable_stream_in_words_after_the_grace(tmp_path: Any) -> None:
    with gateways(tmp_path, 1, SHUTDOWN_GRACE_S="1", ECHO_DELAY_MS="200") as [(process, base_url)]:
        with httpx.stream(
            "POST", base_url + "/api/v1/chat/stream", json=body(" ".join(["word"] * 50)), timeout=20
        ) as response:
            chunks = response.iter_bytes()
            received = next(chunks)
            process.send_signal(signal.SIGTERM)
            received += b"".join(chunks)
        end = events(received)[-3:]
        assert json.loads(end[0].data)["finish_reason"] == "error"
        assert json.loads(end[1].data)["error"]["type"] == "shutting_down"
        assert end[2].data == "[DONE]"
        assert process.wait(20) in (0, -signal.SIGTERM)


def test_each_dialect_s_frames_are_restored_from_their_meta_for_an_error_end() -> None:
    lost = UpstreamError("the stream's generator was lost")
    for frames in (
        NativeFrames("echo", "echo"),
        NumberedOpenAIFrames(OpenAIFrames("chatcmpl-1", 7, "echo/echo", True)),
        NumberedMessagesFrames(MessagesFrames("msg_1", "echo/echo")),
    ):
        frames.content(StreamChunk("Hi", None, "echo", "echo"))
        restored = type(frames).restore(json.loads(json.dumps(frames.meta())))
        restored.last_id = frames.last_id
        assert restored.failure(lost, False, None) == frames.failure(lost, False, None)
    openai_frames = NumberedOpenAIFrames(OpenAIFrames("chatcmpl-1", 7, "echo/echo", True))
    final = openai_frames.final(StreamChunk("", FinishReason.STOP, "echo", "echo"))
    assert [line for line in final.split(b"\n") if line.startswith(b"id: ")] == [b"id: 1", b"id: 2"]
    assert openai_frames.failure(lost, True, None).startswith(b'id: 3\ndata: {"error":')


@pytest.mark.parametrize(
    "make",
    [
        lambda: OpenAIFrames("chatcmpl-1", 7, "echo/echo", True),
        lambda: MessagesFrames("msg_1", "echo/echo"),
    ],
)
def test_numbered_frames_are_the_dialect_s_frames_each_with_an_id_line(make: Callable[[], Any]) -> None:
    plain, numbered = make(), NumberedFrames(make())
    steps: list[Callable[[Any], bytes]] = [
        lambda frames: frames.content(StreamChunk("Hi", None, "echo", "echo")),
        lambda frames: frames.reasoning(ReasoningChunk("hm", "echo", "echo")),
        lambda frames: frames.tool_call(ToolCallChunk(0, "call_1", "get", '{"a":')),
        lambda frames: frames.signature(SignatureChunk("sig")),
        lambda frames: frames.final(StreamChunk("", FinishReason.STOP, "echo", "echo")),
        lambda frames: frames.failure(UpstreamError("late"), True, None),
    ]
    last_id = 0
    for step in steps:
        assert numbered.final_sent == plain.final_sent
        expected, last_id = sse.numbered(step(plain), last_id)
        assert step(numbered) == expected
        assert numbered.last_id == last_id
    assert numbered.final_sent and numbered.model == "echo/echo"
    assert numbered.done() == plain.done()


def test_a_browser_eventsource_on_the_resume_url_reads_each_frame_once_and_reconnects_with_last_event_id(
    url: str,
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.skip("Chromium is not installed")
    stream_id, _ = start(url, 2, body())
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        resumes: list[str | None] = []
        page.on(
            "request",
            lambda request: (
                resumes.append(request.all_headers().get("last-event-id")) if stream_id in request.url else None
            ),
        )
        page.goto(url + "/api/v1/chat/stream/health")
        seen = page.evaluate(
            """(path) => new Promise((resolve) => {
            const seen = [];
            const source = new EventSource(path);
            source.onmessage = (event) => {
                seen.push([event.lastEventId, event.data]);
                if (seen.filter(([, data]) => data === "[DONE]").length === 2) { source.close(); resolve(seen); }
            };
        })""",
            f"/api/v1/chat/stream/{stream_id}",
        )
        browser.close()
    texts = [json.loads(data)["content"] for _, data in seen if data != "[DONE]"]
    assert "".join(texts) == WORDS  # every frame once: the reconnect asked for what came after the last id
    assert [event_id for event_id, data in seen if data != "[DONE]"] == [str(i) for i in range(1, 14)]
    assert [data for _, data in seen][-2:] == ["[DONE]", "[DONE]"] and seen[-1][0] == "13"
    assert resumes == [None, "13"]
