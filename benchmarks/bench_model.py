"""The cost of the default page model: decode + free, today's model against the new one.

    python -m benchmarks.bench_model [--quick]

Contenders, given the same pre-encoded ``bytes`` (``FakeLibrary.page_bytes``, as in
``bench_decode``: no server is measured):

* **before**: the page models as they were before issue #14 (lists, every nested object
  decoded at once), frozen in ``benchmarks/_model_before.py``;
* **now**: :data:`kling_async.models.ASSETS_PAGE_DECODER` (tuples; the nested objects of each
  work and each entry's task kept as sent and decoded on first read);
* **now, every part read**: the same, then :meth:`AssetsPage.load` (every lazy part decoded):
  what a caller that reads everything pays. Shown, not judged.

Each call decodes a page and drops it, so the time is decode + free. The cyclic garbage
collector is off while timing, so the figure is the work itself, not the collections that the
allocations trigger (those grow with the number of GC-tracked objects, counted separately:
the objects the garbage collector tracks after one decode, per work, with the collector off so
that none is untracked behind our back).
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from kling_async.models import ASSETS_PAGE_DECODER

from ._common import fmt_ratio, machine_line, markdown_table, measure_round_robin, verdict
from ._model_before import TODAY_DECODER
from .bench_decode import Page, make_page

BEFORE = "before (lists, eager)"
NOW = "now (tuples, lazy parts)"
NOW_LOADED = "now, every part read"

SPEEDUP_TARGETS = ((40, 1.5), (500, 2.0))
"""(works per page, decode + free at least this many times faster than before)."""
OBJECTS_TARGET = 0.25
"""GC-tracked objects per decoded work: at most this fraction of before's."""


@contextmanager
def gc_off() -> Iterator[None]:
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def tracked_objects(decode: Callable[[bytes], object], body: bytes) -> int:
    """How many GC-tracked objects one decode of ``body`` leaves (the collector off)."""
    with gc_off():
        before = len(gc.get_objects())
        page = decode(body)
        count = len(gc.get_objects()) - before
        del page
    return count


def contenders() -> dict[str, Callable[[bytes], object]]:
    return {
        BEFORE: TODAY_DECODER.decode,
        NOW: ASSETS_PAGE_DECODER.decode,
        NOW_LOADED: lambda body: ASSETS_PAGE_DECODER.decode(body).load(),
    }


def run(
    pages: Sequence[Page], *, repeats: int, min_time: float
) -> tuple[str, list[tuple[str, bool, str]]]:
    """Time each contender on each page; the table and the target checks."""
    rows: list[list[str]] = []
    checks: list[tuple[str, bool, str]] = []
    fns = contenders()
    for page in pages:
        timed = {name: (lambda fn=fn, body=page.body: fn(body)) for name, fn in fns.items()}
        with gc_off():
            timings = measure_round_robin(timed, repeats=repeats, min_time=min_time)
        before = timings[BEFORE].best
        objects = {name: tracked_objects(fn, page.body) / page.works for name, fn in fns.items()}
        for name, timing in timings.items():
            t = timing.best
            rows.append(
                [
                    page.label,
                    name,
                    f"{t * 1e6:,.0f}",
                    f"{t / page.works * 1e6:.2f}",
                    fmt_ratio(before / t),
                    f"{objects[name]:.2f}",
                    fmt_ratio(objects[name] / objects[BEFORE]),
                ]
            )
        for works, goal in SPEEDUP_TARGETS:
            if works <= page.works < 2 * works:
                got = before / timings[NOW].best
                checks.append(
                    (
                        f"decode + free ≥ {goal:g}x before ({page.label})",
                        got >= goal,
                        fmt_ratio(got),
                    )
                )
        share = objects[NOW] / objects[BEFORE]
        checks.append(
            (
                f"GC-tracked objects per work ≤ {OBJECTS_TARGET:g} of before ({page.label})",
                share <= OBJECTS_TARGET,
                f"{objects[NOW]:.2f} vs {objects[BEFORE]:.2f} ({share:.2f})",
            )
        )
    table = markdown_table(
        [
            "page",
            "model",
            "µs/page",
            "µs/work",
            "speed vs before",
            "GC objects/work",
            "objects vs before",
        ],
        rows,
        "llrrrrr",
    )
    return table, checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_model", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per contender")
    args = parser.parse_args(argv)
    sizes: tuple[int, ...]
    if args.quick:
        sizes, repeats, min_time = (40,), args.repeats or 1, 0.001
    else:
        sizes, repeats, min_time = (40, 500), args.repeats or 15, 0.2
    pages = [make_page(n, non_ascii=False) for n in sizes]
    print(machine_line())
    print(
        "Decode + free one GET /assets/ page from bytes; best of "
        f"{repeats} interleaved repeats, cyclic GC off. 'speed vs before' = before's time / "
        "this one's.\n"
    )
    table, checks = run(pages, repeats=repeats, min_time=min_time)
    print(table)
    print()
    if args.quick:
        print("- (--quick: sizes too small for the verdicts below to mean anything)")
    for text, ok, detail in checks:
        print(f"- {verdict(ok)}: {text}: {detail}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
