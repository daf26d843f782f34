"""End to end: Codex (`@openai/codex`, `wire_api = "responses"`) through `/v1/responses`,
`codex exec` with a tool turn (Codex runs `exec_command` and sends its output back), to
`echo` and to `anthropic` answered by a scripted upstream with Anthropic's real bytes.

Codex comes from npm, pinned, into `~/.cache/streamgate-npm/codex` (`.ci/npm-clients`, run
here too when it is absent); without npm the tests skip."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamgate.app import create_app
from streamgate.providers.echo import EchoAdapter
from support import serve, settings
from wire_anthropic import text_block, thinking_block, tool_block, whole_stream
from wire_upstreams import providers_gateway

ROOT = Path(__file__).resolve().parent.parent
NPM_CACHE = Path(os.environ.get("STREAMGATE_NPM_CACHE") or Path.home() / ".cache" / "streamgate-npm")
CODEX = NPM_CACHE / "codex" / "node_modules" / ".bin" / "codex"

#: The Codex configuration the README gives.
README_CONFIG = next(
    block
    for block in re.findall(r"^```toml\n(.*?)^```$", (ROOT / "README.md").read_text(), re.MULTILINE | re.DOTALL)
    if "[model_providers.streamgate]" in block
)

if shutil.which("npm") is None:
    pytest.skip("npm not installed: Codex cannot be installed", allow_module_level=True)


@pytest.fixture(scope="module")
def codex() -> Path:
    if not CODEX.exists():
        subprocess.run(["bash", str(ROOT / ".ci" / "npm-clients")], timeout=600, stdin=subprocess.DEVNULL)
    if not CODEX.exists():
        pytest.skip("Codex could not be installed from npm (.ci/npm-clients)")
    return CODEX


def codex_exec(
    codex: Path, home: Path, url: str, model: str, prompt: str, extra: str = ""
) -> subprocess.CompletedProcess[str]:
    """`codex exec` against the gateway at `url`, configured as the README says (its model
    replaced by `model`)."""
    home.mkdir(exist_ok=True)
    config = README_CONFIG.replace("http://127.0.0.1:8000", url)
    config = re.sub(r'^model = "[^"]*"', f'model = "{model}"', config, flags=re.M)
    (home / "config.toml").write_text(config + extra)
    env = {**os.environ, "CODEX_HOME": str(home), "STREAMGATE_KEY": "sk-anything"}
    return subprocess.run(
        [str(codex), "exec", "--skip-git-repo-check", prompt],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=home,
    )


@pytest.fixture
def echo_url() -> Iterator[str]:
    with serve(create_app(settings(), {"echo": EchoAdapter(0)})) as url:
        yield url


def test_codex_on_echo_with_a_tool_turn(codex: Path, tmp_path: Path, echo_url: str) -> None:
    done = codex_exec(
        codex, tmp_path / "codex", echo_url, "echo/echo", '/tool exec_command {"cmd": "echo streamgate-codex-ok"}'
    )
    assert done.returncode == 0, done.stderr
    assert "exec_command returned:" in done.stdout and "streamgate-codex-ok" in done.stdout


def test_codex_falls_back_from_websocket_at_once(codex: Path, tmp_path: Path, echo_url: str) -> None:
    """With `supports_websockets`, Codex asks for a WebSocket first: the `426` sends it to
    HTTP at once (a `404` costs it ~6 s of retries)."""
    started = time.monotonic()
    done = codex_exec(codex, tmp_path / "codex", echo_url, "echo/echo", "Over HTTP", "supports_websockets = true\n")
    assert done.returncode == 0, done.stderr
    assert "Over HTTP" in done.stdout and time.monotonic() - started < 5


def test_codex_on_anthropic_with_a_tool_turn(codex: Path, tmp_path: Path) -> None:
    with providers_gateway() as (url, upstream):
        upstream.script(
            b"".join(
                whole_stream(
                    thinking_block(0, ["The user wants ", "a command run."]),
                    text_block(1, ["Let me run it."]),
                    tool_block(2, "toolu_01C", "exec_command", ["", '{"cmd": "echo codex-on-', 'claude"}']),
                    stop_reason="tool_use",
                )
            ),
            b"".join(whole_stream(text_block(0, ["It printed ", "codex-on-claude."]))),
        )
        done = codex_exec(codex, tmp_path / "codex", url, "anthropic/claude-sonnet-5-5", "Run echo codex-on-claude")
        sent = [seen.json for seen in upstream.seen]
    assert done.returncode == 0, done.stderr
    assert "It printed codex-on-claude." in done.stdout
    first, second = sent
    names = [tool["name"] for tool in first["tools"]]
    assert "exec_command" in names and "web_search" not in names  # Codex's built-in web_search left out
    assert first["system"] and first["messages"][-1]["content"] == "Run echo codex-on-claude"
    assert first["thinking"] == {"type": "adaptive", "display": "summarized"}  # Codex asks for summaries
    assistant, results = second["messages"][-2:]
    assert assistant["content"][-1] == {
        "type": "tool_use",
        "id": "toolu_01C",
        "name": "exec_command",
        "input": {"cmd": "echo codex-on-claude"},
    }
    [result] = results["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_01C"
    assert "codex-on-claude" in str(result["content"])
