"""The config file (`STREAMGATE_CONFIG`, else `./streamgate.toml` when it exists): model
routes (`[routes.<name>]`, validated by `routing.py`) and callers (`[[callers]]`,
validated by `callers.py`), read once at start-up with the standard library's `tomllib`.

A file that does not parse stops the server with one line naming the file, the line and
the problem (`SettingsError`, printed by `server.py`, exit status 2).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from .settings import SettingsError

DEFAULT_PATH = Path("streamgate.toml")


class ConfigFile:
    """The parsed file: its path (for messages), its raw tables, and each top-level key's
    line (`line_of`), so a validator can name where a problem is."""

    __slots__ = ("path", "data", "text")

    def __init__(self, path: Path | None, data: dict[str, Any], text: str = "") -> None:
        self.path = path
        self.data = data
        self.text = text

    @property
    def routes(self) -> dict[str, Any]:
        routes = self.data.get("routes", {})
        if not isinstance(routes, dict):
            raise self.error("'routes' must be a table of [routes.<name>] tables", "routes")
        return routes

    @property
    def callers(self) -> list[Any]:
        callers = self.data.get("callers", [])
        if not isinstance(callers, list):
            raise self.error("'callers' must be an array of [[callers]] tables", "callers")
        return callers

    def line_of(self, *needles: str) -> int | None:
        """The first line holding all of `needles` (a table header, a key), 1-based."""
        for number, line in enumerate(self.text.splitlines(), start=1):
            if all(needle in line for needle in needles):
                return number
        return None

    def error(self, problem: str, *needles: str) -> SettingsError:
        """A `SettingsError` naming the file, the line (where `needles` find it) and `problem`."""
        line = self.line_of(*needles) if needles else None
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        return SettingsError(f"{where}: {problem}")


def config_path(explicit: str | None) -> Path | None:
    """`STREAMGATE_CONFIG` (which must exist), else `./streamgate.toml` when it exists."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SettingsError(f"STREAMGATE_CONFIG={explicit!r}: no such file; give the path of a TOML file")
        return path
    return DEFAULT_PATH if DEFAULT_PATH.is_file() else None


def load_config(explicit: str | None = None) -> ConfigFile:
    """The config file, parsed; an empty `ConfigFile` when there is none."""
    path = config_path(explicit if explicit is not None else os.environ.get("STREAMGATE_CONFIG"))
    if path is None:
        return ConfigFile(None, {})
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"{path}: cannot be read as a UTF-8 TOML file: {error}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        match = re.search(r"\(at line (\d+), column \d+\)", str(error))
        at_end = "(at end of document)" in str(error)
        line = f":{match.group(1)}" if match else f":{max(len(text.splitlines()), 1)}" if at_end else ""
        problem = re.sub(r"\s*\(at (?:line \d+, column \d+|end of document)\)", "", str(error))
        twice = re.fullmatch(r"Cannot declare \('routes', '(.*)'\) twice", problem)
        if twice:
            problem = f"route {twice.group(1)!r} is defined twice"
        raise SettingsError(f"{path}{line}: not valid TOML: {problem}") from None
    return ConfigFile(path, data, text)
