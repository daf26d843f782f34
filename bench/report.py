"""One self-contained HTML file per bench result: tables and charts (PNG, embedded as
base64 `data:` URIs), nothing fetched, opens offline.

    python -m bench report RESULT.json [--out FILE.html]

RESULT is a `python -m bench live` result (TTFT CDFs through vs direct, tokens/s, the
added-TTFT histogram) or a `python -m bench` result from `bench/results/` (TTFT
percentiles per server, frames/s, CPU per frame and per request, the open-loop latency
against the offered rate): what the file holds is drawn. matplotlib (Agg) is imported here
only, when a report is drawn.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.live_figures import paired_ttft_ms
from bench.live_result import MODES, LiveResult, Machine, Percentiles, decoder

COLOURS = {"through": "#1f77b4", "direct": "#ff7f0e"}
SMALL = (5.3, 3.4)  # two charts side by side on the page
SERVER_COLOURS = {"upstream": "#7f7f7f", "streamgate": "#1f77b4", "tutorial": "#d62728"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(figure: Any) -> str:
    """The figure as a `data:image/png;base64,…` URI; the figure is closed."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    _pyplot().close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def chart(
    title: str, xlabel: str, ylabel: str, draw: Callable[[Any], None], size: tuple[float, float] = (6.4, 3.6)
) -> str:
    figure, axes = _pyplot().subplots(figsize=size)
    draw(axes)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    return png(figure)


# --- HTML -----------------------------------------------------------------------------------

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em}table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.meta td{text-align:left}.bad{color:#b00;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:12px}"""


def esc(value: object) -> str:
    return html.escape(str(value))


def table(header: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "") -> str:
    head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell_html(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def cell_html(cell: object) -> str:
    return cell.html if isinstance(cell, Raw) else esc(fmt(cell))


class Raw:
    """Markup that goes into a cell as it is (already escaped)."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text


def fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return str(value)


def images(uris: Iterable[str], alt: str) -> str:
    return '<div class="charts">' + "".join(f'<img alt="{esc(alt)}" src="{uri}">' for uri in uris) + "</div>"


def page(title: str, meta: list[tuple[str, object]], sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{esc(heading)}</h2>{content}" for heading, content in sections)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>"
        f"{table(['', ''], meta, 'meta')}{body}</body></html>"
    )


def machine_rows(machine: Machine) -> list[tuple[str, object]]:
    versions = ", ".join(f"{name} {version}" for name, version in machine.versions.items())
    return [
        ("machine", f"{machine.platform}; {machine.cpu}; {machine.cpu_count} CPUs"),
        ("Python", machine.python),
        ("versions", versions),
    ]


# --- a live result --------------------------------------------------------------------------


def ttft_values(result: LiveResult, target: str, mode: str) -> list[float]:
    return sorted(
        s.ttft_s * 1e3
        for s in result.samples
        if s.target == target and s.mode == mode and s.error is None and s.ttft_s is not None
    )


def ttft_cdf(result: LiveResult, target: str) -> str:
    def draw(axes: Any) -> None:
        for mode in MODES:
            values = ttft_values(result, target, mode)
            if values:
                fractions = [0.0, *((i + 1) / len(values) for i in range(len(values)))]
                axes.step(
                    [values[0], *values], fractions, where="post", label=f"{mode} ({len(values)})", color=COLOURS[mode]
                )
        axes.set_ylim(0, 1.02)
        axes.legend(loc="lower right")

    return chart(f"TTFT CDF — {short(target)}", "time to first token (ms)", "fraction of requests", draw, SMALL)


def tokens_per_s_chart(result: LiveResult) -> str:
    labels = [t.label for t in result.targets]

    def draw(axes: Any) -> None:
        width = 0.38
        for offset, mode in zip((-width / 2, width / 2), MODES, strict=True):
            by_target = {f.target: f.tokens_per_s for f in result.figures if f.mode == mode}
            p50 = [by_target[label].p50 or 0.0 for label in labels]
            axes.bar([i + offset for i in range(len(labels))], p50, width, label=mode, color=COLOURS[mode])
        axes.set_xticks(range(len(labels)), [short(label) for label in labels], rotation=15, ha="right")
        axes.set_ylim(top=axes.get_ylim()[1] * 1.2)  # room for the legend above the bars
        axes.legend(loc="upper right", ncols=2)

    return chart("Output tokens/s after the first token (p50)", "target", "tokens per second", draw, SMALL)


def added_histogram(result: LiveResult) -> str:
    def draw(axes: Any) -> None:
        for target in result.targets:
            values = [added for _, added in paired_ttft_ms(target.label, result.samples)]
            if values:
                axes.hist(
                    values,
                    bins=min(30, max(5, len(values) // 2)),
                    alpha=0.55,
                    label=f"{short(target.label)} ({len(values)})",
                )
        axes.axvline(0, color="#444", linewidth=0.8)
        axes.yaxis.get_major_locator().set_params(integer=True)
        if result.targets:
            axes.legend(fontsize=8)

    return chart(
        "Gateway's added TTFT per prompt (through − direct)", "added time to first token (ms)", "prompts", draw, SMALL
    )


def short(label: str) -> str:
    return label if len(label) <= 38 else label[:36] + "…"


def live_tables(result: LiveResult) -> str:
    rows = [
        (
            f.target,
            f.mode,
            f.requests,
            f.ok,
            *pcts(f.ttft_ms),
            f.tokens_per_s.p50,
            f.total_ms.p50,
            ", ".join(f"{k}: {v}" for k, v in sorted(f.errors.items())) or "–",
        )
        for f in result.figures
    ]
    header = [
        "target",
        "mode",
        "requests",
        "ok",
        "TTFT p50 ms",
        "p90",
        "p99",
        "tokens/s p50",
        "total p50 ms",
        "errors by type",
    ]
    added = [(a.target, a.pairs, *pcts(a.ms), a.mean_ms) for a in result.added_ttft]
    return (
        table(header, rows)
        + "<h2>Added TTFT (through − direct, paired per prompt)</h2>"
        + table(["target", "pairs", "p50 ms", "p90 ms", "p99 ms", "mean ms"], added)
    )


def pcts(values: Percentiles) -> tuple[float | None, float | None, float | None]:
    return values.p50, values.p90, values.p99


def live_html(result: LiveResult) -> str:
    state = (
        "interrupted (Ctrl-C): what was measured until then"
        if result.interrupted
        else (f"stopped by the {result.stopped_by}" if result.stopped_by else "complete")
    )
    meta = [
        ("date", result.date),
        ("command", result.command),
        *machine_rows(result.machine),
        ("gateway", result.gateway),
        (
            "run",
            (
                f"{state}; {len(result.samples)} requests in {result.duration_s} s; "
                f"{result.requests_per_target} prompts per target, concurrency "
                f"{result.concurrency}"
            ),
        ),
    ]
    sections = [
        ("Figures", live_tables(result)),
        (
            "Time to first token: through the gateway vs direct",
            images((ttft_cdf(result, t.label) for t in result.targets), "TTFT CDF"),
        ),
        (
            "Throughput and the gateway's added TTFT",
            images([tokens_per_s_chart(result), added_histogram(result)], "tokens per second, added TTFT"),
        ),
    ]
    return page("streamgate live bench", meta, sections)


# --- a `python -m bench` result (the mock bench) --------------------------------------------


def servers_of(figures: dict[str, dict[str, float | None]]) -> list[str]:
    names = {name for values in figures.values() for name in values}
    return [name for name in ("upstream", "streamgate", "tutorial") if name in names] + sorted(
        names - {"upstream", "streamgate", "tutorial"}
    )


def concurrencies(figures: dict[str, Any]) -> list[int]:
    found = {int(name[6:].split("_", 1)[0]) for name in figures if name.startswith("ttft_c") and "_p50_" in name}
    return sorted(found)


def mock_ttft_chart(figures: dict[str, dict[str, float | None]], concurrency: int) -> str:
    def draw(axes: Any) -> None:
        for server in servers_of(figures):
            points = [(figures.get(f"ttft_c{concurrency}_p{q}_ms", {}).get(server), q / 100) for q in (50, 90, 99)]
            points = [(ms, fraction) for ms, fraction in points if ms is not None]
            if points:
                axes.plot(*zip(*points, strict=True), marker="o", label=server, color=SERVER_COLOURS.get(server))
        log_scale(axes.xaxis, axes.set_xscale)
        axes.set_ylim(0.4, 1.02)
        axes.legend(loc="lower right")

    return chart(
        f"TTFT at concurrency {concurrency} (p50, p90, p99)",
        "time to first token (ms, log)",
        "fraction of requests",
        draw,
        SMALL,
    )


def log_scale(axis: Any, set_scale: Callable[[str], None]) -> None:
    """A log axis labelled 1, 2, 5 per decade in plain numbers (`0.2`, `5`, `10`)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    set_scale("log")
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def bars(
    figures: dict[str, dict[str, float | None]], names: list[tuple[str, str]], title: str, ylabel: str
) -> str | None:
    present = [(name, label) for name, label in names if any(v is not None for v in figures.get(name, {}).values())]
    servers = [s for s in servers_of(figures) if any(figures[name].get(s) is not None for name, _ in present)]
    if not present:
        return None

    def draw(axes: Any) -> None:
        width = 0.8 / max(1, len(servers))
        for position, server in enumerate(servers):
            values = [figures[name].get(server) or 0.0 for name, _ in present]
            axes.bar(
                [i + (position - (len(servers) - 1) / 2) * width for i in range(len(present))],
                values,
                width,
                label=server,
                color=SERVER_COLOURS.get(server),
            )
        axes.set_xticks(range(len(present)), [label for _, label in present])
        axes.legend()

    return chart(title, "phase", ylabel, draw, SMALL)


def open_loop_chart(figures: dict[str, dict[str, float | None]]) -> str | None:
    rates = sorted(
        int(name.split("_")[2])
        for name in figures
        if name.startswith("open_loop_")
        and name.endswith("_p99_ms")
        and "added" not in name
        and name.split("_")[2].isdigit()
    )
    if not rates:
        return None

    def draw(axes: Any) -> None:
        for server in servers_of(figures):
            points = [(rate, figures[f"open_loop_{rate}_p99_ms"].get(server)) for rate in rates]
            points = [(rate, ms) for rate, ms in points if ms is not None]
            if points:
                axes.plot(*zip(*points, strict=True), marker="o", label=server, color=SERVER_COLOURS.get(server))
        log_scale(axes.yaxis, axes.set_yscale)
        axes.legend()

    return chart(
        "Open loop: TTFT p99 against the offered rate", "offered rate (requests/s)", "TTFT p99 (ms, log)", draw
    )


def mock_charts(figures: dict[str, dict[str, float | None]]) -> list[str]:
    charts: list[str | None] = [mock_ttft_chart(figures, c) for c in concurrencies(figures)]
    charts.append(
        bars(
            figures,
            [("single_stream_frames_per_s", "one stream"), ("many_streams_frames_per_s", "many streams")],
            "Frames per second",
            "frames/s",
        )
    )
    charts.append(bars(figures, [("cpu_us_per_frame", "per frame (µs)")], "Server CPU per frame", "CPU µs"))
    charts.append(
        bars(
            figures,
            [("cpu_ms_per_short_request", "per 8-token request (ms)")],
            "Server CPU per short request",
            "CPU ms",
        )
    )
    charts.append(open_loop_chart(figures))
    return [c for c in charts if c is not None]


def mock_html(data: dict[str, Any]) -> str:
    machine = data.get("machine", {})
    versions = ", ".join(f"{k} {machine[k]}" for k in ("openai", "anthropic", "google-genai") if k in machine)
    meta = [
        ("date", data.get("date")),
        ("command", data.get("command")),
        ("machine", f"Linux {machine.get('kernel', '')}; {machine.get('cpu', '')}; {machine.get('cores')} CPUs"),
        ("Python", machine.get("python")),
        ("versions", versions),
        ("duration", f"{data.get('duration_s')} s"),
    ]
    sections = []
    for provider, result in data.get("results", {}).items():
        sections.append((f"{provider}: charts", images(mock_charts(result.get("figures", {})), provider)))
        sections.append((f"{provider}: figures", f"<pre>{esc(result.get('table', ''))}</pre>"))
        if "stalls_table" in result:
            sections.append((f"{provider}: open-loop stalls", f"<pre>{esc(result['stalls_table'])}</pre>"))
    return page("streamgate bench (mock upstream)", meta, sections)


# --- the command ----------------------------------------------------------------------------


def html_of(raw: bytes) -> str:
    """The report of a result file's bytes, live or mock."""
    data = json.loads(raw)
    if data.get("kind") == "live":
        return live_html(decoder.decode(raw))
    if "results" in data:
        return mock_html(data)
    raise ValueError("not a bench result: neither `kind: live` nor `results`")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench report", description=__doc__.splitlines()[0])
    parser.add_argument("result", help="a JSON result of `python -m bench` or `python -m bench live`")
    parser.add_argument("--out", help="the HTML file (default: next to the JSON)")
    args = parser.parse_args(argv)
    source = Path(args.result)
    out = Path(args.out) if args.out else source.with_suffix(".html")
    out.write_text(html_of(source.read_bytes()), encoding="utf-8")
    print(out)
    return 0
