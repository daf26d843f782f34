"""Callers and limits (`callers.py`): keys picking callers, `401`/`403`, each limit in
each dialect's shape (the OpenAI SDK's `RateLimitError` with its headers), streams held
by resumable generations without a reader, two gateway processes sharing counts through
a real `redis-server`, the request log and `/metrics`, and the config file's errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from processes import ROOT, gateways, running_redis
from resumable import start
from streamgate.adapter import ChunkStream
from streamgate.app import create_app
from streamgate.callers import duration, load_callers
from streamgate.chat_types import ChatRequest, FinishReason, StreamChunk, Usage
from streamgate.config import load_config
from streamgate.providers.echo import EchoAdapter
from streamgate.settings import SettingsError
from support import serve, settings
from test_metrics import delta, key, scrape

KEYS = {"ci": "ci-secret", "web": "web-secret", "open": "open-secret"}
HELLO = [{"role": "user", "content": "one two three"}]


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def caller_table(name: str, **fields: Any) -> str:
    lines = ["[[callers]]", f'name = "{name}"', f'key_sha256 = "{sha(KEYS[name])}"']
    lines += [f"{field} = {json.dumps(value)}" for field, value in fields.items()]
    return "\n".join(lines) + "\n\n"


def write_config(directory: Path, text: str) -> str:
    path = directory / "streamgate.toml"
    path.write_text(text)
    return str(path)


def bearer(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[name]}"}


def native(url: str, name: str | None, *, stream: bool = True, provider: str = "echo", **extra: Any) -> httpx.Response:
    path = "/api/v1/chat/stream" if stream else "/api/v1/chat"
    body = {"provider": provider, "messages": HELLO, **extra}
    return httpx.post(url + path, json=body, headers=bearer(name) if name else {}, timeout=10)


class HeldAdapter:
    """A provider whose streams send one word, then wait until `release()`; it counts
    the calls that reached it (to prove a refusal made none)."""

    name = "held"
    default_model = "held-1"
    configured = True
    models = ("held-1",)

    def __init__(self) -> None:
        self.calls = 0
        self.open = 0
        self.released = threading.Event()

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        self.calls += 1
        return ChunkStream(self._chunks())

    async def _chunks(self) -> AsyncGenerator[StreamChunk, None]:
        self.open += 1
        try:
            yield StreamChunk("held ", None, self.default_model, self.name)
            while not self.released.is_set():
                await asyncio.sleep(0.005)
            yield StreamChunk("", FinishReason.STOP, self.default_model, self.name, Usage.of(1, 1))
        finally:
            self.open -= 1

    def release(self) -> None:
        self.released.set()

    async def aclose(self) -> None:
        return None


class CountingEcho(EchoAdapter):
    def __init__(self) -> None:
        super().__init__(0)
        self.calls = 0

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        self.calls += 1
        return await super().stream_chat(request)


def app_with(config: str, tmp_path: Path, **overrides: Any) -> tuple[Any, CountingEcho, HeldAdapter]:
    echo, held = CountingEcho(), HeldAdapter()
    app = create_app(
        settings(streamgate_config=write_config(tmp_path, config), **overrides), adapters={"echo": echo, "held": held}
    )
    return app, echo, held


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# --- keys, models ------------------------------------------------------------------------


def test_keys_pick_callers_and_models_are_checked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="streamgate.access")
    config = caller_table("ci", models=["echo/*"]) + caller_table("web", models=["fast", "openai/*"])
    app, echo, _ = app_with(config, tmp_path, gateway_api_key="admin-key")
    with serve(app) as url:
        assert native(url, "ci").status_code == 200
        assert (
            httpx.post(
                url + "/api/v1/chat",
                json={"provider": "echo", "messages": HELLO},
                headers={"x-api-key": KEYS["ci"]},
                timeout=10,
            ).json()["content"]
            == "one two three"
        )
        refused = native(url, "web")
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden_model"
        assert "'echo/echo'" in refused.json()["error"]["message"]
        for headers in ({}, {"authorization": "Bearer nope"}, {"x-api-key": "nope"}):
            response = httpx.post(
                url + "/api/v1/chat/stream", json={"provider": "echo", "messages": HELLO}, headers=headers, timeout=10
            )
            assert response.status_code == 401 and response.json()["error"]["type"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
        assert httpx.get(url + "/v1/models", timeout=10).status_code == 401
        assert httpx.get(url + "/metrics", timeout=10).status_code == 401  # a caller's key scrapes it
        assert httpx.get(url + "/metrics", headers=bearer("web"), timeout=10).status_code == 200
        assert httpx.get(url + "/v1/models", headers=bearer("web"), timeout=10).status_code == 200
        # GATEWAY_API_KEY is one more caller, `default`, with every model and no limits
        admin = httpx.post(
            url + "/api/v1/chat/stream",
            json={"provider": "echo", "messages": HELLO},
            headers={"authorization": "Bearer admin-key"},
            timeout=10,
        )
        assert admin.status_code == 200
        # OpenAI's shape: the SDK's PermissionDeniedError, `param` naming the model
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEYS["web"], max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as denied:
            client.chat.completions.create(model="echo/echo", messages=HELLO)  # type: ignore[arg-type]
        assert denied.value.code == "forbidden_model" and denied.value.param == "model"
        allowed = openai.OpenAI(base_url=url + "/v1", api_key=KEYS["ci"], max_retries=0)
        assert allowed.chat.completions.create(model="echo/echo", messages=HELLO).choices[0].message.content  # type: ignore[arg-type]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).chat.completions.create(
                model="echo/echo", messages=HELLO
            )  # type: ignore[arg-type]
        wait_until(lambda: sum("caller=" in r.getMessage() for r in caplog.records) >= 6, "the log lines")
    assert echo.calls == 4  # ci twice, admin, ci on /v1: no refused request reached the provider
    lines = [r.getMessage() for r in caplog.records if r.name == "streamgate.access"]
    assert any(" 200 " in line and line.endswith("caller=ci") for line in lines)
    assert any(" 403 " in line and "error=forbidden_model" in line and "caller=web" in line for line in lines)
    assert any("caller=default" in line for line in lines)


def test_the_model_is_matched_as_named_and_as_provider_slash_model(tmp_path: Path) -> None:
    callers = load_callers(
        load_config(write_config(tmp_path, caller_table("ci", models=["fast", "openai/gpt-*"]))), None
    )
    assert callers is not None
    (caller,) = callers.by_digest.values()
    caller.check_model("fast", "gemini", "gemini-3.8-flash", "fast")  # a route, by its name
    with pytest.raises(Exception, match="may not use the model 'slow'"):  # a route never by its targets
        caller.check_model("slow", "openai", "gpt-4o", "slow")
    caller.check_model("gpt-4o", "openai", "gpt-4o")  # a bare name the dialect sends to openai
    caller.check_model(None, "openai", "gpt-5")  # native: provider and model apart
    for requested, provider, model in (("slow", "openai", "o3"), (None, "gemini", "gpt-4o"), ("FAST", "echo", "echo")):
        with pytest.raises(Exception, match="may not use the model") as refused:
            caller.check_model(requested, provider, model)
        assert getattr(refused.value, "status", None) == 403
    assert callers.find(KEYS["ci"].encode()) is caller
    assert callers.find(b"") is None and callers.find(b"ci-secret ") is None


def test_a_route_is_allowed_by_its_name_on_every_dialect(tmp_path: Path) -> None:
    routes = '[routes.demo]\ntargets = ["echo/echo"]\n\n'
    app, echo, _ = app_with(
        routes + caller_table("ci", models=["demo"]) + caller_table("web", models=["echo/*"]), tmp_path
    )
    with serve(app) as url:
        body = {"model": "demo", "messages": HELLO}
        assert httpx.post(url + "/api/v1/chat", json=body, headers=bearer("ci"), timeout=10).status_code == 200
        refused = httpx.post(url + "/api/v1/chat", json=body, headers=bearer("web"), timeout=10)
        assert refused.status_code == 403 and "'demo'" in refused.json()["error"]["message"]
        assert native(url, "ci").status_code == 403  # echo/echo itself is not the route
        ci = openai.OpenAI(base_url=url + "/v1", api_key=KEYS["ci"], max_retries=0)
        assert ci.chat.completions.create(model="demo", messages=HELLO).choices  # type: ignore[arg-type]
        with pytest.raises(openai.PermissionDeniedError):
            openai.OpenAI(base_url=url + "/v1", api_key=KEYS["web"], max_retries=0).chat.completions.create(
                model="demo", messages=HELLO
            )  # type: ignore[arg-type]
    assert echo.calls == 2


# --- limits --------------------------------------------------------------------------------


def ratelimit_headers(response: httpx.Response | Any) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.startswith(("x-ratelimit", "retry-after"))}


def test_requests_per_minute_in_the_native_and_openai_shapes(tmp_path: Path) -> None:
    app, echo, _ = app_with(caller_table("ci", requests_per_minute=3, tokens_per_minute=1000), tmp_path)
    with serve(app) as url:
        first = native(url, "ci")
        assert first.status_code == 200
        assert native(url, "ci", stream=False).status_code == 200
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEYS["ci"], max_retries=0)
        assert client.chat.completions.create(model="echo/echo", messages=HELLO).choices  # type: ignore[arg-type]
        calls = echo.calls
        refused = native(url, "ci")
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["type"] == "rate_limited"
        assert "requests_per_minute" in refused.json()["error"]["message"]
        headers = ratelimit_headers(refused)
        assert headers["x-ratelimit-limit-requests"] == "3" and headers["x-ratelimit-remaining-requests"] == "0"
        assert 1 <= int(headers["retry-after"]) <= 20  # a request comes back every 20 s
        assert headers["x-ratelimit-reset-requests"].endswith("s")  # the whole minute back: "59.9s"
        assert headers["x-ratelimit-limit-tokens"] == "1000"
        assert int(headers["x-ratelimit-remaining-tokens"]) < 1000  # the answers' usage was charged
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="echo/echo", messages=HELLO, stream=True)  # type: ignore[arg-type]
        error = limited.value
        assert error.status_code == 429 and error.code == "rate_limited" and error.type == "rate_limit_error"
        assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
        assert int(error.response.headers["retry-after"]) >= 1
        assert int(error.response.headers["retry-after-ms"]) > 0
        assert echo.calls == calls  # refused before any upstream call


def test_max_streams_counts_streams_not_answers_and_resumables_without_a_reader(tmp_path: Path) -> None:
    app, echo, held = app_with(caller_table("ci", max_streams=1), tmp_path)
    with serve(app) as url:
        stream_id, _ = start(url, 1, {"provider": "held", "resumable": True, "messages": HELLO}, headers=bearer("ci"))
        assert stream_id and held.open == 1  # its reader left; the generation goes on
        refused = native(url, "ci")
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limited"
        assert "max_streams" in refused.json()["error"]["message"] and refused.headers["retry-after"] == "1"
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEYS["ci"], max_retries=0)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="echo/echo", messages=HELLO, stream=True)  # type: ignore[arg-type]
        assert native(url, "ci", stream=False).json()["content"] == "one two three"  # a one-shot answer
        held.release()
        wait_until(lambda: held.open == 0, "the generation's end")
        wait_until(lambda: native(url, "ci").status_code == 200, "a free stream slot")
    assert echo.calls == 2


def test_tokens_per_minute_charges_usage_after_the_answer_and_never_cuts_it(tmp_path: Path) -> None:
    app, echo, _ = app_with(caller_table("ci", tokens_per_minute=10), tmp_path)
    words = " ".join(f"w{i}" for i in range(30))
    with serve(app) as url:
        body = {"provider": "echo", "messages": [{"role": "user", "content": words}]}
        answer = httpx.post(url + "/api/v1/chat/stream", json=body, headers=bearer("ci"), timeout=10)
        assert answer.status_code == 200 and b'"finish_reason":"stop"' in answer.content  # 60 tokens, not cut
        assert words in "".join(
            json.loads(line[6:])["content"] for line in answer.text.splitlines() if line.startswith("data: {")
        )
        wait_until(lambda: native(url, "ci").status_code == 429, "the tokens charged")
        refused = native(url, "ci")
        assert "tokens_per_minute" in refused.json()["error"]["message"]
        headers = ratelimit_headers(refused)
        assert headers["x-ratelimit-limit-tokens"] == "10" and headers["x-ratelimit-remaining-tokens"] == "0"
        assert "x-ratelimit-limit-requests" not in headers
        assert 300 <= int(headers["retry-after"]) <= 350  # 60 tokens at 10 a minute: 6 minutes of the window
        assert headers["x-ratelimit-reset-tokens"].startswith(("5m5", "6m"))  # the window empty again
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEYS["ci"], max_retries=0)
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="echo/echo", messages=HELLO)  # type: ignore[arg-type]
        assert limited.value.response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert echo.calls == 1


def test_duration_is_written_as_openai_writes_it() -> None:
    assert [duration(s) for s in (0, 0.0201, 1, 1.5, 59.9999, 60, 360.25)] == [
        "0ms",
        "21ms",
        "1s",
        "1.5s",
        "1m0s",
        "1m0s",
        "6m0.25s",
    ]


# --- metrics -------------------------------------------------------------------------------


def test_metrics_are_labelled_by_caller(tmp_path: Path) -> None:
    app, _, held = app_with(
        caller_table("ci", max_streams=1) + caller_table("web", models=["held/*"]), tmp_path, metrics_public=True
    )
    with serve(app) as url:
        before = scrape(url)
        assert key("streamgate_caller_requests_total", caller="web") in before  # declared from the start
        assert native(url, "ci").status_code == 200
        assert native(url, "web").status_code == 403
        with httpx.stream(
            "POST",
            url + "/api/v1/chat/stream",
            headers=bearer("ci"),
            timeout=10,
            json={"provider": "held", "messages": HELLO},
        ) as response:
            chunks = response.iter_bytes()
            next(chunks)  # (a generator dropped would close the response)
            assert native(url, "ci").status_code == 429
            assert scrape(url)[key("streamgate_caller_streams_in_flight", caller="ci")] == 1
            held.release()
            assert b"[DONE]" in b"".join(chunks)
        wait_until(lambda: scrape(url)[key("streamgate_caller_streams_in_flight", caller="ci")] == 0, "the end")
        after = scrape(url)
    assert (
        after[key("streamgate_caller_requests_total", caller="ci")]
        - before.get(key("streamgate_caller_requests_total", caller="ci"), 0)
        == 3
    )
    assert after[key("streamgate_caller_errors_total", caller="ci", type="rate_limited")] >= 1
    assert after[key("streamgate_caller_errors_total", caller="web", type="forbidden_model")] >= 1
    assert (
        after[key("streamgate_caller_tokens_total", caller="ci")]
        - before[key("streamgate_caller_tokens_total", caller="ci")]
        == 6 + 2
    )  # echo's 3 + 3 words, held's 1 + 1
    assert {dict(labels).get("caller") for _, labels in delta(before, after)} == {None, "ci", "web"}


def test_without_callers_metrics_have_no_caller_label() -> None:
    script = (
        "from prometheus_client import generate_latest; from streamgate.app import create_app; "
        "from streamgate.providers.echo import EchoAdapter; from streamgate.settings import Settings; "
        "create_app(Settings(model_catalog_refresh_s=0), adapters={'echo': EchoAdapter(0)}); "
        "print(generate_latest().decode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd="/", check=False
    )
    assert out.returncode == 0, out.stderr
    assert "streamgate_requests_total" in out.stdout and "caller" not in out.stdout


# --- the config file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (caller_table("ci") + '[[callers]]\nname = "web"\nkey_sha256 = "abc"\n', 7, "key_sha256 of the caller 'web'"),
        (caller_table("ci") + caller_table("ci").replace(sha(KEYS["ci"]), sha("x")), 6, "used twice"),
        (caller_table("ci") + caller_table("web").replace(sha(KEYS["web"]), sha(KEYS["ci"])), 7, "same key_sha256"),
        (caller_table("ci", max_streams=0), 4, "max_streams = 0"),
        (caller_table("ci", requests_per_minute=True), 4, "requests_per_minute = True"),
        (caller_table("ci", tokens_per_minute="9"), 4, "tokens_per_minute = '9'"),
        (caller_table("ci", models=[]), 4, "models of the caller 'ci'"),
        (caller_table("ci", key="oops"), 4, "unknown key 'key'"),
        ('[[callers]]\nname = "a b"\n', 2, "name = 'a b' is not valid"),
        ("callers = 3\n", 1, "'callers' must be an array"),
    ],
)
def test_config_errors_name_the_file_and_line(tmp_path: Path, text: str, line: int, problem: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(SettingsError) as error:
        load_callers(load_config(path), None)
    message = str(error.value)
    assert message.startswith(f"{path}:{line}: ") and problem in message, message
    assert "\n" not in message and KEYS["ci"] not in message


def test_gateway_api_key_may_not_be_a_callers_key_nor_named_twice(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, caller_table("ci")))
    with pytest.raises(SettingsError, match="GATEWAY_API_KEY is the key of the caller 'ci'"):
        load_callers(config, KEYS["ci"])
    named = load_config(write_config(tmp_path, caller_table("ci").replace('"ci"', '"default"')))
    with pytest.raises(SettingsError, match="the caller name 'default' is GATEWAY_API_KEY's"):
        load_callers(named, "admin")
    assert load_callers(load_config(write_config(tmp_path, "")), "admin") is None


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_bad_callers_table_stops_the_server_with_one_line(tmp_path: Path, workers: str) -> None:
    path = write_config(tmp_path, caller_table("ci", colour="blue"))
    done = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--config", path, "--port", "0", "--workers", workers],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2
    expected = (
        f"streamgate: cannot start: {path}:4: unknown key 'colour' in [[callers]]; the keys are: name, "
        "key_sha256, models, max_streams, requests_per_minute, tokens_per_minute"
    )
    assert done.stderr.strip().splitlines() == [expected]


# --- Redis: counts shared by processes --------------------------------------------------------


@pytest.fixture(scope="module")
def redis_gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    directory = tmp_path_factory.mktemp("callers-redis")
    config = write_config(
        directory,
        caller_table("ci", requests_per_minute=4)
        + caller_table("web", max_streams=1)
        + caller_table("open", tokens_per_minute=10),
    )
    with running_redis(directory) as server:
        env = {"REDIS_URL": server.url, "STREAMGATE_CONFIG": config, "ECHO_DELAY_MS": "20"}
        with gateways(directory, 2, **env) as started:
            yield [url for _, url in started]


def test_two_processes_share_requests_per_minute_through_redis(redis_gateways: list[str]) -> None:
    a, b = redis_gateways
    assert [native(url, "ci").status_code for url in (a, b, a, b)] == [200] * 4
    for url in (a, b):
        refused = native(url, "ci")
        assert refused.status_code == 429 and refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert refused.headers["x-ratelimit-limit-requests"] == "4" and int(refused.headers["retry-after"]) <= 15


def test_two_processes_share_streams_and_tokens_through_redis(redis_gateways: list[str]) -> None:
    a, b = redis_gateways
    text = " ".join(f"w{i}" for i in range(60))  # 1.2 s at ECHO_DELAY_MS=20
    with httpx.stream(
        "POST",
        a + "/api/v1/chat/stream",
        headers=bearer("web"),
        timeout=20,
        json={"provider": "echo", "messages": [{"role": "user", "content": text}]},
    ) as response:
        assert response.status_code == 200
        chunks = response.iter_bytes()
        next(chunks)
        refused = native(b, "web")
        assert refused.status_code == 429 and "max_streams" in refused.json()["error"]["message"]
        assert native(b, "web", stream=False).status_code == 200  # answers are not streams
        assert b"[DONE]" in b"".join(chunks)
    wait_until(lambda: native(b, "web").status_code == 200, "the slot freed on the other process")
    assert native(a, "open").status_code == 200  # 6 tokens of 10
    assert native(a, "open").status_code == 200  # 12: over, the answer still whole
    wait_until(lambda: native(b, "open").status_code == 429, "the tokens charged in Redis")
    refused = native(b, "open")
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.headers["x-ratelimit-limit-tokens"] == "10"


def test_redis_down_refuses_and_a_restarted_redis_is_used_again(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    with running_redis(tmp_path) as server:
        app, echo, _ = app_with(caller_table("ci", requests_per_minute=100), tmp_path, redis_url=server.url)
        with serve(app) as url:
            assert native(url, "ci").status_code == 200
            server.stop()
            down = native(url, "ci")
            assert down.status_code == 502 and down.json()["error"]["type"] == "upstream_error"
            assert "limits store" in down.json()["error"]["message"]
            server.start()  # empty: the scripts are loaded again on NOSCRIPT
            wait_until(lambda: native(url, "ci").status_code == 200, "Redis back")
    assert echo.calls >= 2


def test_limits_and_models_in_the_anthropic_messages_shape(tmp_path: Path) -> None:
    import anthropic

    app, echo, _ = app_with(
        caller_table("ci", requests_per_minute=1) + caller_table("web", models=["openai/*"]), tmp_path
    )
    with serve(app) as url:
        client = anthropic.Anthropic(base_url=url, api_key=KEYS["ci"], max_retries=0)
        answer = client.messages.create(model="echo/echo", max_tokens=64, messages=HELLO)  # type: ignore[arg-type]
        assert answer.content[0].text == "one two three"  # type: ignore[union-attr]
        with pytest.raises(anthropic.RateLimitError) as limited:
            client.messages.create(model="echo/echo", max_tokens=64, messages=HELLO)  # type: ignore[arg-type]
        assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert limited.value.response.headers["x-ratelimit-remaining-requests"] == "0"
        assert int(limited.value.response.headers["retry-after"]) >= 1
        web = anthropic.Anthropic(base_url=url, api_key=KEYS["web"], max_retries=0)
        with pytest.raises(anthropic.PermissionDeniedError):
            web.messages.create(model="echo/echo", max_tokens=64, messages=HELLO)  # type: ignore[arg-type]
        with pytest.raises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=url, api_key="nope", max_retries=0).messages.create(
                model="echo/echo", max_tokens=64, messages=HELLO
            )  # type: ignore[arg-type]
    assert echo.calls == 1
