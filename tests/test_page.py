"""The chat page at `/` in a real browser: Debian's Chromium driven by Playwright, against
our app on a loopback server (the `echo` provider, or `openai` and `gemini` over upstreams
sending those APIs' own wire bytes). Screenshots land in `tests/artifacts/`."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import struct
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from streamgate.app import create_app
from streamgate.providers import build_adapters
from streamgate.providers.echo import EchoAdapter
from streamgate.providers.gemini_stream import GeminiStreamAdapter
from streamgate.providers.openai_stream import OpenAIStreamAdapter
from support import BrokenAdapter, serve, settings
from test_gemini_stream import frame, function_call, sdk_stream, text, thought, usage_metadata
from test_gemini_stream import sse_body as gemini_sse_body
from wire_openai import MockUpstream, Reply, completion, split

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


@contextmanager
def opened(browser, base_url: str) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """The page, loaded, its pickers filled; fails the test on any script error or any
    request that leaves our server."""
    # `bypass_csp`: Playwright's `wait_for_function` evaluates strings, which the page's CSP
    # forbids; the tests here check the sanitiser alone (`test_the_csp_...` the CSP alone).
    context = browser.new_context(viewport={"width": 1100, "height": 760}, color_scheme="light", bypass_csp=True)
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


@pytest.fixture
def page(browser, base_url: str) -> Iterator[object]:  # type: ignore[no-untyped-def]
    with opened(browser, base_url) as page:
        yield page


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
    options = page.eval_on_selector_all("#provider option", "options => options.map(o => [o.value, o.disabled])")
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
    results = page.evaluate(
        """async (raw) => {
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
    }""",
        SSE_BODY,
    )
    assert [json.loads(result) for result in results] == [
        [
            ["message", '{"content":"h€llo 👋"}'],
            ["message", "a\nb"],
            ["error", '{"x":1}'],
            ["message", "[DONE]"],
        ]
    ]


def test_with_a_gateway_key_the_page_asks_for_it(browser) -> None:  # type: ignore[no-untyped-def]
    with serve(create_app(settings(gateway_api_key="sekret"))) as url:
        page = browser.new_page()
        page.set_default_timeout(10_000)
        page.goto(f"{url}/")
        reply = last_reply(page, "error")
        assert text_of(reply, ".error") == (
            "unauthorized (HTTP 401): This gateway needs a key: enter it in “Gateway key” above."
        )
        assert page.evaluate("document.activeElement.id") == "key"
        assert page.locator("#provider option").all_inner_texts() == ["enter the gateway key first"]
        page.fill("#key", "sekret")
        page.press("#key", "Tab")  # `change` reloads the pickers with the key
        page.wait_for_selector("#provider option[value=echo]", state="attached")
        page.fill("#prompt", "Hello with a key")
        page.press("#prompt", "Enter")
        assert text_of(last_reply(page, "done"), ".text") == "Hello with a key"
        page.close()


# --- Markdown, safely ---------------------------------------------------------------------

MARKDOWN = (
    "# Plan\n\nSome **bold** and *em*, a [link](https://example.com/docs) and a list:\n\n"
    '- one\n- two\n\n```python\nprint("hi")\nfor word in words:\n    print(word)\n```\n\n'
    "| a | b |\n|---|---|\n| 1 | 2 |"
)


def test_an_answer_renders_as_markdown_while_the_question_stays_plain_text(page) -> None:  # type: ignore[no-untyped-def]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    record_reply_states(page)
    page.fill("#prompt", MARKDOWN)
    page.click("#send")
    reply = last_reply(page, "done")

    assert text_of(page, ".msg.user .text") == MARKDOWN  # the question as typed, no HTML made of it
    assert page.query_selector(".msg.user h1") is None
    assert text_of(reply, ".text h1") == "Plan"
    assert text_of(reply, ".text strong") == "bold" and text_of(reply, ".text em") == "em"
    assert reply.eval_on_selector_all(".text li", "items => items.map(i => i.textContent)") == ["one", "two"]
    link = reply.query_selector(".text a")
    assert (link.get_attribute("href"), link.get_attribute("target"), link.get_attribute("rel")) == (
        "https://example.com/docs",
        "_blank",
        "noopener noreferrer",
    )
    assert reply.eval_on_selector_all(".text td", "cells => cells.map(c => c.textContent)") == ["1", "2"]
    code = reply.query_selector(".text pre > code")
    assert code.text_content() == 'print("hi")\nfor word in words:\n    print(word)\n'
    assert code.get_attribute("class") == "language-python"
    assert len(set(page.evaluate("window.states"))) >= 10  # rendered as it grew, word by word

    reply.query_selector(".text pre .copy").click()
    page.wait_for_function("document.querySelector('.msg.assistant .copy').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == code.text_content()


HOSTILE = (
    'Hi <img src=x onerror="window.__pwned=1"> <script>window.__pwned=1</script> '
    '[click](javascript:window.__pwned=1) <a href="javascript:window.__pwned=1" id=raw>raw</a> '
    '<svg onload="window.__pwned=1"></svg> <iframe src="javascript:window.__pwned=1"></iframe> '
    '<p style="position:fixed;inset:0" class="error">cover</p> ![x](https://tracker.example/pixel.png) **done**'
)


def test_html_in_an_answer_never_runs(page) -> None:  # type: ignore[no-untyped-def]
    """Sanitised on every render, also while a tag is only half streamed; nothing loads
    from elsewhere (the fixture fails on any foreign request, such as the tracking pixel)."""
    page.evaluate("""() => {  // every element ever inserted into the conversation that could run or load
        window.inserted = [];
        new MutationObserver((records) => {
            for (const record of records) for (const node of record.addedNodes) {
                if (node.nodeType !== 1) continue;
                for (const element of [node, ...node.querySelectorAll("*")]) {
                    const risky = ["IMG", "SCRIPT", "SVG", "IFRAME"].includes(element.tagName.toUpperCase())
                        || [...element.attributes].some(a => a.name.startsWith("on") || a.name === "style");
                    if (risky) window.inserted.push(element.outerHTML);
                }
            }
        }).observe(document.getElementById("log"), {subtree: true, childList: true});
    }""")
    page.fill("#prompt", HOSTILE)
    page.click("#send")
    reply = last_reply(page, "done")

    assert text_of(reply, ".text strong") == "done"
    for link in reply.query_selector_all(".text a"):
        assert link.get_attribute("href") is None
        link.click()
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert (
        page.eval_on_selector_all(
            "#log img, #log script, #log svg, #log iframe, #log [onerror], #log [onload], #log [style]",
            "found => found.length",
        )
        == 0
    )
    assert page.evaluate("window.inserted") == []  # not even for a moment, while a tag was half streamed
    assert reply.query_selector(".text p.error") is None  # no page classes from an answer
    assert text_of(page, ".msg.user .text") == HOSTILE


def test_the_csp_stops_inline_script_and_foreign_loads_even_past_the_sanitiser(browser, base_url: str) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(f"{base_url}/")
    page.wait_for_selector("#provider option[value=echo]", state="attached")
    page.evaluate("""() => new Promise((resolve) => {
        window.violations = [];
        document.addEventListener("securitypolicyviolation", (event) => {
            window.violations.push(event.effectiveDirective);
            if (window.violations.length === 3) resolve();
        });
        document.getElementById("log").insertAdjacentHTML("beforeend",
            '<img src="https://tracker.example/pixel.png" onerror="window.__pwned=1">' +
            '<img src="data:," onerror="window.__pwned=1">');
    })""")
    # the foreign image is not fetched; neither image's `onerror` runs
    assert sorted(page.evaluate("window.violations")) == ["img-src", "script-src-attr", "script-src-attr"]
    assert page.evaluate("typeof window.__pwned") == "undefined"
    page.close()


# --- upstream-backed providers: images, reasoning, tool calls ----------------------------

OPENAI_KEY = "sk-test-0123456789abcdef"
GEMINI_KEY = "AIzaSyTest-0123456789abcdefghijklmnopqr"


class ChatUpstream(MockUpstream):
    """A `MockUpstream` for chat calls only: a model-list call (a `GET`) is a 404 and takes
    no scripted reply."""

    async def _handle(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":
            return httpx2.Response(404, json={"error": {"code": 404, "message": "not here", "status": "NOT_FOUND"}})
        return await super()._handle(request)


class Upstreams(NamedTuple):
    url: str
    openai: ChatUpstream
    gemini: ChatUpstream


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    """Our app with `openai` and `gemini` over scripted upstreams (and `echo`)."""
    openai_upstream, gemini_upstream = ChatUpstream(), ChatUpstream()
    config = settings(
        openai_api_key=OPENAI_KEY,
        openai_base_url="https://openai.upstream.test/v1",
        gemini_api_key=GEMINI_KEY,
        gemini_base_url="https://gemini.upstream.test",
    )
    adapters = {
        "openai": OpenAIStreamAdapter(config, http_client=openai_upstream.client()),
        "gemini": GeminiStreamAdapter(config, http_client=gemini_upstream.client()),
        "echo": EchoAdapter(ECHO_DELAY_MS),
    }
    with serve(create_app(config, adapters)) as url:
        yield Upstreams(url, openai_upstream, gemini_upstream)


def tiny_png(rgb: tuple[int, int, int]) -> bytes:
    """A 1×1 PNG of one colour."""

    def block(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + block(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + block(b"IDAT", zlib.compress(b"\x00" + bytes(rgb)))
        + block(b"IEND", b"")
    )


OPENAI_ANSWER = ["A ", "red ", "dot."]


def test_the_openai_sdk_reads_the_scripted_answer() -> None:
    chunks = [
        openai.types.chat.ChatCompletionChunk.model_validate_json(line[6:])
        for line in completion(OPENAI_ANSWER).decode().split("\n\n")
        if line.startswith("data: {")
    ]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "A red dot."
    assert chunks[-1].usage.total_tokens == 21


def test_an_attached_image_goes_upstream_as_an_image_url_part(browser, upstreams: Upstreams) -> None:  # type: ignore[no-untyped-def]
    red, blue = tiny_png((255, 0, 0)), tiny_png((0, 0, 255))
    red_url = "data:image/png;base64," + base64.b64encode(red).decode()
    blue_url = "data:image/png;base64," + base64.b64encode(blue).decode()
    upstreams.openai.seen.clear()
    upstreams.openai.replies[:] = [
        Reply(200, split(completion(OPENAI_ANSWER), 40)),
        Reply(200, split(completion(["Blue."]), 40)),
    ]
    with opened(browser, upstreams.url) as page:
        page.select_option("#provider", "openai")
        page.set_input_files("#image", files=[{"name": "red.png", "mimeType": "image/png", "buffer": red}])
        assert page.get_attribute("#attachments .thumb", "src") == red_url
        page.fill("#prompt", "What is this?")
        page.click("#send")
        assert text_of(last_reply(page, "done"), ".text") == "A red dot."
        assert page.get_attribute(".msg.user .thumb", "src") == red_url
        assert page.is_hidden("#attachments")

        page.evaluate(
            """(b64) => {  // an image pasted into the prompt, as a browser hands it over
            const data = new DataTransfer();
            data.items.add(new File([Uint8Array.from(atob(b64), c => c.charCodeAt(0))], "p.png", {type: "image/png"}));
            document.getElementById("prompt").dispatchEvent(
                new ClipboardEvent("paste", {clipboardData: data, bubbles: true, cancelable: true}));
        }""",
            base64.b64encode(blue).decode(),
        )
        page.wait_for_selector("#attachments .thumb")
        page.press("#prompt", "Enter")  # an image alone is a message too
        assert text_of(last_reply(page, "done"), ".text") == "Blue."

    # The temperature field left empty sends none: the model's own default (reasoning models take no other).
    assert [("temperature" in seen.json) for seen in upstreams.openai.seen] == [False, False]
    first, second = (seen.json["messages"] for seen in upstreams.openai.seen)
    assert first == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": red_url}},
            ],
        }
    ]
    assert second == [
        *first,
        {"role": "assistant", "content": "A red dot."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": blue_url}}]},
    ]


WEATHER_ARGS = {"city": "Zürich", "days": 3, "units": {"temperature": "celsius"}}
GEMINI_ANSWER = gemini_sse_body(
    frame(thought("**Planning** the answer: ")),
    frame(thought("a code sample, then the weather tool.")),
    frame(text("Here is how to *read* it:\n\n```python\nimport json\n")),
    frame(text('print(json.loads(data)["city"])\n```\n\nNow the ')),
    frame(text("**weather**.")),
    frame(function_call("get_weather", WEATHER_ARGS)),
    frame(text(""), finish_reason="STOP", usage=usage_metadata(20, 30, 40)),
)


def test_the_gemini_sdk_reads_the_scripted_answer() -> None:
    with ThreadPoolExecutor(1) as thread:  # its own event loop: Playwright's runs in this thread
        responses = thread.submit(sdk_stream, GEMINI_ANSWER).result()
    assert [r.candidates[0].content.parts[0].thought for r in responses[:2]] == [True, True]
    assert "".join(r.text or "" for r in responses[2:5]).endswith("Now the **weather**.")
    assert responses[5].function_calls[0].args == WEATHER_ARGS


def test_reasoning_shows_in_a_collapsed_block_and_tool_calls_as_such(browser, upstreams: Upstreams) -> None:  # type: ignore[no-untyped-def]
    upstreams.gemini.seen.clear()
    upstreams.gemini.replies[:] = [Reply(200, split(GEMINI_ANSWER, 64))]
    with opened(browser, upstreams.url) as page:
        page.select_option("#provider", "gemini")
        page.check("#show-reasoning")
        page.select_option("#effort", "low")
        with page.expect_request(f"{upstreams.url}/api/v1/chat/stream") as sent:
            page.fill("#prompt", "How do I read the city, and what is the weather there?")
            page.press("#prompt", "Enter")
        reply = last_reply(page, "done")
        request = json.loads(sent.value.post_data)
        assert (request["include_reasoning"], request["reasoning_effort"], request["resumable"]) == (True, "low", True)

        thinking = reply.query_selector(".thinking")
        assert thinking.is_visible() and thinking.get_attribute("open") is None
        assert text_of(thinking, "summary") == "Thinking"
        assert text_of(thinking, ".md") == "Planning the answer: a code sample, then the weather tool."
        assert text_of(thinking, ".md strong") == "Planning"
        assert text_of(reply, ".text pre code") == 'import json\nprint(json.loads(data)["city"])\n'
        assert text_of(reply, ".text > p:last-child") == "Now the weather."
        assert text_of(reply, ".tool-name").startswith("get_weather  ·  call_")
        assert text_of(reply, ".tool-call pre") == json.dumps(WEATHER_ARGS, indent=2, ensure_ascii=False)
        assert reply.query_selector(".meta").get_attribute("data-reason") == "tool_calls"

        thinking.query_selector("summary").click()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "page-markdown-thinking.png")
        page.emulate_media(color_scheme="dark")
        page.screenshot(path=ARTIFACTS / "page-markdown-thinking-dark.png")

    (seen,) = upstreams.gemini.seen
    assert seen.json["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}


class SlowReply(Reply):
    """A `Reply` whose pieces arrive `delay_s` apart, as a model's tokens do."""

    def __init__(self, pieces: list[bytes], delay_s: float = 0.06) -> None:
        super().__init__(200, pieces)
        self.delay_s = delay_s

    async def _body(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            await asyncio.sleep(self.delay_s)
            yield piece


THOUGHTS = ["The user ", "asks for ", "a haiku; ", "five, seven, ", "five ", "syllables."]


def test_the_thinking_block_grows_while_it_streams(browser, upstreams: Upstreams) -> None:  # type: ignore[no-untyped-def]
    frames = [
        *(frame(thought(t)) for t in THOUGHTS),
        frame(text("Autumn moonlight")),
        frame(text(""), finish_reason="STOP", usage=usage_metadata(5, 3, 9)),
    ]
    upstreams.gemini.replies[:] = [SlowReply([gemini_sse_body(f) for f in frames])]
    with opened(browser, upstreams.url) as page:
        page.select_option("#provider", "gemini")
        page.check("#show-reasoning")
        page.evaluate("""() => {
            window.thinking = [];
            new MutationObserver(() => {
                const block = document.querySelector(".msg.assistant .thinking");
                if (block && !block.hidden) {
                    window.thinking.push([block.querySelector("summary").textContent,
                                          block.querySelector(".md").textContent, block.open]);
                }
            }).observe(document.getElementById("log"), {subtree: true, childList: true, characterData: true});
        }""")
        page.fill("#prompt", "A haiku, please.")
        page.press("#prompt", "Enter")
        reply = last_reply(page, "done")
        assert text_of(reply, ".text") == "Autumn moonlight"
        states = page.evaluate("window.thinking")

    texts = list(dict.fromkeys(state[1] for state in states))
    assert texts[-1] == "".join(THOUGHTS).strip() and len(texts) >= 4, texts
    assert all(later.startswith(earlier.strip()) for earlier, later in zip(texts, texts[1:]))
    assert ("Thinking…", "The user asks for a haiku; ", False) in {tuple(state) for state in states}
    assert states[-1] == ["Thinking", "".join(THOUGHTS).strip(), False]  # collapsed all along


# --- resumable streams (needs the server's GET/DELETE /api/v1/chat/stream/{id}) ------------


@pytest.mark.resume
def test_a_reload_mid_answer_continues_the_same_answer(page, base_url: str) -> None:  # type: ignore[no-untyped-def]
    requests: list[Any] = []
    page.on("request", lambda request: requests.append(request) if "/api/v1/chat/stream" in request.url else None)
    with page.expect_response(f"{base_url}/api/v1/chat/stream") as posted:
        page.fill("#prompt", MESSAGE)
        page.press("#prompt", "Enter")
    stream_id = posted.value.headers["x-stream-id"]
    page.wait_for_function("document.querySelector('.msg.assistant .text').textContent.split(' ').length > 4")
    page.reload()
    record_reply_states(page)
    reply = last_reply(page, "done")

    assert text_of(reply, ".text") == MESSAGE  # each word once
    assert page.eval_on_selector_all(".msg.user .text", "texts => texts.map(t => t.textContent)") == [MESSAGE]
    states = page.evaluate("window.states")
    assert all(later.startswith(earlier) for earlier, later in zip(states, states[1:]))

    def resumes() -> list[Any]:
        return [r for r in requests if r.method == "GET" and r.url == f"{base_url}/api/v1/chat/stream/{stream_id}"]

    assert len([r for r in requests if r.method == "POST"]) == 1  # the question is not sent again
    assert len(resumes()) == 1 and int(resumes()[0].headers["last-event-id"]) >= 4

    page.reload()  # a finished answer stays on screen, and is not resumed again
    assert text_of(last_reply(page, "done"), ".text") == MESSAGE
    assert len(resumes()) == 1


@pytest.mark.resume
def test_stop_cancels_the_generation(page, base_url: str) -> None:  # type: ignore[no-untyped-def]
    with page.expect_response(f"{base_url}/api/v1/chat/stream") as posted:
        page.fill("#prompt", "\n".join(f"line {i}" for i in range(200)))
        page.click("#send")
    stream_id = posted.value.headers["x-stream-id"]
    page.wait_for_function("document.querySelector('.msg.assistant .text').textContent.includes('line 5')")
    with page.expect_request(lambda r: r.method == "DELETE") as deleted:
        page.click("#stop")
    assert deleted.value.url == f"{base_url}/api/v1/chat/stream/{stream_id}"
    assert deleted.value.response().status == 204
    last_reply(page, "stopped")
    deadline = time.monotonic() + 2
    while echo_streams_in_flight(base_url) != 0:
        assert time.monotonic() < deadline, "the generation goes on after Stop"
        time.sleep(0.05)


CUT_AFTER_FOUR_READS = """() => {  // the network drops the POST's answer after four reads
    const realFetch = window.fetch;
    window.fetch = async (url, init) => {
        const response = await realFetch(url, init);
        if (!init || init.method !== "POST") return response;
        const reader = response.body.getReader();
        let reads = 0;
        const body = new ReadableStream({async pull(controller) {
            if (++reads > 4) {
                reader.cancel();
                controller.error(new TypeError("network error"));
                return;
            }
            const {value, done} = await reader.read();
            if (done) controller.close(); else controller.enqueue(value);
        }});
        return new Response(body, {status: response.status, headers: response.headers});
    };
}"""


@pytest.mark.resume
def test_a_dropped_connection_resumes_from_the_last_frame_shown(page, base_url: str) -> None:  # type: ignore[no-untyped-def]
    page.evaluate(CUT_AFTER_FOUR_READS)
    record_reply_states(page)
    with page.expect_request(lambda r: r.method == "GET" and "/api/v1/chat/stream/" in r.url) as resumed:
        page.fill("#prompt", MESSAGE)
        page.press("#prompt", "Enter")
    reply = last_reply(page, "done")
    assert text_of(reply, ".text") == MESSAGE
    states = page.evaluate("window.states")
    assert all(later.startswith(earlier) for earlier, later in zip(states, states[1:]))
    assert int(resumed.value.headers["last-event-id"]) >= 1


def test_routes_are_offered_as_models(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "streamgate.toml"
    config.write_text('[routes.demo]\ntargets = ["echo/echo"]\n')
    with (
        serve(create_app(settings(echo_delay_ms=0, streamgate_config=str(config)))) as url,
        opened(browser, url) as page,
    ):
        page.wait_for_selector("#provider option[value=routes]", state="attached")
        page.select_option("#provider", "routes")
        assert page.get_attribute("#model", "placeholder") == "demo"
        page.fill("#prompt", "through a route")
        page.press("#prompt", "Enter")
        reply = last_reply(page, "done")
        assert text_of(reply, ".text") == "through a route"
