"""Model routes (`routing.py`), the per-target breaker and several keys per provider
(`keys.py`), through the real app and the real adapters against loopback upstreams that
fail on command: a status (429 with `Retry-After`, 500, 529, …), a refused connection, a
first token after N seconds, a failure mid-stream.

Route `fast` (fallback) and `quick` (hedge) send `openai/gpt-4o` to upstream A and
`llama4/<Scout>` (Together: the same OpenAI wire) to upstream B.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
import redis
from processes import running_redis
from streamgate import routing, sse
from streamgate.app import create_app
from streamgate.chat_types import ChatMessage, ChatRequest
from streamgate.config import ConfigFile
from streamgate.providers.gemini_stream import GeminiStreamAdapter
from streamgate.settings import SettingsError
from support import Answer, closed_port, serve, settings
from wire_gemini import frame, text, usage_metadata
from wire_gemini import sse_body as gemini_body
from wire_openai import SSE_HEAD, chunk, completion, http_chunk, sse_body

SCOUT = "meta-llama/Llama-4-Scout-17B-16E-Instruct"
CONFIG = f"""
[routes.fast]
targets = ["openai/gpt-4o", "llama4/{SCOUT}"]

[routes.quick]
targets = ["openai/gpt-4o", "llama4/{SCOUT}"]
strategy = "hedge"
hedge_after_ms = 150

[routes.strict]
targets = ["llama4/not-a-llama", "openai/gpt-4o"]

[routes.solo]
targets = ["openai/gpt-4o"]
"""
HELLO = [{"role": "user", "content": "Hi"}]


class Upstream:
    """A loopback HTTP/1.1 server answering each request with the next command (default:
    a quick answer); it records each request's head and when each connection closed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.commands: list[dict[str, Any]] = []
        self.heads: list[bytes] = []
        self.closed_at: list[float] = []
        self.first_token_at: list[float] = []
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    def script(self, *commands: dict[str, Any]) -> None:
        self.commands = list(commands)
        self.heads.clear()
        self.closed_at.clear()
        self.first_token_at.clear()

    @property
    def keys(self) -> list[str]:
        return [
            line.split(b" ")[-1].decode()
            for head in self.heads
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"authorization:")
        ]

    @contextmanager
    def running(self) -> Iterator[Upstream]:
        loop = self._loop = asyncio.new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:

            async def stop() -> None:
                server.close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.heads.append(head)
                command = self.commands.pop(0) if self.commands else {}
                if not await self._answer(command, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed_at.append(time.monotonic())
            writer.transport.abort()

    async def _answer(
        self, command: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection is done."""
        status = command.get("status", 200)
        if status != 200:
            body = json.dumps(
                {"error": {"message": f"scripted {status}", "type": "x", "param": None, "code": None}}
            ).encode()
            extra = "".join(f"{name}: {value}\r\n" for name, value in command.get("headers", {}).items())
            writer.write(
                b"HTTP/1.1 %d Scripted\r\ncontent-type: application/json\r\n%bcontent-length: %d\r\n\r\n%b"
                % (status, extra.encode(), len(body), body)
            )
            await writer.drain()
            return True
        writer.write(SSE_HEAD)
        await writer.drain()
        delay = command.get("delay", 0.0)
        if delay:  # the first token after `delay`, unless the client leaves first
            eof = asyncio.ensure_future(reader.read(1))
            done, _ = await asyncio.wait([eof], timeout=delay)
            if done:
                return False
            eof.cancel()
            await asyncio.gather(eof, return_exceptions=True)
        if command.get("cut") is not None:  # some text (maybe none), then the connection drops
            pieces = [chunk(role="assistant")] + ([chunk(command["cut"])] if command["cut"] else [])
            writer.write(http_chunk(sse_body(pieces, done=False)))
            await writer.drain()
            self.first_token_at.append(time.monotonic())
            await asyncio.sleep(0.05)
            return False
        body = completion(command.get("pieces", [self.text]))
        self.first_token_at.append(time.monotonic())
        writer.write(http_chunk(body) + b"0\r\n\r\n")
        await writer.drain()
        return True


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    a, b = Upstream("from A"), Upstream("from B")
    with a.running(), b.running():
        yield a, b


def route_config(text: str = CONFIG, path: str = "streamgate.toml") -> ConfigFile:
    return ConfigFile(Path(path), tomllib.loads(text), text)


@contextmanager
def gateway(a: Upstream, b: Upstream, **overrides: Any) -> Iterator[tuple[str, Any]]:
    config = settings(
        **{
            "openai_api_key": "sk-a",
            "openai_base_url": a.url,
            "together_api_key": "tg-b",
            "together_base_url": b.url,
            "upstream_max_retries": 0,
            "upstream_timeout_s": 5.0,
            **overrides,
        }
    )
    app = create_app(config, config=route_config())
    with serve(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def base(upstreams: tuple[Upstream, Upstream]) -> Iterator[tuple[str, Any]]:
    with gateway(*upstreams) as served:
        yield served


@pytest.fixture
def url(base: tuple[str, Any], upstreams: tuple[Upstream, Upstream]) -> str:
    """The shared gateway, its upstreams scripted afresh and its breakers closed."""
    for upstream in upstreams:
        upstream.script()
    for route in base[1].state.gateway.routes.values():
        for target in route.targets:
            target.breaker.success()
    return base[0]


def native(url: str, model: str = "fast", **extra: Any) -> Answer:
    response = httpx.post(f"{url}/api/v1/chat/stream", json={"model": model, "messages": HELLO, **extra}, timeout=20)
    return Answer(response)


def served_by(answer: Answer) -> tuple[str, str, str]:
    h = answer.headers
    return h["x-streamgate-provider"], h["x-streamgate-model"], h["x-streamgate-attempts"]


# --- fallback -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        {"status": 429, "headers": {"retry-after": "0"}},
        {"status": 500},
        {"status": 529},
        {"status": 503},
        {"status": 401},
        {"status": 403},
        {"status": 404},
        {"status": 408},
        {"status": 409},
        {"cut": ""},  # the connection drops after the 200, before any token
    ],
    ids=lambda c: str(c.get("status", "cut")),
)
def test_a_failure_another_provider_may_not_share_falls_back(
    url: str, upstreams: tuple[Upstream, Upstream], command: dict[str, Any]
) -> None:
    a, b = upstreams
    a.script(command)
    answer = native(url)
    assert answer.status == 200
    assert answer.text == "from B"
    assert served_by(answer) == ("llama4", SCOUT, "2")
    assert answer.messages[-1]["provider"] == "llama4" and answer.messages[-1]["model"] == SCOUT
    assert len(a.heads) == 1 and len(b.heads) == 1


def test_a_refused_connection_and_a_missing_key_fall_back(upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    for overrides in ({"openai_base_url": f"http://127.0.0.1:{closed_port()}/v1"}, {"openai_api_key": None}):
        b.script()
        with gateway(a, b, **overrides) as (url, _):
            answer = native(url)
        assert (answer.status, answer.text, served_by(answer)) == (200, "from B", ("llama4", SCOUT, "2"))


def test_a_timeout_before_the_first_token_falls_back(upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    a.script({"delay": 3.0})
    b.script()
    with gateway(a, b, upstream_timeout_s=0.3) as (url, _):
        started = time.monotonic()
        answer = native(url)
    assert (answer.status, answer.text, served_by(answer)[2]) == (200, "from B", "2")
    assert time.monotonic() - started < 2.5


def test_retries_of_one_target_come_first_and_do_not_count_as_attempts(upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    a.script({"status": 500}, {"status": 500})
    b.script()
    with gateway(a, b, upstream_max_retries=1) as (url, _):
        answer = native(url)
    assert (answer.text, served_by(answer)[2]) == ("from B", "2")
    assert len(a.heads) == 2


@pytest.mark.parametrize("status", [400, 413, 422])
def test_the_requests_own_fault_is_answered_at_once(
    url: str, upstreams: tuple[Upstream, Upstream], status: int
) -> None:
    a, b = upstreams
    a.script({"status": status})
    answer = native(url)
    assert answer.status == status
    assert served_by(answer) == ("openai", "gpt-4o", "1")
    assert not b.heads


def test_our_own_validation_is_answered_at_once(url: str, upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    answer = native(url, "strict")  # llama4 refuses the model before any network call
    assert answer.status == 422 and answer.json()["error"]["type"] == "model_not_supported"
    assert native(url, temperature=9).status == 422
    assert not a.heads and not b.heads


def test_no_fallback_after_the_first_token(url: str, upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    a.script({"cut": "Hel"})
    answer = native(url)
    assert answer.status == 200 and answer.text == "Hel"
    assert answer.messages[-1]["finish_reason"] == "error"
    assert [e.event for e in answer.events][-2:] == ["error", "message"] and answer.events[-1].data == "[DONE]"
    assert not b.heads


def test_every_target_failing_answers_the_last_failure(url: str, upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    a.script({"status": 500})
    b.script({"status": 429, "headers": {"retry-after": "7"}})
    answer = native(url)
    assert answer.status == 429 and answer.headers["retry-after"] == "7"
    assert served_by(answer) == ("llama4", SCOUT, "2")


# --- hedge ----------------------------------------------------------------------------


def test_a_hedge_is_won_by_the_second_target_and_the_first_is_closed_at_once(
    url: str, upstreams: tuple[Upstream, Upstream]
) -> None:
    a, b = upstreams
    a.script({"delay": 5.0})
    started = time.monotonic()
    answer = native(url, "quick")
    assert time.monotonic() - started < 2
    assert answer.text == "from B"  # one answer, never two
    assert served_by(answer) == ("llama4", SCOUT, "2")
    deadline = time.monotonic() + 2
    while not a.closed_at and time.monotonic() < deadline:
        time.sleep(0.005)
    assert a.closed_at, "the losing upstream's connection was not closed"
    assert a.closed_at[0] - b.first_token_at[0] < 0.1


def test_a_hedge_asks_no_second_target_when_the_first_is_quick(url: str, upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    answer = native(url, "quick")
    assert (answer.text, served_by(answer)) == ("from A", ("openai", "gpt-4o", "1"))
    assert not b.heads


def test_a_hedge_asks_the_next_target_at_once_when_the_first_fails(
    url: str, upstreams: tuple[Upstream, Upstream]
) -> None:
    a, b = upstreams
    a.script({"status": 529})
    started = time.monotonic()
    answer = native(url, "quick")
    assert (answer.text, served_by(answer)[2]) == ("from B", "2")
    assert time.monotonic() - started < 0.15 + 1.0  # not only after hedge_after_ms


def test_a_hedge_on_v1_with_the_openai_sdk(url: str, upstreams: tuple[Upstream, Upstream]) -> None:
    a, _ = upstreams
    a.script({"delay": 5.0})
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    raw = client.chat.completions.with_raw_response.create(model="quick", messages=HELLO, stream=True)
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "from B"
    assert {c.model for c in chunks} == {f"llama4/{SCOUT}"}
    assert raw.headers["x-streamgate-provider"] == "llama4" and raw.headers["x-streamgate-attempts"] == "2"


# --- routes on each endpoint ---------------------------------------------------------------


def test_routes_on_the_v1_endpoint(url: str, upstreams: tuple[Upstream, Upstream]) -> None:
    a, _ = upstreams
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    a.script({"status": 500})
    completion_ = client.chat.completions.with_raw_response.create(model="fast", messages=HELLO)
    answer = completion_.parse()
    assert answer.choices[0].message.content == "from B" and answer.model == f"llama4/{SCOUT}"
    assert completion_.headers["x-streamgate-model"] == SCOUT
    stream = client.chat.completions.create(model="solo", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "from A"
    plain = client.chat.completions.with_raw_response.create(model="echo/echo", messages=HELLO)
    assert (plain.headers["x-streamgate-provider"], plain.headers["x-streamgate-attempts"]) == ("echo", "1")


def test_routes_on_the_native_endpoints(url: str, upstreams: tuple[Upstream, Upstream]) -> None:
    a, _ = upstreams
    a.script({"status": 500})
    response = httpx.post(f"{url}/api/v1/chat", json={"model": "fast", "messages": HELLO}, timeout=10)
    assert response.status_code == 200
    assert (response.json()["content"], response.json()["provider"]) == ("from B", "llama4")
    assert response.headers["x-streamgate-attempts"] == "2"
    resumable = native(url, resumable=True)
    assert resumable.text == "from A" and "x-stream-id" in resumable.headers
    assert served_by(resumable) == ("openai", "gpt-4o", "1")
    plain = httpx.post(f"{url}/api/v1/chat/stream", json={"provider": "echo", "messages": HELLO})
    assert (plain.headers["x-streamgate-provider"], plain.headers["x-streamgate-model"]) == ("echo", "echo")
    for body in ({"messages": HELLO}, {"model": "gpt-4o", "messages": HELLO}):
        refused = httpx.post(f"{url}/api/v1/chat/stream", json=body)
        assert refused.status_code == 422
        assert refused.json()["error"]["message"].startswith("$.provider: required field is missing")


def test_health_lists_routes_and_metrics_and_log_name_them(
    url: str, upstreams: tuple[Upstream, Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamgate.access")
    a, _ = upstreams
    routes = httpx.get(f"{url}/api/v1/chat/stream/health").json()["routes"]
    assert routes["quick"] == {"strategy": "hedge", "targets": ["openai/gpt-4o", f"llama4/{SCOUT}"]}
    before = httpx.get(f"{url}/metrics").text
    a.script({"status": 500})
    native(url)
    a.script({"delay": 5.0})
    native(url, "quick")
    after = httpx.get(f"{url}/metrics").text
    target_b = f'route="fast",target="llama4/{SCOUT}"'
    for name, labels in [
        ("streamgate_route_attempts_total", 'route="fast",target="openai/gpt-4o"'),
        ("streamgate_route_fallbacks_total", target_b),
        ("streamgate_route_hedges_started_total", target_b.replace("fast", "quick")),
        ("streamgate_route_hedges_won_total", target_b.replace("fast", "quick")),
    ]:
        assert metric(after, name, labels) == metric(before, name, labels) + 1, name
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not any("route=quick" in r.getMessage() for r in caplog.records):
        time.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if r.name == "streamgate.access"]
    assert any(f"provider=llama4 model={SCOUT} route=fast attempts=2 " in line for line in lines)
    assert any("route=quick attempts=2 " in line for line in lines)


def metric(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{"):
            inside = line[len(name) + 1 : line.index("}")]
            if sorted(inside.split(",")) == sorted(labels.split(",")):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- the breaker ------------------------------------------------------------------------


def test_the_breaker_skips_a_failing_target_then_tries_it_once(
    url: str, upstreams: tuple[Upstream, Upstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = upstreams
    monkeypatch.setattr(routing, "BREAKER_OPEN_S", 0.3)
    a.script(*[{"status": 500}] * routing.BREAKER_FAILURES)
    for _ in range(routing.BREAKER_FAILURES):
        assert served_by(native(url))[2] == "2"
    answer = native(url)  # skipped: B alone
    assert (answer.text, served_by(answer)) == ("from B", ("llama4", SCOUT, "1"))
    assert len(a.heads) == routing.BREAKER_FAILURES
    time.sleep(0.35)  # the breaker's (shortened) rest
    a.script({"status": 500})
    assert served_by(native(url))[2] == "2"  # the trial failed: open again
    assert served_by(native(url))[2] == "1"
    time.sleep(0.35)
    answer = native(url)  # the trial succeeds: trusted again
    assert (answer.text, served_by(answer)[2]) == ("from A", "1")
    a.script({"status": 500})
    assert served_by(native(url))[2] == "2"  # one failure after a success: not open
    assert served_by(native(url))[:1] == ("openai",)


# --- several keys -------------------------------------------------------------------------


def test_keys_are_spread_and_rest(upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    a.script()
    with gateway(a, b, openai_api_key="key-one, key-two") as (url, _):
        for _ in range(4):
            native(url, provider="openai")
        assert a.keys == ["key-one", "key-two", "key-one", "key-two"]
        a.script({"delay": 1.0})  # one stream held open: the next goes to the other key
        held = threading.Thread(target=native, args=(url,), kwargs={"provider": "openai"})
        held.start()
        while not a.heads:
            time.sleep(0.005)
        native(url, provider="openai")
        held.join()
        assert sorted(a.keys) == ["key-one", "key-two"]
        a.script({"status": 429, "headers": {"retry-after": "30"}})
        assert native(url, provider="openai").text == "from A"  # at once with the other key
        first_key, other = a.keys
        for _ in range(3):
            assert native(url, provider="openai").text == "from A"
        assert a.keys == [first_key, other, other, other, other]
        a.script({"status": 401})
        assert native(url, provider="openai").status == 401  # no key left: the answer passes through
        assert native(url, provider="openai").text == "from A"  # both rest: the one whose rest ends first
        assert a.keys == [other, first_key]
        scrape = httpx.get(f"{url}/metrics").text
    assert 'streamgate_upstream_key_rests_total{key="' in scrape and "key-one" not in scrape
    assert metric(scrape, "streamgate_upstream_key_requests_total", 'key="2",provider="openai"') >= 4


def test_a_route_on_a_provider_with_several_keys(upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    a.script({"status": 429, "headers": {"retry-after": "30"}})
    with gateway(a, b, openai_api_key="key-one,key-two", upstream_max_retries=1) as (url, _):
        answer = native(url)  # the retry of the same target goes out with the other key
    assert (answer.text, served_by(answer)[2]) == ("from A", "1")
    assert a.keys == ["key-one", "key-two"]


# --- the config file ------------------------------------------------------------------------

BAD_CONFIGS = {
    "not TOML": ('[routes.fast]\ntargets = ["openai/gpt-4o"\n', 2, "not valid TOML"),
    "twice": (
        '[routes.fast]\ntargets = ["openai/x"]\n\n[routes.fast]\ntargets = ["gemini/y"]\n',
        4,
        "route 'fast' is defined twice",
    ),
    "unknown provider": (
        '[routes.a]\ntargets = ["openai/x"]\n[routes.b]\ntargets = [\n  "openai/x",\n  "nobody/y",\n]\n',
        6,
        "unknown provider 'nobody'",
    ),
    "no slash": ('[routes.a]\ntargets = ["gpt-4o"]\n', 2, 'must be "<provider>/<model>"'),
    "no targets": ('[routes.a]\nstrategy = "hedge"\n', 1, "has no targets"),
    "empty targets": ("[routes.a]\ntargets = []\n", 2, "non-empty list"),
    "strategy": ('[routes.a]\ntargets = ["openai/x"]\nstrategy = "fastest"\n', 3, "is not one of"),
    "hedge_after_ms": (
        '[routes.a]\ntargets = ["openai/x"]\nstrategy = "hedge"\nhedge_after_ms = -1\n',
        4,
        "hedge_after_ms must be",
    ),
    "hedge_after_ms on fallback": ('[routes.a]\ntargets = ["openai/x"]\nhedge_after_ms = 10\n', 3, "only for strategy"),
    "unknown key": (
        '[routes.a]\ntargets = ["openai/x"]\n\n[routes.b]\ntargets = ["openai/x"]\nretries = 3\n',
        6,
        "unknown key 'retries'",
    ),
    "not a table": ("routes = 3\n", 1, "must be a table"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_a_bad_config_names_file_and_line(tmp_path: Path, case: str) -> None:
    text, line, problem = BAD_CONFIGS[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as raised:
        create_app(settings(streamgate_config=str(path)))
    message = str(raised.value)
    assert message.startswith(f"{path}:{line}: ") and problem in message and "\n" not in message


@pytest.mark.parametrize("case", ["twice", "unknown provider", "unknown key"])
def test_the_server_refuses_to_start_on_a_bad_config(tmp_path: Path, case: str) -> None:
    text, line, problem = BAD_CONFIGS[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    environment = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    done = subprocess.run(
        [sys.executable, "-m", "streamgate", "--config", str(path), "--port", "0"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and f"{path}:{line}: " in lines[0] and problem in lines[0]


def test_a_good_config_file_is_read_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "streamgate.toml"
    path.write_text('[routes."claude-opus-5-5"]\ntargets = ["echo/echo"]\n')
    with serve(create_app(settings(streamgate_config=str(path)))) as url:
        answer = native(url, "claude-opus-5-5")
    assert (answer.text, served_by(answer)) == ("Hi", ("echo", "echo", "1"))


def test_sse_frames_are_well_formed_through_a_route(url: str) -> None:
    answer = native(url, "fast")
    assert [e.id for e in answer.events if e.event == "message" and e.data != "[DONE]"] == ["1", "2"]
    assert sse.DONE.strip() in answer.raw


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_resting_keys_are_shared_through_redis(upstreams: tuple[Upstream, Upstream], tmp_path: Path) -> None:
    a, b = upstreams
    with (
        running_redis(tmp_path) as server,
        gateway(a, b, openai_api_key="key-one,key-two", redis_url=server.url) as (first, _),
    ):
        a.script({"status": 429, "headers": {"retry-after": "30"}})
        assert native(first, provider="openai").text == "from A"  # key-one rests; key-two answered
        assert a.keys == ["key-one", "key-two"]
        shared = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 5
        while not shared.keys("streamgate:key-rest:openai:*") and time.monotonic() < deadline:
            time.sleep(0.01)
        (name,) = shared.keys("streamgate:key-rest:openai:*")
        assert b"key-one" not in name and 25 < shared.ttl(name) <= 30
        with gateway(a, b, openai_api_key="key-one,key-two", redis_url=server.url) as (second, _):
            a.script()
            native(second, provider="openai")  # the first choice also starts reading the shared rests
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                a.script()
                for _ in range(3):
                    native(second, provider="openai")
                if a.keys == ["key-two"] * 3:
                    break
            assert a.keys == ["key-two"] * 3


def test_gemini_spreads_its_keys_and_rests_a_refused_one() -> None:
    seen: list[str] = []
    quota = {
        "error": {
            "code": 429,
            "message": "quota",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "20s"}],
        }
    }

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.headers["x-goog-api-key"])
        if len(seen) == 3:
            return httpx2.Response(429, json=quota)
        body = gemini_body(frame(text("ok")), frame(text(""), finish_reason="STOP", usage=usage_metadata(1, 1, None)))
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    async def run() -> list[str]:
        config = settings(gemini_api_key="g-one,g-two", upstream_max_retries=0)
        adapter = GeminiStreamAdapter(config, http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handle)))
        request = ChatRequest(messages=[ChatMessage(role="user", content="hi")], provider="gemini")
        texts = []
        try:
            for _ in range(5):
                stream = await adapter.stream_chat(request)
                try:
                    texts.append("".join([c.content async for c in aiter(stream) if hasattr(c, "content")]))
                finally:
                    await stream.aclose()
        finally:
            await adapter.aclose()
        return texts

    assert asyncio.run(run()) == ["ok"] * 5
    # spread in turn; the 429 on g-one (third request) is sent again at once with g-two,
    # and g-one then rests for the 20 s Gemini's RetryInfo asked
    assert seen == ["g-one", "g-two", "g-one", "g-two", "g-two", "g-two"]


def test_the_readme_routes_config_runs_as_written(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.partition("\n## Routes\n")[2].partition("\n## ")[0]
    toml = section.partition("```toml\n")[2].partition("```")[0]
    path = tmp_path / "streamgate.toml"
    path.write_text(toml)
    app = create_app(settings(streamgate_config=str(path)))
    routes = app.state.gateway.routes
    assert [t.label for t in routes["claude-opus-5-5"].targets][0].startswith("gemini/")
    assert routes["fast"].hedge and routes["fast"].hedge_after_s == 0.2
    with serve(app) as url:
        answer = native(url, "demo")
    assert (answer.text, served_by(answer)) == ("Hi", ("echo", "echo", "1"))
