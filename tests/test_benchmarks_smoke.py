"""Smoke tests of ``benchmarks/``: each benchmark runs at a tiny size and prints its table.

Nothing here is timed and no speed is asserted; these only keep the benchmarks from rotting.
orjson and pydantic (the ``bench`` extra) are optional: their rows are expected only when
they are installed.
"""

from __future__ import annotations

import os

import pytest

from benchmarks import (
    bench_decode,
    bench_export,
    bench_memory,
    bench_model,
    bench_overhead,
    bench_walk,
)
from benchmarks._common import FakeServerProcess, markdown_table, measure


def table_rows(output: str) -> list[list[str]]:
    """The body rows of the Markdown table(s) in ``output``, as stripped cells."""
    lines = [line for line in output.splitlines() if line.startswith("|")]
    assert len(lines) >= 3, f"no Markdown table in:\n{output}"
    assert set(lines[1]) <= set("|-: "), "the second table line is not a rule"
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def verdicts(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("- PASS", "- MISS"))]


def test_markdown_table_aligns_columns() -> None:
    """Every line of a table has the same width and the rule marks right-aligned columns."""
    table = markdown_table(["name", "n"], [["a", "1"], ["long name", "12,345"]])
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[1].endswith(":|")
    assert table_rows(table) == [["a", "1"], ["long name", "12,345"]]


def test_measure_reports_every_repeat() -> None:
    """The timing helper keeps one time per repeat; best <= median."""
    timing = measure(lambda: sum(range(100)), repeats=3, min_time=0.001)
    assert len(timing.times) == 3
    assert 0 < timing.best <= timing.median


def test_fake_server_process_is_stopped_on_exit() -> None:
    """The fake server child prints its URL and is gone (reaped) after the block."""
    with FakeServerProcess(tasks=5, token="t") as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server._proc is not None
        pid = server._proc.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_bench_decode_quick(capsys: pytest.CaptureFixture[str]) -> None:
    """One row per decoder and page; ours is the 1.00x reference; both targets are judged."""
    assert bench_decode.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Machine: ")
    rows = table_rows(out)
    expected = [bench_decode.OURS, bench_decode.OURS_LOADED, bench_decode.JSON]
    if bench_decode.HAVE_ORJSON:
        expected.append(bench_decode.ORJSON)
    if bench_decode.HAVE_PYDANTIC:
        expected.append(bench_decode.PYDANTIC)
    assert [row[2] for row in rows] == expected * 2  # ASCII page, then non-ASCII page
    assert {row[0].split(", ")[1] for row in rows} == {"ASCII", "non-ASCII"}
    assert all(row[6] == "1.00x" for row in rows if row[2] == bench_decode.OURS)
    assert len(verdicts(out)) == (2 if bench_decode.PYDANTIC in expected else 1)


def test_pydantic_model_matches_ours() -> None:
    """The pydantic contender decodes a non-ASCII page to exactly the data ours does."""
    pytest.importorskip("pydantic")
    bench_decode.check_equivalent(bench_decode.make_page(40, non_ascii=True))


def test_bench_model_quick(capsys: pytest.CaptureFixture[str]) -> None:
    """Before, now and now with every part read on one page; speed and objects judged."""
    assert bench_model.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [row[1] for row in rows] == [bench_model.BEFORE, bench_model.NOW, bench_model.NOW_LOADED]
    assert rows[0][4] == "1.00x" and rows[0][6] == "1.00x"
    assert len(verdicts(out)) == 2  # the 40-work speed target and the objects target


def test_bench_walk_quick(capsys: pytest.CaptureFixture[str]) -> None:
    """Three walkers at two latencies, all counting the same works; both targets judged."""
    assert bench_walk.main(["--quick"]) == 0
    out = capsys.readouterr().out
    clocks, arrivals = out.split("Clock modes:")[1].split("Steady arrivals:")
    rows = table_rows(out.split("Clock modes:")[0])
    assert [row[2] for row in rows] == [bench_walk.NAIVE, bench_walk.P0, bench_walk.P4] * 2
    assert len({row[1] for row in rows}) == 1  # same library size in both scenarios
    clock_rows = table_rows(clocks)
    assert [(r[0], r[1]) for r in clock_rows] == [
        (c, str(d)) for c in bench_walk.CLOCKS for d in bench_walk.DEPTHS
    ]
    assert [(r[0], r[1]) for r in table_rows(arrivals)] == [
        ("0.1", "0"),
        ("0.1", "4"),
        ("0.5", "0"),
        ("0.5", "4"),
    ]
    assert len(verdicts(out)) == 6


def test_bench_overhead_quick(capsys: pytest.CaptureFixture[str]) -> None:
    """The own-model walk against the bare loop over HTTP, and the walk's bookkeeping in
    memory: every contender counts the same works, both targets are judged."""
    assert bench_overhead.main(["--quick"]) == 0
    out = capsys.readouterr().out
    http, memory = out.split("Bookkeeping:")
    assert [row[0] for row in table_rows(http)] == list(bench_overhead.HTTP_CONTENDERS)
    assert [row[0] for row in table_rows(memory)] == [
        "bare loop",
        "bare async generator",
        bench_overhead.MODEL,
    ]
    assert len(verdicts(out)) == 2


def test_bench_memory_quick(capsys: pytest.CaptureFixture[str]) -> None:
    """Heap and RSS peaks for a small and a larger walk, each from a child process."""
    assert bench_memory.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [(row[0], row[1]) for row in rows] == [
        ("peak heap (tracemalloc)", "200"),
        ("peak heap (tracemalloc)", "2,000"),
        ("peak RSS", "200"),
        ("peak RSS", "2,000"),
    ]
    assert all(float(row[2].replace(",", "")) > 0 for row in rows)
    assert len(verdicts(out)) == 2


def test_bench_export_quick(capsys: pytest.CaptureFixture[str]) -> None:
    """The naive script and two exports write the same file; speed and CPU both judged."""
    assert bench_export.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [row[0] for row in rows] == list(bench_export.CONTENDERS)
    assert rows[0][3] == "1.00x" and rows[0][5] == "1.00x"
    assert len(verdicts(out)) == 2


def test_bench_prefetch_quick(capsys: pytest.CaptureFixture[str]) -> None:
    """Every fixed depth and "auto" at both latencies; one verdict per latency."""
    from benchmarks import bench_prefetch

    assert bench_prefetch.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [r[1] for r in rows] == [str(d) for d in bench_prefetch.DEPTHS] * 2
    assert len(verdicts(out)) == 2
