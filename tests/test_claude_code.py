"""Claude Code itself (`@anthropic-ai/claude-code`, pinned in `.ci/npm-clients`) through
the gateway, headless (`claude -p … --output-format json`), end to end: an answer passed
through to a scripted Anthropic upstream, an answer translated to `echo`, and a tool
turn (the upstream asks for `Read`, Claude Code runs it and sends the `tool_result` back,
the final answer arrives, exit 0), through the passthrough and translated to Gemini (its
thought signature going back with the call)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wire_anthropic import text_block, tool_block, whole_stream
from wire_gemini import frame, function_call, text, usage_metadata
from wire_gemini import sse_body as gemini_body
from wire_upstreams import ProviderUpstream, providers_gateway

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("STREAMGATE_NPM_CACHE", Path.home() / ".cache" / "streamgate-npm"))
CLAUDE = CACHE / "claude-code" / "node_modules" / ".bin" / "claude"


def claude_binary() -> Path:
    if not CLAUDE.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is missing: Claude Code cannot be installed")
        subprocess.run([str(ROOT / ".ci" / "npm-clients")], timeout=300, check=False)
        if not CLAUDE.exists():
            pytest.skip("Claude Code could not be installed from npm (.ci/npm-clients)")
    return CLAUDE


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, ProviderUpstream]]:
    claude_binary()
    with providers_gateway() as running:
        yield running


def claude(url: str, home: Path, prompt: str, *options: str) -> dict[str, Any]:
    """`claude -p prompt --output-format json` against the gateway, in a fresh HOME; its
    JSON result (the exit status must be 0)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env.update(
        HOME=str(home),
        ANTHROPIC_BASE_URL=url,
        ANTHROPIC_API_KEY="sk-gateway-client",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_TELEMETRY="1",
        DISABLE_AUTOUPDATER="1",
    )
    done = subprocess.run(
        [str(claude_binary()), "-p", prompt, "--output-format", "json", *options],
        cwd=home,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_claude_code_through_the_passthrough(gateway, tmp_path: Path) -> None:
    url, upstream = gateway
    upstream.script(b"".join(whole_stream(text_block(0, ["Hi", " from Anthropic"]))))
    result = claude(url, tmp_path, "Say hi")
    assert (result["is_error"], result["result"]) == (False, "Hi from Anthropic")
    [sent] = upstream.seen
    assert sent.path == "/v1/messages?beta=true"
    assert "claude-code-20250219" in sent.headers["anthropic-beta"]
    assert sent.headers["authorization"] == "Bearer sk-ant-e2e" and "x-api-key" not in sent.headers
    assert {"model", "messages", "system", "tools", "max_tokens", "thinking", "stream"} <= set(sent.json)
    assert any(m["role"] == "system" for m in sent.json["messages"])  # mid-conversation system turns


def test_claude_code_on_echo(gateway, tmp_path: Path) -> None:
    url, _ = gateway
    result = claude(url, tmp_path, "Echo this sentence back", "--model", "echo/echo")
    assert result["is_error"] is False
    assert result["result"].endswith("Echo this sentence back")


def test_claude_code_runs_a_tool_and_sends_its_result_back(gateway, tmp_path: Path) -> None:
    url, upstream = gateway
    notes = tmp_path / "notes.txt"
    notes.write_text("The launch code is 4242.\n")
    read = tool_block(0, "toolu_01Read", "Read", ["", json.dumps({"file_path": str(notes)})])
    upstream.script(
        b"".join(whole_stream(read, stop_reason="tool_use")),
        b"".join(whole_stream(text_block(0, ["The code is 4242."]))),
    )
    result = claude(url, tmp_path, "What is the launch code in notes.txt?", "--allowedTools", "Read")
    assert (result["is_error"], result["result"]) == (False, "The code is 4242.")
    first, second = upstream.seen
    assert second.json["messages"][: len(first.json["messages"])] != []  # the conversation went on
    results = [
        block
        for message in second.json["messages"]
        if message["role"] == "user" and isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    assert results and results[-1]["tool_use_id"] == "toolu_01Read"
    assert "4242" in json.dumps(results[-1]["content"])
    assistant = [m for m in second.json["messages"] if m["role"] == "assistant"][-1]
    assert assistant["content"][-1]["type"] == "tool_use" and assistant["content"][-1]["id"] == "toolu_01Read"


def test_claude_code_runs_a_tool_on_gemini_with_its_thought_signature(gateway, tmp_path: Path) -> None:
    """Translated both ways: Gemini's `functionCall` (with its thought signature) reaches
    Claude Code as a `tool_use`; the `tool_result` and the signed call go back to Gemini."""
    url, upstream = gateway
    notes = tmp_path / "notes.txt"
    notes.write_text("The launch code is 4242.\n")
    signature = "KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZX"
    upstream.script(
        gemini_body(frame(function_call("Read", {"file_path": str(notes)}, signature), finish_reason="STOP")),
        gemini_body(frame(text("The code is 4242."), finish_reason="STOP", usage=usage_metadata(30, 6, None))),
    )
    result = claude(
        url,
        tmp_path,
        "What is the launch code in notes.txt?",
        "--allowedTools",
        "Read",
        "--model",
        "gemini/gemini-3.8-flash",
    )
    assert (result["is_error"], result["result"]) == (False, "The code is 4242.")
    first, second = upstream.seen
    assert first.path.endswith("/models/gemini-3.8-flash:streamGenerateContent?alt=sse")
    call, answer = second.json["contents"][-2:]
    assert call["parts"][0] == {
        "functionCall": {"name": "Read", "args": {"file_path": str(notes)}},
        "thoughtSignature": signature,
    }
    assert "4242" in json.dumps(answer["parts"][0]["functionResponse"])
