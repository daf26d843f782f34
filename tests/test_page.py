"""The chat page at `/` in a real browser: Debian's Chromium driven by Playwright, against
our app on a loopback server. Screenshots land in `tests/artifacts/`."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import BrokenAdapter, serve, settings

from streamgate.providers import build_adapters
from streamgate.server import create_app

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

ARTIFACTS = Path(__file__).parent / "artifacts"
ECHO_DELAY_MS = 60
MESSAGE = "Streamgate sends every token the moment it arrives, so you watch the answer grow."


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    test_settings = settings(echo_delay_ms=ECHO_DELAY_MS)
    adapters = {**build_adapters(test_settings), "broken": BrokenAdapter("partial ")}
    with serve(create_app(test_settings, adapters)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, base_url: str) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """The page, loaded, its pickers filled; fails the test on any script error or any
    request that leaves our server."""
    context = browser.new_context(viewport={"width": 1100, "height": 760}, color_scheme="light")
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    foreign: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: None if request.url.startswith(base_url) else foreign.append(request.url))
    page.goto(f"{base_url}/")
    page.wait_for_selector("#provider option[value=echo]", state="attached")
    yield page
    context.close()
    assert errors == []
    assert foreign == []


def last_reply(page, state: str):  # type: ignore[no-untyped-def]
    """The last assistant message, once it is in `state`."""
    return page.wait_for_selector(f".msg.assistant:last-of-type[data-state={state}]", timeout=10_000)


def text_of(reply, selector: str) -> str:  # type: ignore[no-untyped-def]
    return reply.query_selector(selector).text_content()


def record_reply_states(page) -> None:  # type: ignore[no-untyped-def]
    """Record the text of the last assistant message at every change, in `window.states`."""
    page.evaluate("""() => {
        window.states = [];
        new MutationObserver(() => {
            const text = document.querySelector(".msg.assistant:last-of-type .text");
            if (text) window.states.push(text.textContent);
        }).observe(document.getElementById("log"), {subtree: true, childList: true, characterData: true});
    }""")


def test_the_pickers_come_from_the_health_endpoint(page) -> None:  # type: ignore[no-untyped-def]
    options = page.eval_on_selector_all(
        "#provider option", "options => options.map(o => [o.value, o.disabled])"
    )
    assert ["echo", False] in options and ["openai", True] in options  # no key: not selectable
    assert page.input_value("#provider") == "echo"
    assert page.get_attribute("#model", "placeholder") == "echo"


def test_a_reply_grows_token_by_token_and_the_history_is_sent(page, base_url: str) -> None:  # type: ignore[no-untyped-def]
    record_reply_states(page)
    page.fill("#prompt", MESSAGE)
    page.press("#prompt", "Enter")
    reply = last_reply(page, "done")

    assert text_of(reply, ".text") == MESSAGE
    states = list(dict.fromkeys(page.evaluate("window.states")))
    growing = [state for state in states if state and state != MESSAGE]
    assert len(growing) >= 3, states
    assert all(later.startswith(earlier) for earlier, later in zip(states, states[1:]))
    words = len(MESSAGE.split())
    stats = reply.query_selector(".meta").inner_text()
    assert stats.startswith("TTFT ") and " tok/s" in stats, stats
    assert stats.endswith(f"{words} in · {words} out · {2 * words} tokens"), stats
    assert page.input_value("#prompt") == ""

    with page.expect_request(f"{base_url}/api/v1/chat/stream") as sent:
        page.click(".system summary")
        page.fill("#system", "Be brief.")
        page.fill("#prompt", "And again, please.")
        page.click("#send")
    last_reply(page, "done")
    assert json.loads(sent.value.post_data)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": MESSAGE},
        {"role": "assistant", "content": MESSAGE},
        {"role": "user", "content": "And again, please."},
    ]

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page-light.png")
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=ARTIFACTS / "page-dark.png")
    page.set_viewport_size({"width": 390, "height": 760})
    page.screenshot(path=ARTIFACTS / "page-phone-dark.png")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling


def test_stop_aborts_a_slow_stream_and_the_server_lets_go(page, base_url: str) -> None:  # type: ignore[no-untyped-def]
    """Also: while the reply outgrows the window, its newest line stays in view."""
    page.set_viewport_size({"width": 1100, "height": 500})
    long_message = "\n".join(f"line {i}" for i in range(200))
    page.fill("#prompt", long_message)
    page.click("#send")
    page.wait_for_function(
        "document.querySelector('.msg.assistant:last-of-type .text').textContent.includes('line 15')"
    )
    log_gap = "(log => log.scrollHeight - log.clientHeight - log.scrollTop)(document.getElementById('log'))"
    assert page.evaluate("document.getElementById('log').scrollTop") > 0
    assert page.evaluate(log_gap) < 2
    page.click("#stop")
    reply = last_reply(page, "stopped")

    shown = text_of(reply, ".text")
    assert shown and long_message.startswith(shown) and shown != long_message
    assert "stopped" in reply.query_selector(".meta").inner_text()
    assert page.is_visible("#send") and not page.is_visible("#stop")
    deadline = time.monotonic() + 2
    while echo_streams_in_flight(base_url) != 0:
        assert time.monotonic() < deadline, "the server still streams after Stop"
        time.sleep(0.05)
    time.sleep(3 * ECHO_DELAY_MS / 1000)
    assert text_of(reply, ".text") == shown


def echo_streams_in_flight(base_url: str) -> float:
    families = text_string_to_metric_families(httpx.get(f"{base_url}/metrics").text)
    gauge = next(family for family in families if family.name == "streamgate_streams_in_flight")
    return next(sample.value for sample in gauge.samples if sample.labels == {"provider": "echo"})


def test_a_request_the_server_rejects_is_shown_in_the_conversation(page) -> None:  # type: ignore[no-untyped-def]
    page.fill("#model", "no-such-model")
    page.fill("#prompt", "Hello")
    page.click("#send")
    reply = last_reply(page, "error")
    assert text_of(reply, ".error") == (
        "model_not_supported (HTTP 422): model 'no-such-model' is not supported by echo; supported: echo"
    )
    assert page.is_visible("#send")


def test_an_error_frame_mid_stream_is_shown_after_the_text(page) -> None:  # type: ignore[no-untyped-def]
    page.select_option("#provider", "broken")
    page.fill("#prompt", "Hello")
    page.click("#send")
    reply = last_reply(page, "error")
    assert text_of(reply, ".text") == "partial "
    assert text_of(reply, ".error") == "upstream_error: the upstream broke off mid-stream"


SSE_BODY = (
    'id: 1\r\nevent: message\r\ndata: {"content":"h€llo 👋"}\r\n\r\n'
    ": keep-alive\r\r"
    "data: a\rdata:b\r\r"
    'event: error\ndata: {"x":1}\n\n'
    "data: [DONE]\n\n"
)


def test_the_sse_reader_survives_any_split_of_the_bytes(page) -> None:  # type: ignore[no-untyped-def]
    """The page's own `readEvents`, fed the body in two reads split at every byte: CRLF,
    CR and multi-byte characters cut in half must not change a single event."""
    results = page.evaluate("""async (raw) => {
        const bytes = new TextEncoder().encode(raw);
        const results = new Set();
        for (let cut = 0; cut <= bytes.length; cut++) {
            const events = [];
            const body = new ReadableStream({start(controller) {
                controller.enqueue(bytes.slice(0, cut));
                controller.enqueue(bytes.slice(cut));
                controller.close();
            }});
            await readEvents(body, (type, data) => events.push([type, data]));
            results.add(JSON.stringify(events));
        }
        return [...results];
    }""", SSE_BODY)
    assert [json.loads(result) for result in results] == [[
        ["message", '{"content":"h€llo 👋"}'],
        ["message", "a\nb"],
        ["error", '{"x":1}'],
        ["message", "[DONE]"],
    ]]


def test_with_a_gateway_key_the_page_asks_for_it(browser) -> None:  # type: ignore[no-untyped-def]
    with serve(create_app(settings(gateway_api_key="sekret"))) as url:
        page = browser.new_page()
        page.set_default_timeout(10_000)
        page.goto(f"{url}/")
        reply = last_reply(page, "error")
        assert text_of(reply, ".error").startswith("unauthorized (HTTP 401): ")
        page.fill("#key", "sekret")
        page.press("#key", "Tab")  # `change` reloads the pickers with the key
        page.wait_for_selector("#provider option[value=echo]", state="attached")
        page.fill("#prompt", "Hello with a key")
        page.press("#prompt", "Enter")
        assert text_of(last_reply(page, "done"), ".text") == "Hello with a key"
        page.close()
