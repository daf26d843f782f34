"""`python -m bench live`: real providers, through streamgate and directly, prompt by prompt.

    python -m bench live --provider openai,anthropic [--model M[,M…]] [--requests N]
        [--concurrency C] [--out DIR] [--prompts FILE] [--time-limit S] [--gateway URL]

For every target (provider/model) and prompt, one request goes through the gateway's native
endpoint and one directly with the provider's official SDK, one right after the other, the
order alternating per prompt, so drift hits both sides alike; the gateway's added time to
first token is the difference of each such pair. A model is `M` (for every provider given),
`P/M` (for provider P only) or `route:NAME` (a route of the gateway's config, sent as
`model`; the direct side calls what the route served). Without a model, a provider's default
model is the one the gateway serves. Before measuring, each target gets one unmeasured pair
(which also learns what a route or a default serves, and opens the connections).

The run is bounded by the counts and `--time-limit`; a progress line goes to stderr; Ctrl-C
stops it and what was measured so far is written, as always, to `DIR/<run>.json` and
`DIR/<run>.html` (`python -m bench report` draws the HTML again, `compare` sets two runs side
by side). Without `--gateway`, a gateway of its own is started with this environment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import httpx2

from bench import prompts as prompt_set
from bench.gateway import HEALTH, GatewayError, OwnGateway, request_body, stream_through
from bench.live_figures import all_figures
from bench.live_result import MODES, LiveResult, Machine, Mode, Sample, Target, encoder
from bench.providers_direct import (
    PROVIDERS,
    DirectClient,
    Stopwatch,
    direct_client,
    error_type,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PROBE_MAX_TOKENS = 16


@dataclass(frozen=True)
class Wanted:
    """A target as asked for on the command line, before the gateway says what it serves."""

    provider: str | None
    model: str | None
    route: str | None = None


def wanted_targets(providers: list[str], models: list[str]) -> list[Wanted]:
    """`--provider` × `--model`: a bare model for every provider, `P/M` for P, `route:NAME` once."""
    for provider in providers:
        if provider not in PROVIDERS:
            raise ValueError(f"--provider {provider!r}: expected one of {', '.join(PROVIDERS)}")
    routes = [Wanted(None, None, m.removeprefix("route:")) for m in models if m.startswith("route:")]
    qualified = [m.split("/", 1) for m in models if m.split("/", 1)[0] in PROVIDERS]
    bare = [m for m in models if not m.startswith("route:") and m.split("/", 1)[0] not in PROVIDERS]
    wanted = [Wanted(p, m) for p, m in qualified]
    for provider in providers:
        has_own = any(w.provider == provider for w in wanted)
        if bare:
            wanted += [Wanted(provider, model) for model in bare]
        elif not has_own and not routes:
            wanted.append(Wanted(provider, None))
    return wanted + routes


@dataclass(frozen=True)
class Plan:
    wanted: list[Wanted]
    requests: int
    concurrency: int
    time_limit_s: float | None
    max_tokens: int
    prompts: list[str]


@dataclass
class Run:
    """One live run: the clients, the samples so far, and the progress line."""

    plan: Plan
    http: httpx2.AsyncClient
    direct: dict[str, DirectClient] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    stopped_by: str | None = None
    _last_progress: float = 0.0

    @property
    def total(self) -> int:
        return len(self.targets) * self.plan.requests * len(MODES)

    def through_body(self, target: Target, prompt: str, max_tokens: int) -> dict[str, object]:
        if target.route is not None:
            return request_body(None, target.route, prompt, max_tokens)
        return request_body(target.provider, target.model, prompt, max_tokens)

    async def resolve(self, wanted: Wanted) -> Target:
        """One unmeasured stream through the gateway: what it serves for `wanted`."""
        watch = Stopwatch()
        body = request_body(wanted.provider, wanted.route or wanted.model, self.plan.prompts[0], PROBE_MAX_TOKENS)
        served = await stream_through(self.http, body, watch)
        if wanted.model is not None and wanted.provider is not None:
            return Target(wanted.provider, wanted.model)
        return Target(served.provider, served.model, wanted.route)

    async def warm_up(self) -> None:
        for wanted in self.plan.wanted:
            try:
                target = await self.resolve(wanted)
            except GatewayError as exc:
                raise RuntimeError(f"{wanted}: the gateway answered {exc.kind}") from None
            if target.provider not in self.direct:
                self.direct[target.provider] = direct_client(target.provider, os.environ)
            await self.direct[target.provider].stream(target.model, self.plan.prompts[0], PROBE_MAX_TOKENS, Stopwatch())
            self.targets.append(target)

    async def measure(self, target: Target, mode: Mode, index: int, went_first: bool) -> None:
        prompt = prompt_set.nth(self.plan.prompts, index)
        watch, tokens, error = Stopwatch(), None, None
        try:
            if mode == "through":
                tokens = (
                    await stream_through(self.http, self.through_body(target, prompt, self.plan.max_tokens), watch)
                ).output_tokens
            else:
                tokens = await self.direct[target.provider].stream(target.model, prompt, self.plan.max_tokens, watch)
        except GatewayError as exc:
            error = exc.kind
        except Exception as exc:  # noqa: BLE001 - every failure is a figure: counted by its type
            error = error_type(exc)
        watch.end()
        self.samples.append(sample_of(target, mode, index, went_first, watch, tokens, error, self.started))
        self.progress()

    async def pair(self, target: Target, index: int) -> None:
        order = MODES if index % 2 == 0 else MODES[::-1]
        for position, mode in enumerate(order):
            await self.measure(target, mode, index, position == 0)

    def jobs(self) -> Iterator[tuple[Target, int]]:
        for index in range(self.plan.requests):
            for target in self.targets:
                yield target, index

    async def worker(self, jobs: Iterator[tuple[Target, int]]) -> None:
        limit = self.plan.time_limit_s
        for target, index in jobs:
            if limit is not None and time.perf_counter() - self.started >= limit:
                self.stopped_by = "time limit"
                return
            await self.pair(target, index)

    async def measure_all(self) -> None:
        self.started = time.perf_counter()
        jobs = self.jobs()
        await asyncio.gather(*(self.worker(jobs) for _ in range(self.plan.concurrency)))

    def progress(self, final: bool = False) -> None:
        now = time.perf_counter()
        tty = sys.stderr.isatty()
        if not final and now - self._last_progress < (0.1 if tty else 0.5):
            return
        self._last_progress = now
        line = progress_line(
            len(self.samples),
            self.total,
            sum(s.error is not None for s in self.samples),
            now - self.started,
            self.plan.time_limit_s,
        )
        sys.stderr.write(("\r" + line + ("\n" if final else "")) if tty else line + "\n")
        sys.stderr.flush()


def sample_of(
    target: Target,
    mode: Mode,
    index: int,
    went_first: bool,
    watch: Stopwatch,
    tokens: int | None,
    error: str | None,
    run_started: float,
) -> Sample:
    ended = watch.ended_at or time.perf_counter()
    first = watch.first_text_at
    if error is None and first is None:
        error = "no answer text"
    rate = None
    if error is None and tokens is not None and tokens > 1 and first is not None and ended > first:
        rate = (tokens - 1) / (ended - first)
    return Sample(
        target=target.label,
        mode=mode,
        prompt=index,
        started_s=watch.started_at - run_started,
        total_s=ended - watch.started_at,
        ttft_s=None if first is None else first - watch.started_at,
        output_tokens=tokens,
        tokens_per_s=rate,
        error=error,
        went_first=went_first,
    )


def progress_line(done: int, total: int, errors: int, elapsed_s: float, limit_s: float | None) -> str:
    eta = elapsed_s / done * (total - done) if done else None
    if eta is not None and limit_s is not None:
        eta = max(0.0, min(eta, limit_s - elapsed_s))
    eta_text = "?" if eta is None else f"{eta:.0f} s"
    return f"live: {done}/{total} requests, {errors} errors, {elapsed_s:.1f} s elapsed, ETA {eta_text}"


# --- the run as a whole ---------------------------------------------------------------------


def machine() -> Machine:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    versions = {}
    for name in ("streamgate", "openai", "anthropic", "google-genai", "httpx2"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return Machine(
        platform.platform(), cpu or platform.processor(), os.cpu_count() or 0, platform.python_version(), versions
    )


async def run_live(run: Run) -> None:
    """Warm up, then measure until done, the time limit, or a Ctrl-C (then what is measured stays)."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        run.stopped_by = "SIGINT"
        if task is not None:
            task.cancel()

    loop.add_signal_handler(signal.SIGINT, interrupted)
    try:
        await run.warm_up()
        await run.measure_all()
    except asyncio.CancelledError:
        if run.stopped_by != "SIGINT" or task is None:
            raise
        task.uncancel()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        run.progress(final=True)
        for client in run.direct.values():
            await client.close()


def result_of(run: Run, command: str, date: str, gateway: str, took_s: float) -> LiveResult:
    labels = [target.label for target in run.targets]
    figures, added = all_figures(labels, run.samples)
    return LiveResult(
        kind="live",
        command=command,
        date=date,
        duration_s=round(took_s, 2),
        machine=machine(),
        gateway=gateway,
        targets=run.targets,
        requests_per_target=run.plan.requests,
        concurrency=run.plan.concurrency,
        interrupted=run.stopped_by == "SIGINT",
        stopped_by=run.stopped_by,
        samples=run.samples,
        figures=figures,
        added_ttft=added,
    )


async def measure(plan: Plan, gateway_url: str) -> Run:
    headers = {}
    if os.environ.get("GATEWAY_API_KEY"):
        headers["authorization"] = f"Bearer {os.environ['GATEWAY_API_KEY']}"
    timeout = float(os.environ.get("UPSTREAM_TIMEOUT_S", "60")) + 30
    limits = httpx2.Limits(max_connections=plan.concurrency + 4, max_keepalive_connections=plan.concurrency + 4)
    async with httpx2.AsyncClient(base_url=gateway_url, timeout=timeout, headers=headers, limits=limits) as http:
        (await http.get(HEALTH)).raise_for_status()
        run = Run(plan, http)
        await run_live(run)
    return run


def measure_with_gateway(plan: Plan, url: str | None, log_path: Path) -> Run:
    """Measure through the gateway at `url`, or through one of our own started for the run."""
    if url is not None:
        return asyncio.run(measure(plan, url))
    own = OwnGateway(log_path)
    try:
        own.start()
        asyncio.run(own.wait_ready())
        return asyncio.run(measure(plan, own.url))
    finally:
        own.stop()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench live", description=__doc__.splitlines()[0])
    parser.add_argument("--provider", required=True, help="comma-separated: " + ",".join(PROVIDERS))
    parser.add_argument("--model", default="", help="comma-separated: M, P/M or route:NAME (default: the gateway's)")
    parser.add_argument("--requests", type=int, default=20, help="prompts per target (each sent both ways)")
    parser.add_argument("--concurrency", type=int, default=1, help="prompt pairs in flight at once")
    parser.add_argument("--out", default=str(RESULTS), help="directory of the JSON and HTML")
    parser.add_argument("--prompts", help="a file with one prompt per line (default: a built-in set)")
    parser.add_argument("--time-limit", type=float, help="seconds; no new pair starts after it")
    parser.add_argument("--max-tokens", type=int, default=512, help="the length limit sent both ways")
    parser.add_argument("--gateway", help="a running gateway's URL (default: start one)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from bench import report  # matplotlib is imported only here, when a report is drawn

    started = time.time()
    name = time.strftime("live-%Y%m%dT%H%M%SZ", time.gmtime(started))
    out = Path(args.out)
    try:  # what fails before any measurement is one line, no traceback
        wanted = wanted_targets(args.provider.split(","), [m for m in args.model.split(",") if m])
        plan = Plan(
            wanted, args.requests, args.concurrency, args.time_limit, args.max_tokens, prompt_set.load(args.prompts)
        )
        run = measure_with_gateway(plan, args.gateway, out / f"{name}.gateway.log")
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"bench live: {exc}", file=sys.stderr)
        return 2
    except httpx2.HTTPError as exc:
        print(f"bench live: the gateway at {args.gateway or 'our own'}: {exc}", file=sys.stderr)
        return 2
    command = "python -m bench live " + " ".join(argv)
    result = result_of(
        run,
        command,
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        args.gateway or "own (python -m streamgate)",
        time.time() - started,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_bytes(encoder.encode(result))
    (out / f"{name}.html").write_text(report.live_html(result), encoding="utf-8")
    print(f"{out / name}.json\n{out / name}.html")
    return 130 if result.interrupted else 0
