"""`python -m bench compare A.json B.json [--fail-over RATIO]`: two results' figures side by
side with B/A, live or mock (both of one kind).

A figure is worse when B/A is above RATIO for one where lower is better (times, CPU, memory,
errors) or below 1/RATIO for one where higher is better (tokens/s, frames/s, requests/s);
with `--fail-over`, any worse figure is flagged and the exit status is 1. A figure missing
on one side, or zero or negative in A (an added TTFT can be), is shown without a verdict.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from bench.live_result import decoder

#: (value, higher is better)
Figure = tuple[float | None, bool]
HIGHER_IS_BETTER = ("per_s", "closed_within", "max_rate")


def live_figures(raw: bytes) -> dict[str, Figure]:
    result = decoder.decode(raw)
    figures: dict[str, Figure] = {}
    for f in result.figures:
        key = f"{f.target} {f.mode}"
        for q in ("p50", "p90", "p99"):
            figures[f"{key} TTFT {q} ms"] = (getattr(f.ttft_ms, q), False)
        figures[f"{key} tokens/s p50"] = (f.tokens_per_s.p50, True)
        figures[f"{key} total p50 ms"] = (f.total_ms.p50, False)
        figures[f"{key} error rate"] = ((f.requests - f.ok) / f.requests if f.requests else None, False)
    for added in result.added_ttft:
        for q in ("p50", "p90", "p99"):
            figures[f"{added.target} added TTFT {q} ms"] = (getattr(added.ms, q), False)
    return figures


def mock_figures(data: dict[str, Any]) -> dict[str, Figure]:
    figures: dict[str, Figure] = {}
    for provider, result in data["results"].items():
        for name, values in result.get("figures", {}).items():
            higher = any(part in name for part in HIGHER_IS_BETTER)
            for server, value in values.items():
                figures[f"{provider} {name} {server}"] = (value, higher)
    return figures


def figures_of(raw: bytes) -> tuple[str, dict[str, Figure]]:
    data = json.loads(raw)
    if data.get("kind") == "live":
        return "live", live_figures(raw)
    if "results" in data:
        return "mock", mock_figures(data)
    raise ValueError("not a bench result: neither `kind: live` nor `results`")


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a < 0 or b < 0:
        return None
    if a == 0:
        return None if b == 0 else math.inf
    return b / a


def worse(figure_ratio: float | None, higher: bool, fail_over: float) -> bool:
    if figure_ratio is None:
        return False
    return figure_ratio < 1 / fail_over if higher else figure_ratio > fail_over


def rows(a: dict[str, Figure], b: dict[str, Figure], fail_over: float | None) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name in [*a, *(n for n in b if n not in a)]:
        (value_a, higher), value_b = a.get(name, (None, False)), b.get(name, (None, False))[0]
        if name not in a:
            higher = b[name][1]
        figure_ratio = ratio(value_a, value_b)
        flag = "WORSE" if fail_over is not None and worse(figure_ratio, higher, fail_over) else ""
        out.append((name, _fmt(value_a), _fmt(value_b), _fmt(figure_ratio), "↑" if higher else "↓", flag))
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def text_table(lines: list[tuple[str, ...]]) -> str:
    header = ("figure", "A", "B", "B/A", "better", "")
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in [header, *lines]
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", help="the baseline result (JSON)")
    parser.add_argument("b", help="the result compared with it (JSON)")
    parser.add_argument(
        "--fail-over", type=float, metavar="RATIO", help="flag a figure worse by more than RATIO (e.g. 1.1) and exit 1"
    )
    args = parser.parse_args(argv)
    if args.fail_over is not None and args.fail_over < 1:
        parser.error("--fail-over is a ratio of at least 1 (1.1: 10% worse)")
    kind_a, a = figures_of(Path(args.a).read_bytes())
    kind_b, b = figures_of(Path(args.b).read_bytes())
    if kind_a != kind_b:
        parser.error(f"{args.a} is a {kind_a} result, {args.b} a {kind_b} one")
    lines = rows(a, b, args.fail_over)
    print(f"A: {args.a}\nB: {args.b}\n")
    print(text_table(lines))
    flagged = [line[0] for line in lines if line[-1]]
    if flagged:
        print(f"\n{len(flagged)} figure(s) worse than {args.fail_over}x: " + "; ".join(flagged))
        return 1
    return 0
