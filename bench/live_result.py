"""The result of `python -m bench live` as msgspec Structs: what the JSON file holds.

Every request is one `Sample`; the figures (`TargetFigures`, `AddedTTFT`) are computed from
the samples (`bench/live_figures.py`), so a partial run still yields a valid report.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Mode = Literal["through", "direct"]
MODES: tuple[Mode, Mode] = ("through", "direct")


class Target(msgspec.Struct, frozen=True):
    """One provider/model as measured: `provider`/`model` are what the direct SDK call uses;
    `route` is a gateway route name sent as `model` instead (through only)."""

    provider: str
    model: str
    route: str | None = None

    @property
    def label(self) -> str:
        served = f"{self.provider}/{self.model}"
        return f"route:{self.route} ({served})" if self.route else served


class Sample(msgspec.Struct, omit_defaults=True):
    """One request. Times in seconds; `started_s` from the run's start. `ttft_s` is the time
    to the first answer text; `tokens_per_s` the output tokens after the first one over the
    time from the first text to the end. `error` names the failure's type (None when ok)."""

    target: str
    mode: Mode
    prompt: int
    started_s: float
    total_s: float
    ttft_s: float | None = None
    output_tokens: int | None = None
    tokens_per_s: float | None = None
    error: str | None = None
    went_first: bool = False


class Percentiles(msgspec.Struct):
    p50: float | None
    p90: float | None
    p99: float | None


class TargetFigures(msgspec.Struct):
    """One target in one mode (through the gateway or direct)."""

    target: str
    mode: Mode
    requests: int
    ok: int
    ttft_ms: Percentiles
    tokens_per_s: Percentiles
    total_ms: Percentiles
    errors: dict[str, int]


class AddedTTFT(msgspec.Struct):
    """The gateway's added time to first token, per prompt: through minus direct (ms)."""

    target: str
    pairs: int
    ms: Percentiles
    mean_ms: float | None
    values_ms: list[float]


class Machine(msgspec.Struct):
    platform: str
    cpu: str
    cpu_count: int
    python: str
    versions: dict[str, str]


class LiveResult(msgspec.Struct):
    kind: Literal["live"]
    command: str
    date: str
    duration_s: float
    machine: Machine
    gateway: str
    targets: list[Target]
    requests_per_target: int
    concurrency: int
    interrupted: bool
    stopped_by: str | None
    samples: list[Sample]
    figures: list[TargetFigures]
    added_ttft: list[AddedTTFT]


encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(LiveResult)
