"""Who may call the gateway (`http_guards.py`) and bodies that must never reach a 5xx:
the `Host` check (DNS rebinding), the `Origin` check (cross-site pages), CORS preflights,
bearer auth under any ASGI `root_path`, and the nesting limit of `pipeline.decode_json`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from msgspec.structs import replace
from processes import ROOT, wait_until_answering
from streamgate.app import create_app
from streamgate.chat_types import chat_request_decoder
from streamgate.errors import InvalidJSONError
from streamgate.http_guards import MAX_ACCEPTED_HOSTS, OriginGuard, host_allowed, same_origin, split_host
from streamgate.json_depth import MAX_DEPTH, nesting_depth
from streamgate.pipeline import MAX_LOG_FIELD, decode_json
from streamgate.providers.echo import EchoAdapter
from streamgate.providers.openai_stream import OpenAIStreamAdapter
from streamgate.settings import ANY_IP, LOOPBACK_HOSTS, Settings, redacted
from support import closed_port, serve, settings
from wire_openai import MockUpstream, Reply, completion

HELLO = {"provider": "echo", "messages": [{"role": "user", "content": "Hello there"}]}
V1_HELLO = {"model": "echo/echo", "messages": [{"role": "user", "content": "Hello there"}], "stream": True}
EVIL = "http://evil.example"
KEY = "s3cret"


def echo_app(**overrides: Any):  # type: ignore[no-untyped-def]
    return create_app(settings(**overrides), adapters={"echo": EchoAdapter(0)})


def post(url: str, body: Any = HELLO, path: str = "/api/v1/chat/stream", **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(url + path, content=content, timeout=10, **kwargs)


def assert_native_error(response: httpx.Response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["type"] == error_type


def assert_openai_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code


# --- Origin ------------------------------------------------------------------------------


def test_a_cross_site_post_is_refused_before_any_upstream_work() -> None:
    upstream = MockUpstream()
    config = settings(openai_api_key="sk-test", openai_base_url="http://upstream.test/v1")
    app = create_app(config, adapters={"openai": OpenAIStreamAdapter(config, http_client=upstream.client())})
    body = {"provider": "openai", "messages": [{"role": "user", "content": "spend my key"}]}
    with serve(app) as url:
        # A form or `fetch(..., {mode: "no-cors"})` with text/plain: no preflight, so only the
        # server can stop it.
        simple = {"origin": EVIL, "content-type": "text/plain"}
        assert_native_error(post(url, body, headers=simple), 403, "forbidden_origin")
        assert_native_error(post(url, body, "/api/v1/chat", headers=simple), 403, "forbidden_origin")
        v1 = {"model": "gpt-4o", "messages": body["messages"], "stream": True}
        assert_openai_error(post(url, v1, "/v1/chat/completions", headers=simple), 403, "forbidden_origin")
        assert_native_error(httpx.get(url + "/api/v1/chat/stream/health", headers=simple), 403, "forbidden_origin")
        assert upstream.seen == []
        refused = post(url, body, headers=simple)
        assert "access-control-allow-origin" not in refused.headers
        assert "evil.example" in refused.json()["error"]["message"]


def test_the_page_works_same_origin_with_no_configuration() -> None:
    with serve(echo_app(allowed_hosts=LOOPBACK_HOSTS)) as url:
        assert httpx.get(url + "/").status_code == 200
        same = post(url, headers={"origin": url, "content-type": "text/plain;charset=UTF-8"})
        assert same.status_code == 200
        assert "access-control-allow-origin" not in same.headers and "vary" not in same.headers
        assert same.content.endswith(b"data: [DONE]\n\n")
        health = httpx.get(url + "/api/v1/chat/stream/health", headers={"origin": url})
        assert health.status_code == 200
        # Loopback aliases are other origins, as the browser sees them.
        port = url.rsplit(":", 1)[1]
        for other in (f"http://localhost:{port}", f"https://127.0.0.1:{port}", "http://127.0.0.1:1", "null"):
            assert_native_error(post(url, headers={"origin": other}), 403, "forbidden_origin")


def test_cors_origins_allow_a_page_elsewhere_and_its_preflight_needs_no_token() -> None:
    app = echo_app(cors_origins=("https://App.example/",), gateway_api_key=KEY)
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, x-stainless-os",
    }
    with serve(app) as url:
        allowed = httpx.options(url + "/api/v1/chat/stream", headers={"origin": "https://app.example", **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        v1 = httpx.options(url + "/v1/chat/completions", headers={"origin": "https://app.example", **preflight})
        assert v1.status_code == 200
        refused = httpx.options(url + "/api/v1/chat/stream", headers={"origin": EVIL, **preflight})
        assert_native_error(refused, 403, "forbidden_origin")
        # Without the token the page can read why (the 401 carries the CORS headers).
        unauthorized = post(url, headers={"origin": "https://app.example"})
        assert_native_error(unauthorized, 401, "unauthorized")
        assert unauthorized.headers["access-control-allow-origin"] == "https://app.example"
        streamed = post(url, headers={"origin": "https://app.example", "authorization": f"Bearer {KEY}"})
        assert streamed.status_code == 200 and streamed.content.endswith(b"data: [DONE]\n\n")
        assert streamed.headers["access-control-allow-origin"] == "https://app.example"


def test_cors_origins_star_allows_any_origin() -> None:
    with serve(echo_app(cors_origins=("*",))) as url:
        response = post(url, headers={"origin": EVIL})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"


def test_hosts_and_origins_are_compared_as_browsers_send_them() -> None:
    assert split_host("Example.COM:8000") == ("example.com", 8000)
    assert split_host("[::1]:8000") == ("[::1]", 8000)
    assert split_host("[::1]") == ("[::1]", None)
    assert split_host("localhost") == ("localhost", None)
    assert split_host("localhost:x") is None
    assert same_origin(b"http://127.0.0.1:8000", b"127.0.0.1:8000", "http")
    assert same_origin(b"https://gw.example", b"gw.example", "https")
    assert same_origin(b"https://gw.example", b"gw.example:443", "https")
    assert same_origin(b"http://[::1]:8000", b"[::1]:8000", "http")
    assert not same_origin(b"https://gw.example", b"gw.example", "http")  # TLS proxy: see README
    assert not same_origin(b"http://gw.example:8000", b"gw.example:8001", "http")
    assert not same_origin(b"http://localhost:8000", b"127.0.0.1:8000", "http")
    assert not same_origin(b"null", b"127.0.0.1:8000", "http")
    assert not same_origin(b"http://127.0.0.1:8000/x", b"127.0.0.1:8000", "http")
    assert not same_origin(b"http://127.0.0.1:8000", None, "http")
    allowed = frozenset({"localhost", "gw.example:8443"})
    assert host_allowed(b"LocalHost:8000", allowed) and host_allowed(b"localhost", allowed)
    assert host_allowed(b"gw.example:8443", allowed)
    assert not host_allowed(b"gw.example", allowed) and not host_allowed(b"gw.example:443", allowed)
    assert not host_allowed(b"localhost.:8000", allowed) and not host_allowed(b"localhost:x", allowed)
    assert not host_allowed(None, allowed)


def test_a_refused_chat_request_is_counted_by_its_type() -> None:
    from test_metrics import delta, key, scrape

    with serve(echo_app(allowed_hosts=LOOPBACK_HOSTS)) as url:
        before = scrape(url)
        assert post(url, headers={"origin": EVIL}).status_code == 403
        assert post(url, V1_HELLO, "/v1/chat/completions", headers={"host": "evil.example"}).status_code == 400
        assert httpx.get(url + "/api/v1/chat/stream/health", headers={"origin": EVIL}).status_code == 403
        after = scrape(url)
    assert delta(before, after) == {
        key("streamgate_requests_total", provider="unknown"): 2,
        key("streamgate_errors_total", provider="unknown", type="forbidden_origin"): 1,
        key("streamgate_errors_total", provider="unknown", type="invalid_host"): 1,
    }


# --- Host ---------------------------------------------------------------------------------


def test_a_host_outside_allowed_hosts_is_refused_on_every_route() -> None:
    with serve(echo_app(allowed_hosts=LOOPBACK_HOSTS)) as url:
        port = url.rsplit(":", 1)[1]
        rebound = {"host": f"evil.example:{port}"}
        assert_native_error(post(url, headers=rebound), 400, "invalid_host")
        assert_native_error(post(url, path="/api/v1/chat", headers=rebound), 400, "invalid_host")
        assert_openai_error(post(url, V1_HELLO, "/v1/chat/completions", headers=rebound), 400, "invalid_host")
        assert_openai_error(httpx.get(url + "/v1/models", headers=rebound), 400, "invalid_host")
        for path in ("/", "/static/app.js", "/metrics", "/api/v1/chat/stream/health"):
            assert_native_error(httpx.get(url + path, headers=rebound), 400, "invalid_host")
        # The origin of a rebound page is its own Host: the Host check is what stops it.
        assert_native_error(
            post(url, headers={**rebound, "origin": f"http://evil.example:{port}"}), 400, "invalid_host"
        )
        for host in (f"localhost:{port}", f"LOCALHOST:{port}", "127.0.0.1", f"[::1]:{port}"):
            assert post(url, headers={"host": host}).status_code == 200, host


def test_the_host_guard_remembers_only_hosts_it_accepted_and_a_bounded_number() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = OriginGuard(app, LOOPBACK_HOSTS)

    def status(host: bytes) -> int:
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/", "scheme": "http", "headers": [(b"host", host)]}
        asyncio.run(guard(scope, None, send))  # type: ignore[arg-type]
        return int(sent[0]["status"])

    for _ in range(2):  # the second time from what the guard remembers
        assert status(b"localhost:8000") == 204
        assert status(b"evil.example:8000") == 400
    assert guard.accepted_hosts == {b"localhost:8000"}
    for port in range(MAX_ACCEPTED_HOSTS + 10):
        assert status(b"127.0.0.1:%d" % port) == 204
    assert len(guard.accepted_hosts) == MAX_ACCEPTED_HOSTS
    assert status(b"evil.example:8000") == 400


def test_behind_a_tls_proxy_the_page_is_same_origin_with_x_forwarded_proto() -> None:
    """uvicorn trusts `X-Forwarded-Proto` from 127.0.0.1: the page's `https://` origin matches."""
    with serve(echo_app(allowed_hosts=("gw.example",))) as url:
        page = {"host": "gw.example", "origin": "https://gw.example"}
        assert post(url, headers={**page, "x-forwarded-proto": "https"}).status_code == 200
        assert_native_error(post(url, headers=page), 403, "forbidden_origin")


def test_any_host_when_allowed_hosts_is_empty() -> None:
    with serve(echo_app(allowed_hosts=())) as url:
        assert post(url, headers={"host": "gw.example"}).status_code == 200


# --- bearer auth --------------------------------------------------------------------------


def test_the_bearer_scheme_is_case_insensitive() -> None:
    with serve(echo_app(gateway_api_key=KEY)) as url:
        for value in (f"bearer {KEY}", f"BEARER {KEY}", f"Bearer {KEY}", f"Bearer  {KEY}"):
            assert post(url, headers={"authorization": value}).status_code == 200, value
        for value in (f"Basic {KEY}", KEY, f"Bearer{KEY}", f"Bearer {KEY}x", "Bearer", ""):
            assert_native_error(post(url, headers={"authorization": value}), 401, "unauthorized")


def test_every_401_says_www_authenticate_bearer() -> None:
    config = settings(gateway_api_key=KEY)
    adapters = {"echo": EchoAdapter(0), "openai": OpenAIStreamAdapter(config, http_client=MockUpstream().client())}
    with serve(create_app(config, adapters=adapters)) as url:
        refusals = [
            post(url),
            post(url, path="/api/v1/chat"),
            httpx.get(url + "/api/v1/chat/stream/health"),
            post(url, V1_HELLO, "/v1/chat/completions"),
            httpx.get(url + "/v1/models"),
        ]
        for response in refusals:
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
        # The provider's key missing is a 401 too.
        no_key = post(url, {**HELLO, "provider": "openai"}, headers={"authorization": f"Bearer {KEY}"})
        assert_native_error(no_key, 401, "provider_auth_error")
        assert no_key.headers["www-authenticate"] == "Bearer"


def test_auth_holds_under_a_root_path_in_the_scope() -> None:
    """Both forms of `root_path`: in `path` (uvicorn's, the ASGI spec's) and beside it."""

    async def requests() -> None:
        transport = httpx.ASGITransport(app=echo_app(gateway_api_key=KEY), root_path="/gw")
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for prefix in ("/gw", ""):
                for path, body in (
                    ("/api/v1/chat/stream", HELLO),
                    ("/api/v1/chat", HELLO),
                    ("/v1/chat/completions", V1_HELLO),
                ):
                    refused = await client.post(prefix + path, json=body)
                    assert refused.status_code == 401, (prefix, path)
                    answered = await client.post(prefix + path, json=body, headers={"authorization": f"Bearer {KEY}"})
                    assert answered.status_code == 200, (prefix, path)
                assert (await client.get(prefix + "/api/v1/chat/stream/health")).status_code == 401
                assert (await client.get(prefix + "/v1/models")).status_code == 401

    asyncio.run(requests())


@contextmanager
def uvicorn_process(tmp_path: Path, *args: str, **env: str) -> Iterator[str]:
    """`uvicorn streamgate.server:app *args` on 127.0.0.1, from a directory without `.env`."""
    port = closed_port()
    environment = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    environment.update({"ECHO_DELAY_MS": "0", **env})
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "streamgate.server:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *args,
        ],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(process, url + "/")
        yield url
    finally:
        process.kill()
        process.wait(10)


def test_auth_holds_under_uvicorn_root_path(tmp_path: Path) -> None:
    with uvicorn_process(tmp_path, "--root-path", "/gw", GATEWAY_API_KEY=KEY) as url:
        for path in ("/api/v1/chat/stream", "/api/v1/chat"):
            assert_native_error(post(url, HELLO, path), 401, "unauthorized")
            assert post(url, HELLO, path, headers={"authorization": f"Bearer {KEY}"}).status_code == 200
        assert_openai_error(post(url, V1_HELLO, "/v1/chat/completions"), 401, "unauthorized")
        v1 = post(url, V1_HELLO, "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"})
        assert v1.status_code == 200 and v1.content.endswith(b"data: [DONE]\n\n")
        assert httpx.get(url + "/api/v1/chat/stream/health").status_code == 401
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/").status_code == 200


# --- nesting ------------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    """A chat request `depth` (3 or more) levels deep (the top-level object is level 1)."""
    inner = depth - 1
    return (
        b'{"provider":"echo","messages":[{"role":"user","content":"hi"}],"extra":'
        + b'{"a":[' * (inner // 2)
        + b"{}" * (inner % 2)
        + b"1" * (1 - inner % 2)
        + b"]}" * (inner // 2)
        + b"}"
    )


def test_nesting_depth_counts_objects_and_arrays_outside_strings() -> None:
    assert nesting_depth(b"1") == 0
    assert nesting_depth(b'{"a": [1, {"b": []}], "c": {}}') == 4
    assert nesting_depth(b'{"a": "[[[{{{\\"[[[", "b": ["}}}"]}') == 2
    assert nesting_depth(b'{"a": "x\\\\", "b": [[1]], "c": "\\\\\\"{"}') == 3
    for depth in (3, 4, 63, 64, 65, 1000):
        assert nesting_depth(nested(depth)) == depth
    json.loads(nested(65))  # the helper writes JSON


def test_a_request_up_to_64_levels_deep_is_accepted_and_deeper_is_invalid_json() -> None:
    assert MAX_DEPTH == 64
    decode_json(nested(64), chat_request_decoder)
    for depth in (65, 999, 100_000):
        with pytest.raises(InvalidJSONError, match="64"):
            decode_json(nested(depth), chat_request_decoder)
    deep_in_a_string = b'{"provider":"echo","messages":[{"role":"user","content":"' + b"[" * 100 + b'"}]}'
    assert decode_json(deep_in_a_string, chat_request_decoder).messages[0].content == "[" * 100
    with serve(echo_app()) as url:
        assert post(url, nested(64)).status_code == 200
        assert_native_error(post(url, nested(65)), 400, "invalid_json")
        assert_native_error(post(url, nested(100_000)), 400, "invalid_json")
        v1_deep = (
            b'{"model":"echo/echo","messages":[{"role":"user","content":"hi"}],"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
        )
        assert_openai_error(post(url, v1_deep, "/v1/chat/completions"), 400, "invalid_json")


def test_an_allowed_upstream_call_still_goes_through() -> None:
    """The guards in front of a real upstream call: an allowed origin reaches it once."""
    upstream = MockUpstream(Reply(200, [completion(["Hi"])]))
    config = settings(
        openai_api_key="sk-test",
        openai_base_url="http://upstream.test/v1",
        cors_origins=("https://app.example",),
        allowed_hosts=LOOPBACK_HOSTS,
    )
    app = create_app(config, adapters={"openai": OpenAIStreamAdapter(config, http_client=upstream.client())})
    body = {"provider": "openai", "messages": [{"role": "user", "content": "hi"}]}
    with serve(app) as url:
        answer = post(url, body, headers={"origin": "https://app.example"})
        assert answer.status_code == 200 and b'"content":"Hi"' in answer.content
    assert len(upstream.seen) == 1


# --- a non-loopback HOST (a container's 0.0.0.0) --------------------------------------------


def test_a_non_loopback_host_accepts_ip_literals_localhost_and_this_machine_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The review's rebinding: with `HOST=0.0.0.0` and no `ALLOWED_HOSTS` a page at a name
    rebound to the gateway spent the key. Now only names that cannot be rebound pass."""
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.delenv("ALLOWED_HOSTS", raising=False)
    config = Settings.from_env()
    assert config.allowed_hosts == ("localhost", socket.gethostname(), ANY_IP)
    app = create_app(replace(config, echo_delay_ms=0.0, model_catalog_refresh_s=0.0), adapters={"echo": EchoAdapter(0)})
    with serve(app) as url:
        port = url.rsplit(":", 1)[1]
        for host in (
            f"127.0.0.1:{port}",
            "10.1.2.3:8000",
            "[::1]",
            f"[fe80::1]:{port}",
            f"localhost:{port}",
            f"{socket.gethostname()}:{port}",
            "192.168.0.7",
        ):
            assert post(url, headers={"host": host}).status_code == 200, host
        for host in (f"evil.example:{port}", "rebind.attacker.test", "127.0.0.1.nip.io", "1.2.3.4.evil", "0x7f.1"):
            refused = post(url, headers={"host": host})
            assert_native_error(refused, 400, "invalid_host")
            assert "ALLOWED_HOSTS" in refused.json()["error"]["message"]
            assert_native_error(httpx.get(url + "/metrics", headers={"host": host}), 400, "invalid_host")
    monkeypatch.setenv("ALLOWED_HOSTS", "gw.example")
    listed = Settings.from_env()
    assert listed.allowed_hosts == ("gw.example",)
    monkeypatch.setenv("HOST", "127.0.0.1")
    monkeypatch.delenv("ALLOWED_HOSTS")
    assert Settings.from_env().allowed_hosts == LOOPBACK_HOSTS


def test_the_start_says_which_hosts_are_accepted(tmp_path: Path) -> None:
    port = closed_port()
    environment = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "ALLOWED_HOSTS"}
    environment.update({"HOST": "0.0.0.0", "PORT": str(port)})
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "server.py")],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_answering(process, f"http://127.0.0.1:{port}/api/v1/chat/stream/health")
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    line = next(line for line in output.splitlines() if "accepting Host" in line)
    assert f"localhost, {socket.gethostname()}, any IP address" in line and "ALLOWED_HOSTS" in line, line


# --- the page's headers, /metrics -------------------------------------------------------------


def test_the_page_cannot_be_framed() -> None:
    with serve(echo_app(allowed_hosts=LOOPBACK_HOSTS)) as url:
        pages = [httpx.get(url + path) for path in ("/", "/static/index.html", "/static/app.js")]
    for page in pages:
        assert page.status_code == 200
        policy = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy and "default-src 'self'" in policy
        assert page.headers["x-frame-options"] == "DENY"
    assert b"http-equiv" not in pages[0].content  # one policy, the header's


def test_metrics_need_the_key_unless_metrics_public() -> None:
    with serve(echo_app(gateway_api_key=KEY)) as url:
        assert_native_error(httpx.get(url + "/metrics"), 401, "unauthorized")
        assert_native_error(httpx.get(url + "/metrics/", headers={"authorization": "Bearer nope"}), 401, "unauthorized")
        scraped = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {KEY}"})
        assert scraped.status_code == 200 and b"streamgate_requests_total" in scraped.content
        assert httpx.get(url + "/").status_code == 200  # the page itself needs no key
    with serve(echo_app(gateway_api_key=KEY, metrics_public=True)) as url:
        assert httpx.get(url + "/metrics").status_code == 200
    with serve(echo_app()) as url:
        assert httpx.get(url + "/metrics").status_code == 200  # no key set: open, as before


# --- the request log ----------------------------------------------------------------------------


def access_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    deadline = time.monotonic() + 5
    while True:
        lines = [r.getMessage() for r in caplog.records if r.name == "streamgate.access"]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def test_a_request_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamgate.access")
    forged = "gpt-4o\r\n2026-12-07 10:00:00 INFO streamgate.access: POST /admin 200 \x1b[2J" + "x" * 5000
    with serve(echo_app()) as url:
        answered = post(url, {**HELLO, "model": forged})
        assert answered.status_code == 422  # echo has no such model
        v1 = post(url, {**V1_HELLO, "model": "echo/" + forged}, "/v1/chat/completions")
        assert v1.status_code in (400, 404, 422)
        lines = access_lines(caplog, 2)
    assert len(lines) == 2
    for line in lines:
        assert line.isprintable() and "\x1b" not in line and len(line) < MAX_LOG_FIELD * 3, line
        assert " INFO streamgate.access: POST /admin" not in line
    assert "gpt-4o\\r\\n2026-12-07\\x2010:00:00" in lines[0] and "..." in lines[0]


def test_refusals_by_the_guards_are_in_the_request_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamgate.access")
    with serve(echo_app(gateway_api_key=KEY, allowed_hosts=LOOPBACK_HOSTS, max_body_bytes=100)) as url:
        auth = {"authorization": f"Bearer {KEY}"}
        assert post(url).status_code == 401
        assert post(url, headers={**auth, "host": "evil.example"}).status_code == 400
        assert post(url, headers={**auth, "origin": EVIL}).status_code == 403
        assert post(url, V1_HELLO, "/v1/chat/completions", headers={**auth, "origin": EVIL}).status_code == 403
        assert post(url, {**HELLO, "pad": "x" * 200}, headers=auth).status_code == 413
        assert httpx.get(url + "/metrics").status_code == 401
        lines = access_lines(caplog, 6)
    assert [line.split(" error=")[0] for line in lines] == [
        "POST /api/v1/chat/stream 401 provider=- model=-",
        "POST /api/v1/chat/stream 400 provider=- model=-",
        "POST /api/v1/chat/stream 403 provider=- model=-",
        "POST /v1/chat/completions 403 provider=- model=-",
        "POST /api/v1/chat/stream 413 provider=- model=-",
        "GET /metrics 401 provider=- model=-",
    ]
    assert [line.split(" error=")[1] for line in lines] == [
        "unauthorized",
        "invalid_host",
        "forbidden_origin",
        "forbidden_origin",
        "body_too_large",
        "unauthorized",
    ]


def test_passwords_in_urls_are_redacted() -> None:
    assert redacted("redis://:hunter2@h:6379/0") == "redis://:***@h:6379/0"
    assert redacted("rediss://user:hunter2@h/0?password=hunter3&db=1") == "rediss://user:***@h/0?password=***&db=1"
    assert redacted("failed for url 'https://u:pw@proxy.example/v1/models?key=AIza1'") == (
        "failed for url 'https://u:***@proxy.example/v1/models?key=***'"
    )
    assert redacted("https://api.openai.com/v1") == "https://api.openai.com/v1"
