"""`pipeline` up close: the garbage a request leaves, the client watcher, the keep-alive timer, the stream pump."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from streamgate import sse
from streamgate.chat_types import FinishReason, StreamChunk
from streamgate.dialects.native import NativeFrames
from streamgate.pipeline import SSE_HEAD, ClientWatch, Heartbeats, Resumed, StreamProgress, stream_chunks


def test_a_request_s_client_watch_leaves_no_reference_cycle() -> None:
    """The watcher ends cancelled; its traceback must not hold the `ClientWatch` (nor the
    server's request objects), or every request leaves a cycle for the full collections."""

    class Cycle:  # stands for the server's per-request object behind `receive` and `send`
        async def receive(self) -> dict[str, Any]:
            await asyncio.Event().wait()
            return {}

        async def send(self, message: dict[str, Any]) -> None:
            pass

    async def request() -> None:
        cycle = Cycle()
        async with ClientWatch(cycle.receive, cycle.send, StreamProgress(), 15.0):
            await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.get_running_loop().create_task(request())
        await asyncio.sleep(0)  # the watcher's cancellation is delivered
        await asyncio.sleep(0)

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        asyncio.run(main())
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if isinstance(o, (ClientWatch, Cycle, StreamProgress))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []


def test_a_disconnect_cancels_the_work_and_the_block_ends_quietly() -> None:
    """`receive()` is stepped by hand, no task: through a bare `yield` and a message that
    is not a disconnect on to the disconnect, which cancels the work at once."""
    left = asyncio.Event()
    received: list[str] = []

    async def receive() -> dict[str, Any]:
        if not received:
            await asyncio.sleep(0)  # a bare yield
            received.append("http.request")
            return {"type": "http.request", "body": b"", "more_body": False}
        await left.wait()  # an asyncio future
        received.append("http.disconnect")
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def main() -> tuple[StreamProgress, bool]:
        progress = StreamProgress()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, left.set)
        finished = False
        async with ClientWatch(receive, send, progress, 15.0):
            await asyncio.sleep(10)
            finished = True
        return progress, finished

    started = time.monotonic()
    progress, finished = asyncio.run(main())
    assert time.monotonic() - started < 5
    assert received == ["http.request", "http.disconnect"]
    assert progress.client_gone and not finished


def test_leaving_the_block_stops_the_receive_under_way() -> None:
    """The `receive()` still waiting when the work ends is closed (its `finally` runs) and
    the loop-wide keep-alive timer is gone with the last stream."""
    closed: list[bool] = []

    async def receive() -> dict[str, Any]:
        try:
            await asyncio.Event().wait()
        finally:
            closed.append(True)
        return {}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def main() -> None:
        async with ClientWatch(receive, send, StreamProgress(), 15.0):
            assert Heartbeats.running
            await asyncio.sleep(0.01)
        assert closed == [True]
        assert not Heartbeats.running

    asyncio.run(main())


def test_keep_alives_share_one_timer_and_follow_each_stream_s_silence() -> None:
    """Two silent streams and a busy one under one `Heartbeats`: keep-alives every
    `heartbeat_s` (at most `heartbeat_s / 16` late) to the silent ones, none to the busy one."""
    heartbeat_s = 0.1

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async def stream(name: str, busy: bool, sent: dict[str, list[float]]) -> None:
        async def send(message: dict[str, Any]) -> None:
            assert message["body"] == sse.KEEP_ALIVE
            sent[name].append(time.monotonic())

        progress = StreamProgress()
        progress.streaming = True
        async with ClientWatch(receive, send, progress, heartbeat_s):
            ends = time.monotonic() + 0.55
            while time.monotonic() < ends:
                await asyncio.sleep(0.02)
                if busy:
                    progress.last_sent_at = time.monotonic()

    async def main() -> dict[str, list[float]]:
        sent: dict[str, list[float]] = {"a": [], "b": [], "busy": []}
        await asyncio.gather(stream("a", False, sent), stream("b", False, sent), stream("busy", True, sent))
        assert not Heartbeats.running
        return sent

    sent = asyncio.run(main())
    assert sent["busy"] == []
    for name in ("a", "b"):
        assert 4 <= len(sent[name]) <= 5, sent  # at 0.1, 0.2, … 0.5 s; a loaded machine may miss the last
        gaps = [later - earlier for earlier, later in zip(sent[name], sent[name][1:])]
        assert all(heartbeat_s * 0.9 <= gap < heartbeat_s * 1.5 for gap in gaps), gaps


def test_stream_chunks_joins_ready_frames_and_sends_them_before_a_wait() -> None:
    """The head first; chunks from bytes already read join one `send`; a chunk the
    upstream must be waited for sends the pending frames first, once; then the rest and
    the end in the last `send`."""
    events: list[str] = []
    sent: list[dict[str, Any]] = []
    upstream = asyncio.Event()

    async def chunks() -> AsyncGenerator[StreamChunk, None]:
        yield StreamChunk(content="ready", finish_reason=None, model="m", provider="p")
        yield StreamChunk(content="also", finish_reason=None, model="m", provider="p")
        await upstream.wait()
        events.append("waited")
        yield StreamChunk(content="late", finish_reason=None, model="m", provider="p")
        yield StreamChunk(content="", finish_reason=FinishReason.STOP, model="m", provider="p")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("more_body"):
            events.append("sent")
            asyncio.get_running_loop().call_soon(upstream.set)

    progress = StreamProgress()
    pump = stream_chunks(chunks(), NativeFrames("m", "p"), send, progress, SSE_HEAD)  # type: ignore[arg-type]
    asyncio.run(asyncio.wait_for(pump, 5))  # a pump that waits before sending would wait forever
    assert events == ["sent", "waited"]
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body", "http.response.body"]
    assert sent[0]["status"] == progress.status == 200
    first, last = sent[1]["body"], sent[2]["body"]
    assert first.count(b"event: message") == 2 and b'"ready"' in first and b'"also"' in first
    assert b'"late"' in last and b'"stop"' in last and last.endswith(NativeFrames("m", "p").done())
    assert sent[2]["more_body"] is False and progress.frames_sent == 4 and not progress.streaming


@pytest.mark.parametrize("where", ["waiting", "flushing"])
def test_stream_chunks_passes_a_cancellation_on_to_the_upstream(where: str) -> None:
    """The client gone while the pump waits for the upstream, or while it sends the frames
    pending before that wait: the chunk generator sees the cancellation (its upstream is
    let go), and so does the caller."""
    seen: list[str] = []
    reached = asyncio.Event()

    async def chunks() -> AsyncGenerator[StreamChunk, None]:
        yield StreamChunk(content="ready", finish_reason=None, model="m", provider="p")
        try:
            if where == "waiting":
                reached.set()
            await asyncio.Event().wait()
            yield StreamChunk(content="never", finish_reason=None, model="m", provider="p")
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def send(message: dict[str, Any]) -> None:
        if where == "flushing" and message.get("more_body"):
            reached.set()
            await asyncio.Event().wait()

    async def main() -> None:
        progress = StreamProgress()
        progress.client_gone = True  # the cancellation is the client leaving: it ends the pump
        pump = stream_chunks(chunks(), NativeFrames("m", "p"), send, progress)  # type: ignore[arg-type]
        task = asyncio.get_running_loop().create_task(pump)
        await reached.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 5))
    assert seen == ["cancelled"]


def test_resumed_awaits_the_rest_of_a_step_started_by_hand() -> None:
    """`Resumed` hands on what the step suspended on, then its result; a cancellation and
    a close reach the step, as `yield from` would pass them on."""
    seen: list[str] = []
    steps: list[Any] = []  # held here: a step let go would be closed by the collector anyway

    async def inner(future: asyncio.Future[str]) -> str:
        try:
            return await future
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            seen.append("left")

    async def resumed(future: asyncio.Future[str]) -> str:
        step = inner(future).__await__()
        steps.append(step)
        suspended_on = step.send(None)
        assert suspended_on is future
        return await Resumed(step, suspended_on)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        loop.call_soon(future.set_result, "value")
        assert await resumed(future) == "value" and seen == ["left"]

        task = loop.create_task(resumed(loop.create_future()))
        await asyncio.sleep(0)  # the task runs to its wait (a step of its own: not a wait for a condition)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == ["left", "cancelled", "left"]

        closed = resumed(loop.create_future())
        closed.send(None)  # suspended on the future
        closed.close()
        assert seen == ["left", "cancelled", "left", "left"]

    asyncio.run(asyncio.wait_for(main(), 5))
