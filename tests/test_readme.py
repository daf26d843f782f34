"""The README a stranger follows: the commands it names exist, its echo example serves
exactly what it shows, its OpenAI SDK example runs, its links resolve, and what it says
about settings is what the code does."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamgate.server import main
from streamgate.settings import Settings, SettingsError
from support import gateway

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEFAULT_URL = "http://127.0.0.1:8000"


def blocks(language: str = "") -> list[str]:
    """The README's fenced code blocks of `language` (`""`: those without one)."""
    return [
        body
        for lang, body in re.findall(r"^```(\w*)\n(.*?)^```$", README, re.MULTILINE | re.DOTALL)
        if lang == language
    ]


def section(title: str) -> str:
    return README.partition(f"\n## {title}\n")[2].partition("\n## ")[0]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with gateway() as url:
        yield url


def test_the_install_and_run_commands_exist() -> None:
    commands = blocks("bash")
    assert 'pip install -e ".[dev]"\npython server.py\n' in commands
    assert "dev" in PYPROJECT["project"]["optional-dependencies"]
    assert (ROOT / "server.py").is_file() and callable(main)
    assert PYPROJECT["project"]["scripts"] == {"streamgate": "streamgate.server:main"}
    assert (ROOT / "__main__.py").read_text().count("from streamgate.server import main") == 1
    assert any(line.startswith("cd /anywhere && streamgate") for block in commands for line in block.splitlines())


def test_ci_runs_the_readme_test_command() -> None:
    (test_block,) = [block for block in blocks("bash") if "pytest" in block]
    assert test_block == "python -m pytest\n"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert 'python3 -m pip install --quiet --disable-pip-version-check -e ".[dev]"' in ci
    assert ci.index(".ci/wheel") < ci.index("python3 -m pytest")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_echo_example_serves_what_the_readme_shows(base_url: str) -> None:
    command = [block for block in blocks("bash") if block.startswith("curl -N") and '"provider": "echo"' in block][0]
    shown = blocks()[0]
    output = subprocess.run(
        ["bash", "-c", command.replace(DEFAULT_URL, base_url)], capture_output=True, check=True, timeout=30
    ).stdout.decode()
    head, _, tail = shown.partition("...\n\n")
    assert output.startswith(head) and output.endswith(tail + "\n")  # a block cannot end in a blank line


def test_the_openai_sdk_example_runs(base_url: str) -> None:
    (example,) = [block for block in blocks("python") if "OpenAI(base_url=" in block]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(example.replace(DEFAULT_URL, base_url), "README.md", "exec"), {})
    assert printed.getvalue() == "Hello there, streaming world\n8 tokens\nHi\n['echo/echo']\necho\n"


def test_links_resolve() -> None:
    links = re.findall(r"\]\(([^)#]+)\)", README)
    assert "docs/API.md" in links
    for link in links:
        if not link.startswith(("http://", "https://")):
            assert (ROOT / link).exists(), link


def test_every_configuration_row_is_a_setting_and_the_api_lists_them_all() -> None:
    fields = set(Settings.__struct_fields__)
    rows = [line for line in section("Configuration").splitlines() if line.startswith("| `")]
    named = {name.lower() for row in rows for name in re.findall(r"`([A-Z_]+)`", row.split("|")[1])}
    assert named and named <= fields
    api = (ROOT / "docs" / "API.md").read_text()
    listed = {
        name.lower()
        for name in re.findall(r"^\| (.*?) \|", api, re.MULTILINE)
        for name in re.findall(r"`([A-Z_]+)`", name)
    }
    assert fields <= listed


def test_the_bad_setting_example_is_what_the_server_prints(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (example,) = [block for block in blocks() if block.startswith("$ PORT=abc python server.py\n")]
    monkeypatch.setenv("PORT", "abc")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(tmp_path / ".env")
    assert example.splitlines()[1] == f"streamgate: cannot start: {caught.value}"
