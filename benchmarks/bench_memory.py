"""Memory of a long walk: does ``iter_works`` stay flat from 2,000 to 200,000 works?

    python -m benchmarks.bench_memory [--quick] [--prefetch N]

Each measurement runs in a fresh interpreter (``python -m benchmarks.bench_memory --child
...``) that walks ``max_items`` works with ``iter_works`` against the fake server, counting each
work and dropping it. The server runs in its own child process, so none of its memory counts.

* **peak heap**: ``tracemalloc``'s peak, tracing started after the imports, just before the
  walk: every Python allocation the walk makes (pages, bodies, the event loop, aiohttp);
* **peak RSS**: the process's high-water resident set (``VmHWM``, else ``ru_maxrss``), from a
  separate child run without ``tracemalloc`` (whose own tables would inflate it); the interpreter
  and imports are in it, so the table also shows how much the walk added.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._common import (
    ROOT,
    FakeServerProcess,
    fmt_ratio,
    machine_line,
    markdown_table,
    sigterm_as_exit,
    verdict,
)

TOKEN = "bench-token"
TARGET = 1.2
"""Peak at the large walk must be at most this many times the peak at the small one."""


# --------------------------------------------------------------------------- child


def _peak_rss_bytes() -> int:
    """High-water RSS of this process."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


async def _walk(base_url: str, works: int, prefetch: int) -> int:
    from kling_async import KlingSession

    count = 0
    async with KlingSession(TOKEN, base_url=base_url) as kling:
        async for _work in kling.iter_works(max_items=works, prefetch=prefetch):
            count += 1  # counted and dropped: the client keeps nothing
    return count


def child(base_url: str, works: int, metric: str, prefetch: int) -> dict[str, Any]:
    """Run in the fresh interpreter: walk, then report one measurement."""
    # Everything the walk imports, imported before the baseline.
    import aiohttp  # noqa: F401

    import kling_async  # noqa: F401

    start = time.perf_counter()
    if metric == "heap":
        import tracemalloc

        tracemalloc.start()
        count = asyncio.run(_walk(base_url, works, prefetch))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"works": count, "peak": peak, "seconds": time.perf_counter() - start}
    baseline = _peak_rss_bytes()
    count = asyncio.run(_walk(base_url, works, prefetch))
    peak = _peak_rss_bytes()
    return {
        "works": count,
        "peak": peak,
        "baseline": baseline,
        "seconds": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------- parent


def measure_in_child(base_url: str, works: int, metric: str, prefetch: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_memory",
        "--child",
        "--base-url",
        base_url,
        "--works",
        str(works),
        "--metric",
        metric,
        "--prefetch",
        str(prefetch),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["works"] != works:
        raise RuntimeError(f"the child walked {result['works']} works, not {works}")
    return result


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def run(small: int, large: int, prefetch: int) -> tuple[str, list[tuple[str, bool, str]]]:
    # ~2.2 works per task (image tasks hold 4): this many tasks hold more than `large` works.
    tasks = large // 2 + 100
    results: dict[tuple[str, int], dict[str, Any]] = {}
    with FakeServerProcess(tasks=tasks, token=TOKEN) as server:
        for metric in ("heap", "rss"):
            for works in (small, large):
                results[(metric, works)] = measure_in_child(
                    server.base_url, works, metric, prefetch
                )
    rows: list[list[str]] = []
    checks: list[tuple[str, bool, str]] = []
    for metric, label in (("heap", "peak heap (tracemalloc)"), ("rss", "peak RSS")):
        lo, hi = results[(metric, small)], results[(metric, large)]
        ratio = hi["peak"] / lo["peak"]
        for r in (lo, hi):
            rows.append(
                [
                    label,
                    f"{r['works']:,}",
                    _mib(r["peak"]),
                    _mib(r["peak"] - r["baseline"]) if "baseline" in r else "(all walk)",
                    f"{r['seconds']:.2f}",
                    fmt_ratio(r["peak"] / lo["peak"]),
                ]
            )
        checks.append(
            (
                f"{label} at {large:,} works ≤ {TARGET:g}x at {small:,} works",
                ratio <= TARGET,
                fmt_ratio(ratio),
            )
        )
    table = markdown_table(
        ["measure", "works walked", "peak MiB", "added by walk MiB", "child s", "x small"],
        rows,
        "lrrrrr",
    )
    return table, checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_memory", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--prefetch", type=int, default=0, help="iter_works prefetch (default 0)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--works", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--metric", choices=("heap", "rss"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.base_url, args.works, args.metric, args.prefetch)))
        return 0
    small, large = (200, 2_000) if args.quick else (2_000, 200_000)
    print(machine_line())
    print(
        f"iter_works(prefetch={args.prefetch}, page_size=40, max_items=N), each measure in a "
        "fresh child process, fake server in another; works counted and dropped.\n",
        flush=True,
    )
    try:
        with sigterm_as_exit():
            table, checks = run(small, large, args.prefetch)
    except KeyboardInterrupt:
        print("interrupted; the fake server was stopped", file=sys.stderr)
        return 130
    print(table)
    print()
    if args.quick:
        print("- (--quick: sizes too small for the verdicts below to mean anything)")
    for text, ok, detail in checks:
        print(f"- {verdict(ok)}: {text}: {detail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
