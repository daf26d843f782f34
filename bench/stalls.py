"""Where an open-loop stall came from: what streamgate's `/metrics` recorded of its event
loop's lag and its GC pauses between two scrapes (before and after one rate).

Both are histograms, so a value is known as the bucket it fell in: a figure here is that
bucket's upper bound in ms ("≤ 2.5"), and None past the last bound (over 1 s). The lag
timer runs ten times a second, so a rate of 8 s gives about 80 lags: its p99 is near its
max, and a stall shorter than 100 ms is seen in proportion to its length. The same timer
records the GC pauses, so a collection of the last 100 ms may count in the next rate.
"""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

LAG = "streamgate_event_loop_lag_seconds"
GC_PAUSE = "streamgate_gc_pause_seconds"
GENERATIONS = ("0", "1", "2")

#: (sample name, sorted labels) -> value, of one scrape.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(exposition: str) -> Samples:
    """The `streamgate_*` samples of a Prometheus text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name.startswith("streamgate_")
    }


class HistogramDelta:
    """What one histogram series gained between two scrapes."""

    def __init__(self, before: Samples, after: Samples, name: str, **labels: str) -> None:
        def gained(key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
            return after.get(key, 0.0) - before.get(key, 0.0)

        own = tuple(sorted(labels.items()))
        buckets = sorted(
            (float(dict(key[1])["le"]), key)
            for key in after
            if key[0] == f"{name}_bucket" and tuple(kv for kv in key[1] if kv[0] != "le") == own
        )
        self.cumulative = [(bound, gained(key)) for bound, key in buckets]
        self.count = int(gained((f"{name}_count", own)))
        self.sum_s = gained((f"{name}_sum", own))

    def bound_ms(self, share: float) -> float | None:
        """The upper bound (ms) of the bucket holding the value at `share` (0..1] of the
        count: 1.0 is the max; None when it is past the last bound, or there is none."""
        for bound, count in self.cumulative:
            if count >= share * self.count:
                return None if math.isinf(bound) else bound * 1e3
        return None


def summary(before_text: str, after_text: str) -> dict[str, object] | None:
    """The lag and the GC pauses between two scrapes; None when the server records neither
    (an older streamgate)."""
    before, after = samples(before_text), samples(after_text)
    if (f"{LAG}_count", ()) not in after:
        return None
    lag = HistogramDelta(before, after, LAG)
    gcs = {generation: HistogramDelta(before, after, GC_PAUSE, generation=generation) for generation in GENERATIONS}
    return {
        "loop_lag_timers": lag.count,
        "loop_lag_p99_le_ms": lag.bound_ms(0.99) if lag.count else None,
        "loop_lag_max_le_ms": lag.bound_ms(1.0) if lag.count else None,
        "gc": {
            generation: {
                "count": pauses.count,
                "total_ms": round(pauses.sum_s * 1e3, 3),
                "longest_le_ms": pauses.bound_ms(1.0) if pauses.count else None,
            }
            for generation, pauses in gcs.items()
        },
    }


TITLE = "open loop, streamgate: its TTFT tail, and what held its event loop (its /metrics; ≤ a bucket's bound, ms)"


def table(rows: dict[int, dict[str, object]]) -> str:
    """Rate -> the open-loop TTFT tail and the stall summary: a title, then one line a rate."""
    header = ["rate/s", "p99 ms", "p99.9 ms", "lag p99", "lag max", *(f"gc{g}: n, ms, longest" for g in GENERATIONS)]
    lines = [header]
    for rate, row in sorted(rows.items()):
        gcs: dict[str, dict[str, float | int | None]] = row["gc"]  # type: ignore[assignment]
        lines.append(
            [
                str(rate),
                _ms(row.get("ttft_p99_ms")),  # type: ignore[arg-type]
                _ms(row.get("ttft_p999_ms")),  # type: ignore[arg-type]
                _bound(row["loop_lag_p99_le_ms"], row["loop_lag_timers"]),  # type: ignore[arg-type]
                _bound(row["loop_lag_max_le_ms"], row["loop_lag_timers"]),  # type: ignore[arg-type]
                *(_gc(gcs[g]) for g in GENERATIONS),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join([TITLE, *("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in lines)])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _bound(bound_ms: float | None, count: int) -> str:
    if not count:
        return "-"
    return "> 1000" if bound_ms is None else f"≤ {bound_ms:g}"


def _gc(pauses: dict[str, float | int | None]) -> str:
    count = int(pauses["count"] or 0)
    if not count:
        return "0"
    return f"{count}, {pauses['total_ms']:.1f}, {_bound(pauses['longest_le_ms'], count)}"
