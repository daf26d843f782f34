"""From the samples of a live run to its figures: percentiles per target and mode, errors
by type, and the gateway's added TTFT paired per prompt."""

from __future__ import annotations

from collections import Counter
from statistics import fmean

from bench.live_result import MODES, AddedTTFT, Percentiles, Sample, TargetFigures


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentiles(values: list[float]) -> Percentiles:
    return Percentiles(percentile(values, 50), percentile(values, 90), percentile(values, 99))


def target_figures(target: str, mode: str, samples: list[Sample]) -> TargetFigures:
    mine = [s for s in samples if s.target == target and s.mode == mode]
    ok = [s for s in mine if s.error is None]
    return TargetFigures(
        target=target,
        mode=mode,
        requests=len(mine),
        ok=len(ok),  # type: ignore[arg-type]
        ttft_ms=percentiles([s.ttft_s * 1e3 for s in ok if s.ttft_s is not None]),
        tokens_per_s=percentiles([s.tokens_per_s for s in ok if s.tokens_per_s is not None]),
        total_ms=percentiles([s.total_s * 1e3 for s in ok]),
        errors=dict(Counter(s.error for s in mine if s.error is not None)),
    )


def paired_ttft_ms(target: str, samples: list[Sample]) -> list[tuple[int, float]]:
    """(prompt, through − direct ms) for each prompt measured both ways without error."""
    ttft: dict[tuple[str, int], float] = {}
    for sample in samples:
        if sample.target == target and sample.error is None and sample.ttft_s is not None:
            ttft[(sample.mode, sample.prompt)] = sample.ttft_s * 1e3
    return [
        (prompt, value - ttft[("direct", prompt)])
        for (mode, prompt), value in sorted(ttft.items())
        if mode == "through" and ("direct", prompt) in ttft
    ]


def added_ttft(target: str, samples: list[Sample]) -> AddedTTFT:
    values = [added for _, added in paired_ttft_ms(target, samples)]
    return AddedTTFT(target, len(values), percentiles(values), fmean(values) if values else None, values)


def all_figures(labels: list[str], samples: list[Sample]) -> tuple[list[TargetFigures], list[AddedTTFT]]:
    figures = [target_figures(label, mode, samples) for label in labels for mode in MODES]
    return figures, [added_ttft(label, samples) for label in labels]
