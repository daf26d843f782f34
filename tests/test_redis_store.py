"""Resumable streams kept in a real Redis (`redis-server`, started here on a free loopback
port): resume on the same process and on another gateway process, two readers, DELETE
across processes, expiry, the producing process killed, Redis restarting mid-stream, and
an unreachable `REDIS_URL` at start-up."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from processes import KEYS, ROOT, RedisServer, free_port, gateways, running_redis
from resumable import resume_from, start
from streamgate import sse
from streamgate.app import create_app
from streamgate.providers.echo import EchoAdapter
from streamgate.stream_store import MAX_CONNECTIONS, BlockingReads
from support import serve, settings

HEARTBEAT_S = 1.0
TTL_S = 4.0

if shutil.which("redis-server") is None:
    pytest.skip("redis-server not installed", allow_module_level=True)


def body(text: str) -> dict[str, Any]:
    return {"provider": "echo", "resumable": True, "messages": [{"role": "user", "content": text}]}


WORDS = " ".join(f"w{i}" for i in range(10))


def events(raw: bytes) -> list[sse.Event]:
    return [e for e in sse.Decoder().feed(raw) if isinstance(e, sse.Event)]


def text_of(raw: bytes) -> str:
    return "".join(json.loads(e.data)["content"] for e in events(raw) if e.event == "message" and e.data != "[DONE]")


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def processes(shared_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Three gateway processes sharing Redis: A and B serve, C is there to be killed."""
    env = {
        "REDIS_URL": shared_redis.url,
        "ECHO_DELAY_MS": "40",
        "SSE_HEARTBEAT_S": str(HEARTBEAT_S),
        "RESUME_TTL_S": str(TTL_S),
    }
    with gateways(tmp_path_factory.mktemp("gateways"), 3, **env) as started:
        yield [url for _, url in started] + [started[2][0]]  # type: ignore[list-item]


def test_resume_on_the_same_process_reads_redis(shared_redis: RedisServer) -> None:
    app = create_app(
        settings(redis_url=shared_redis.url, sse_heartbeat_s=HEARTBEAT_S), adapters={"echo": EchoAdapter(5)}
    )
    with serve(app) as url:
        response = httpx.post(url + "/api/v1/chat/stream", json=body(WORDS), timeout=20)
        stream_id = response.headers["x-stream-id"]
        assert text_of(response.content) == WORDS
        for after in (0, 1, 5, 10, 11):
            resumed = resume_from(url, stream_id, after)
            start_at = (
                0 if after == 0 else response.content.index(b"\n\n", response.content.index(b"id: %d\n" % after)) + 2
            )
            assert resumed.content == response.content[start_at:], after
    client = redis.Redis.from_url(shared_redis.url)
    key = b"streamgate:stream:" + stream_id.encode()
    entries = client.xrange(key)
    assert json.loads(entries[0][1][b"m"]) == {"dialect": "native", "model": "echo", "provider": "echo"}
    assert b"".join(fields[b"d"] for _, fields in entries[1:]) == response.content
    assert [int(fields[b"l"]) for _, fields in entries[1:]][-1] == 11
    assert 0 < client.pttl(key) <= 600_000  # RESUME_TTL_S (600 s by default) after the end
    assert not client.exists(key + b":lease")


def test_a_stream_resumes_on_another_process(processes: list[Any]) -> None:
    a, b = processes[0], processes[1]
    stream_id, received = start(a, 2, body(WORDS))
    last_seen = int(events(received)[-1].id)
    resumed = resume_from(b, stream_id, last_seen)
    assert resumed.status_code == 200
    assert text_of(received) + text_of(resumed.content) == WORDS
    assert resume_from(b, stream_id).content == resume_from(a, stream_id).content
    assert resume_from(b, stream_id).content.startswith(received)


def test_two_readers_on_two_processes_follow_one_stream(processes: list[Any]) -> None:
    a, b = processes[0], processes[1]
    stream_id, _ = start(a, 1, body(WORDS))
    results: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda u=u: results.__setitem__(u, resume_from(u, stream_id).content)) for u in (a, b)
    ]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(20)
    assert results[a] == results[b] and text_of(results[a]) == WORDS


def test_delete_on_another_process_stops_the_generation(processes: list[Any]) -> None:
    a, b = processes[0], processes[1]
    text = " ".join(f"x{i}" for i in range(100))
    with httpx.stream("POST", a + "/api/v1/chat/stream", json=body(text), timeout=20) as first:
        stream_id = first.headers["x-stream-id"]
        chunks = first.iter_bytes()
        received = next(chunks)
        reader: list[bytes] = []
        thread = threading.Thread(target=lambda: reader.append(resume_from(b, stream_id).content))
        thread.start()
        deleted = httpx.delete(b + f"/api/v1/chat/stream/{stream_id}", timeout=20)
        received += b"".join(chunks)
        thread.join(20)
    assert deleted.status_code == 204
    for raw in (received, reader[0]):
        end = events(raw)[-3:]
        assert json.loads(end[0].data)["finish_reason"] == "error"
        assert json.loads(end[1].data)["error"]["type"] == "cancelled"
        assert end[2].data == "[DONE]"
        assert len(text_of(raw)) < len(text)
    assert reader[0] == received


def test_the_stream_expires_after_resume_ttl(processes: list[Any], shared_redis: RedisServer) -> None:
    a, b = processes[0], processes[1]
    response = httpx.post(a + "/api/v1/chat/stream", json=body("a b"), timeout=20)
    stream_id = response.headers["x-stream-id"]
    assert resume_from(b, stream_id).content == response.content
    time.sleep(TTL_S + 0.5)
    assert resume_from(b, stream_id).status_code == 404
    assert httpx.delete(a + f"/api/v1/chat/stream/{stream_id}", timeout=20).status_code == 404
    assert not redis.Redis.from_url(shared_redis.url).exists(b"streamgate:stream:" + stream_id.encode())


def test_readers_get_an_error_end_when_the_producing_process_dies(processes: list[Any]) -> None:
    b, c, c_process = processes[1], processes[2], processes[3]
    stream_id, _ = start(c, 1, body(" ".join(f"y{i}" for i in range(500))))
    with httpx.stream("GET", b + f"/api/v1/chat/stream/{stream_id}", timeout=20) as reader:
        chunks = reader.iter_bytes()
        received = next(chunks)
        c_process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        received += b"".join(chunks)
        ended_after = time.monotonic() - killed_at
    assert ended_after < 2 * HEARTBEAT_S
    end = events(received)[-3:]
    assert json.loads(end[0].data)["finish_reason"] == "error"
    assert json.loads(end[1].data) == {
        "error": {"type": "upstream_error", "message": "the stream's generator was lost"}
    }
    assert end[2].data == "[DONE]"
    ids = [int(e.id) for e in events(received)[:-1]]
    assert ids == list(range(1, len(ids) + 1))


def test_redis_restarting_mid_stream_fails_the_stream_and_the_server_stays_up(tmp_path: Path) -> None:
    with running_redis(tmp_path) as store:
        app = create_app(settings(redis_url=store.url, sse_heartbeat_s=HEARTBEAT_S), adapters={"echo": EchoAdapter(30)})
        with serve(app) as url:
            text = " ".join(f"z{i}" for i in range(100))
            with httpx.stream("POST", url + "/api/v1/chat/stream", json=body(text), timeout=20) as response:
                chunks = response.iter_bytes()
                received = next(chunks)
                store.stop()
                received += b"".join(chunks)
            end = events(received)[-3:]
            assert json.loads(end[0].data)["finish_reason"] == "error"
            assert json.loads(end[1].data)["error"] == {
                "type": "upstream_error",
                "message": "the stream store (REDIS_URL) failed; the stream cannot go on resumable",
            }
            assert end[2].data == "[DONE]"
            assert httpx.get(url + "/api/v1/chat/stream/health", timeout=10).status_code == 200
            refused = httpx.post(url + "/api/v1/chat/stream", json=body("a b"), timeout=20)
            assert refused.status_code == 502
            assert refused.json()["error"]["message"] == (
                "the stream store (REDIS_URL) is unreachable; a resumable stream cannot start"
            )
            plain = httpx.post(url + "/api/v1/chat/stream", json={**body("a b"), "resumable": False}, timeout=20)
            assert text_of(plain.content) == "a b"
            store.start()
            again = httpx.post(url + "/api/v1/chat/stream", json=body("a b"), timeout=20)
            assert again.status_code == 200
            assert resume_from(url, again.headers["x-stream-id"]).content == again.content


@pytest.mark.parametrize(
    "command", [[str(ROOT / "server.py")], ["-m", "uvicorn", "streamgate.server:app"]], ids=["server.py", "uvicorn"]
)
def test_an_unreachable_redis_url_stops_the_start(tmp_path: Path, command: list[str]) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in KEYS}
    environment["REDIS_URL"] = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = subprocess.run([sys.executable, *command], cwd=tmp_path, env=environment, capture_output=True, timeout=90)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("REDIS_URL=redis://:***@127.0.0.1:")
    assert "hunter2" not in result.stderr.decode() and "start Redis or unset REDIS_URL" in lines[0]


def test_a_password_in_the_query_string_is_not_printed_either(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in KEYS}
    environment["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0?password=hunter2&socket_timeout=1"
    result = subprocess.run(
        [sys.executable, str(ROOT / "server.py")], cwd=tmp_path, env=environment, capture_output=True, timeout=90
    )
    assert result.returncode == 2
    assert "hunter2" not in result.stderr.decode() and "password=***" in result.stderr.decode()


def test_many_readers_of_ones_own_stream_cannot_break_another_users_stream(shared_redis: RedisServer) -> None:
    """The review's abuse: 110 `GET`s of one's own stream id (each one a blocking reader)
    held a connection each of a pool of 100, and another user's live stream failed. Now
    the readers of a process share one blocking read, and the pool is bounded."""
    app = create_app(
        settings(redis_url=shared_redis.url, sse_heartbeat_s=HEARTBEAT_S), adapters={"echo": EchoAdapter(20)}
    )
    theirs = " ".join(f"t{i}" for i in range(60))
    mine = " ".join(f"m{i}" for i in range(40))
    client = redis.Redis.from_url(shared_redis.url)
    before = client.info("clients")["connected_clients"]
    with serve(app) as url:
        other_user: list[bytes] = []
        victim = threading.Thread(
            target=lambda: other_user.append(
                httpx.post(url + "/api/v1/chat/stream", json=body(theirs), timeout=30).content
            )
        )
        victim.start()
        stream_id, _ = start(url, 1, body(mine))

        async def readers() -> list[bytes]:
            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(timeout=30, limits=limits) as http:

                async def one() -> bytes:
                    return (await http.get(f"{url}/api/v1/chat/stream/{stream_id}")).content

                return list(await asyncio.gather(*(one() for _ in range(110))))

        read = asyncio.run(readers())
        victim.join(30)
        used = client.info("clients")["connected_clients"] - before
    assert text_of(other_user[0]) == theirs and other_user[0].endswith(b"data: [DONE]\n\n")
    assert all(text_of(raw) == mine for raw in read)
    assert len(set(read)) == 1
    assert used <= MAX_CONNECTIONS + 1  # the pool, and the one blocking reader


def test_a_reader_that_joins_during_a_blocking_read_from_further_back_misses_no_entry(
    shared_redis: RedisServer,
) -> None:
    """One `XREAD BLOCK` serves every waiting reader. A reader that starts waiting while it
    is under way, from an older entry than it names, must not be handed only what that read
    returns (the entries in between would be lost): the next read serves it."""

    async def scenario() -> list[bytes]:
        shared = redis.asyncio.Redis.from_url(shared_redis.url)
        reads = BlockingReads(redis.asyncio.Redis.from_url(shared_redis.url, single_connection_client=True), shared)
        key = b"test:blocking-reads:" + os.urandom(4).hex().encode()
        ids = [await shared.xadd(key, {b"n": str(n).encode()}) for n in range(5)]
        runner = asyncio.get_running_loop().create_task(reads.run())
        try:
            latest = asyncio.ensure_future(reads.wait(key, ids[-1], 10))  # the read names the newest entry
            while reads.reading is None:
                await asyncio.sleep(0.001)
            reads.woken = True  # the wake-up of the next reader has not landed yet
            behind = asyncio.ensure_future(reads.wait(key, ids[0], 10))
            await asyncio.sleep(0.01)
            await shared.xadd(key, {b"n": b"5"})  # the read under way returns this entry alone
            await latest
            return [fields[b"n"] for _, fields in await behind]
        finally:
            runner.cancel()
            await shared.delete(key)
            await shared.aclose()
            await reads.blocking.aclose()

    assert asyncio.run(scenario()) == [b"1", b"2", b"3", b"4", b"5"]
