"""kling-async export: lossless JSONL, filters, kill and resume, faults, exit codes, progress."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kling_async import cli
from kling_async._export import ExportConfig, ExportState, checkpoint_path, run_export
from kling_async._progress import Progress, format_bytes, format_duration
from kling_async._walk import WalkCheckpoint
from kling_async.testing import FakeKlingServer, FakeLibrary, Faults

from .conftest import Scripted

TOKEN = "sk-export-test-7f3a9c"
ROOT = Path(__file__).resolve().parent.parent


def expected_works(
    library: FakeLibrary, page_size: int = 40, content_type: str | None = None
) -> list[dict[str, Any]]:
    """Every work of the fake library, in page order, as the server's own page dicts hold it."""
    works: list[dict[str, Any]] = []
    page_num = 1
    while True:
        history = library.page(page_num, page_size, content_type)["history"]
        if not history:
            return works
        works += [work for item in history for work in item["works"]]
        page_num += 1


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "the file ends with a partial line"
    return [json.loads(line) for line in data.splitlines()]


def export_args(server: FakeKlingServer, *extra: str) -> list[str]:
    return ["export", *extra, "--base-url", server.base_url, "--token", server.token]


async def spawn(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kling_async",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, **(env or {})}
        if env
        else {k: v for k, v in os.environ.items() if k != "USEAPI_TOKEN"},
    )


async def run_process(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await spawn(*args, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def wait_until(predicate: Callable[[], bool], timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def committed_works(out: Path) -> int:
    """Works the checkpoint beside ``out`` says are durable (0 if there is none yet)."""
    try:
        data = checkpoint_path(out).read_bytes()
    except FileNotFoundError:
        return 0
    return msgspec.json.decode(data, type=ExportState).works


def line_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


# -- lossless output and filters ----------------------------------------------------------


def test_lossless_lines_equal_the_servers_work_dicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each line is a work exactly as the fake sent it (camelCase, every field), in order."""
    out = tmp_path / "works.jsonl"
    with FakeKlingServer(tasks=150, token=TOKEN, seed=3) as server:
        assert cli.main(export_args(server, str(out), "--page-size", "25", "-q")) == 0
        expected = expected_works(server.library, 25)
    lines = read_jsonl(out)
    assert len(lines) == len(expected) > 150  # image tasks hold four works
    assert lines == expected
    assert "workId" in lines[0] and "taskInfo" in lines[0] and "work_id" not in lines[0]
    state = msgspec.json.decode(checkpoint_path(out).read_bytes(), type=ExportState)
    assert state.finished and state.works == len(expected)
    assert state.out_bytes == out.stat().st_size
    assert TOKEN.encode() not in checkpoint_path(out).read_bytes()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # -q: no progress, no summary


async def test_unmodelled_fields_and_multiline_json_survive(
    scripted: Scripted, tmp_path: Path
) -> None:
    """Fields the library does not model stay, and pretty-printed works still make one line."""
    works = [
        {
            "workId": 900_000_001 + i,
            "status": 99,
            "createTime": 1_800_000_000_000 - i,
            "brandNewField": {"nested": [1, 2.5, None, "x\ny"], "emoji": "🎬"},
            "someFlag": True,
        }
        for i in range(3)
    ]

    async def handler(request: web.Request) -> web.Response:
        history = [{"works": works, "task": {"id": 1}}] if request.query["pageNum"] == "1" else []
        return web.Response(text=json.dumps({"history": history}, indent=2, ensure_ascii=False))

    scripted.handle(handler)
    out = tmp_path / "w.jsonl"
    config = ExportConfig(out=str(out), token=TOKEN, base_url=scripted.base_url)
    result = await run_export(config)
    assert result.works == 3
    assert read_jsonl(out) == works


@pytest.mark.parametrize(
    ("options", "pick"),
    [
        (["--content-type", "audio"], "audio"),
        (["--max-items", "57"], "max"),
        (["--since", "SINCE"], "since"),
    ],
    ids=["content-type", "max-items", "since"],
)
def test_filters(tmp_path: Path, options: list[str], pick: str) -> None:
    """--content-type, --max-items and --since export exactly the works they select."""
    out = tmp_path / "w.jsonl"
    with FakeKlingServer(tasks=120, token=TOKEN, seed=4) as server:
        everything = expected_works(server.library, 40)
        if pick == "audio":
            expected = expected_works(server.library, 40, "audio")
            assert expected and all(w["contentType"] == "audio" for w in expected)
        elif pick == "max":
            expected = everything[:57]
        else:
            cut = everything[100]["createTime"]
            expected = [w for w in everything if w["createTime"] > cut]
            options = ["--since", str(cut)]
        assert cli.main(export_args(server, str(out), "-q", *options)) == 0
    assert read_jsonl(out) == expected


def test_since_accepts_iso_dates_naive_as_utc(tmp_path: Path) -> None:
    """--since takes an ISO datetime (naive = UTC, or with an offset or Z) like epoch ms."""
    with FakeKlingServer(tasks=60, token=TOKEN, seed=4) as server:
        everything = expected_works(server.library)
        cut = everything[30]["createTime"]
        when = datetime(1970, 1, 1) + timedelta(milliseconds=cut)  # naive, UTC
        results = []
        for text in (when.isoformat(), when.isoformat() + "Z", when.isoformat() + "+00:00"):
            out = tmp_path / f"w{len(results)}.jsonl"
            assert cli.main(export_args(server, str(out), "-q", "--since", text)) == 0
            results.append(read_jsonl(out))
    assert results[0] == results[1] == results[2]
    assert results[0] == [w for w in everything if w["createTime"] > cut]


def test_stdout_dash(capsys: pytest.CaptureFixture[str]) -> None:
    """OUT '-' writes the JSONL to stdout and leaves no checkpoint anywhere."""
    with FakeKlingServer(tasks=30, token=TOKEN, seed=1) as server:
        assert cli.main(export_args(server, "-", "--max-items", "20")) == 0
        expected = expected_works(server.library)[:20]
    captured = capsys.readouterr()
    assert [json.loads(line) for line in captured.out.splitlines()] == expected
    assert "exported 20 works" in captured.err


# -- resume ---------------------------------------------------------------------------------


@pytest.mark.parametrize("inserted", [0, 7], ids=["plain", "new-works-at-head"])
async def test_kill_9_mid_walk_then_resume(tmp_path: Path, inserted: int) -> None:
    """SIGKILL mid-walk, then --resume: every work once, no partial line, not from page 1,
    even when new works arrived at the head in between."""
    out = tmp_path / "works.jsonl"
    async with FakeKlingServer(tasks=500, token=TOKEN, seed=11, latency=0.04) as server:
        expected = expected_works(server.library, 20)
        proc = await spawn(
            *export_args(server, str(out), "--page-size", "20", "--prefetch", "1"),
            "--commit-interval",
            "0.2",
        )
        try:
            # Past a group commit, so the resume has somewhere to continue from.
            await wait_until(lambda: committed_works(out) >= 120)
        finally:
            proc.kill()
            await proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        assert line_count(out) < len(expected), "the walk finished before the kill"
        server.reset_stats()
        if inserted:
            server.insert_tasks(inserted)
        code, _, err = await run_process(*export_args(server, str(out), "--resume"))
        assert code == 0, err
        stats = server.stats
        assert stats.pages[0] > 1  # continued, not restarted
        # Page 1 only as a head probe (one entry), never as a page of works.
        assert all(p > 1 or n == 1 for p, n in zip(stats.pages, stats.page_sizes, strict=True)), (
            list(zip(stats.pages, stats.page_sizes, strict=True))
        )
    assert read_jsonl(out) == expected
    assert TOKEN not in err


async def test_ctrl_c_exits_130_and_resume_finishes(tmp_path: Path) -> None:
    """SIGINT: a one-line 'interrupted; resume with --resume', exit 130, checkpoint intact."""
    out = tmp_path / "works.jsonl"
    async with FakeKlingServer(tasks=400, token=TOKEN, seed=12, latency=0.04) as server:
        expected = expected_works(server.library, 20)
        proc = await spawn(*export_args(server, str(out), "--page-size", "20", "--prefetch", "0"))
        try:
            await wait_until(lambda: line_count(out) >= 60)
        finally:
            proc.send_signal(signal.SIGINT)
            _, err_bytes = await asyncio.wait_for(proc.communicate(), 20)
        err = err_bytes.decode()
        assert proc.returncode == 130, err
        assert "interrupted; resume with --resume" in err
        assert "Traceback" not in err
        state = msgspec.json.decode(checkpoint_path(out).read_bytes(), type=ExportState)
        assert not state.finished and 0 < state.out_bytes <= out.stat().st_size
        code, _, err = await run_process(*export_args(server, str(out), "--resume"))
        assert code == 0, err
    assert read_jsonl(out) == expected


def test_resume_drops_a_partial_line_and_unsaved_page(tmp_path: Path) -> None:
    """--resume truncates OUT to the checkpoint: a torn line and lines past it are rewritten."""
    out = tmp_path / "w.jsonl"
    with FakeKlingServer(tasks=100, token=TOKEN, seed=2) as server:
        expected = expected_works(server.library, 10)
        assert cli.main(export_args(server, str(out), "-q", "--page-size", "10")) == 0
        # Rewind the checkpoint to just after page 3, as a kill between pages leaves it, and
        # leave one more line and a torn one behind it.
        ckpt = checkpoint_path(out)
        state = msgspec.json.decode(ckpt.read_bytes(), type=ExportState)
        first3 = [
            w for n in (1, 2, 3) for h in server.library.page(n, 10)["history"] for w in h["works"]
        ]
        lines = out.read_bytes().splitlines(keepends=True)
        kept = b"".join(lines[: len(first3)])
        state.out_bytes, state.works, state.finished = len(kept), len(first3), False
        page3 = [w["workId"] for h in server.library.page(3, 10)["history"] for w in h["works"]]
        state.walk = WalkCheckpoint(
            next_page=3,
            page_size=10,
            size_proven=True,
            anchor_ids=page3,
            recent_ids=[w["workId"] for w in first3],
            works=len(first3),
        )
        ckpt.write_bytes(msgspec.json.encode(state))
        out.write_bytes(kept + lines[len(first3)] + lines[len(first3) + 1][:17])
        server.reset_stats()
        assert cli.main(export_args(server, str(out), "-q", "--resume")) == 0
        assert server.stats.pages[0] == 3  # where its place is: page 3 ends with it
    assert read_jsonl(out) == expected


def test_resume_of_a_finished_export_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--resume of a finished export asks nothing of the API, says so and exits 0."""
    out = tmp_path / "w.jsonl"
    with FakeKlingServer(tasks=20, token=TOKEN, seed=2) as server:
        assert cli.main(export_args(server, str(out), "-q")) == 0
        before = out.read_bytes()
        server.reset_stats()
        capsys.readouterr()
        assert cli.main(["export", str(out), "--resume"]) == 0  # no token needed
        assert server.stats.requests == 0
    assert "export already finished" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_existing_out_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --resume an existing OUT is refused (exit 2, suggesting --resume); --force
    starts over."""
    out = tmp_path / "w.jsonl"
    with FakeKlingServer(tasks=20, token=TOKEN, seed=2) as server:
        assert cli.main(export_args(server, str(out), "-q", "--max-items", "5")) == 0
        capsys.readouterr()
        assert cli.main(export_args(server, str(out), "-q")) == 2
        assert "resume it with --resume" in capsys.readouterr().err
        assert len(read_jsonl(out)) == 5
        assert cli.main(export_args(server, str(out), "-q", "--force")) == 0
        assert read_jsonl(out) == expected_works(server.library)


def test_resume_refuses_different_walk_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A resumed export keeps its options: a different --content-type is a usage error."""
    out = tmp_path / "w.jsonl"
    with FakeKlingServer(tasks=20, token=TOKEN, seed=2) as server:
        assert cli.main(export_args(server, str(out), "-q", "--content-type", "video")) == 0
        capsys.readouterr()
        code = cli.main(export_args(server, str(out), "--resume", "--content-type", "image"))
    assert code == 2
    assert "differs from the checkpoint" in capsys.readouterr().err


# -- faults and errors ------------------------------------------------------------------------


def test_fault_storm_loses_and_duplicates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """20% of requests fail (429, 5xx, dropped bodies): exit 0, every work once, retries shown."""
    out = tmp_path / "w.jsonl"
    faults = Faults(rate=0.2, kinds=("429", "500", "502", "503", "drop"), retry_after="0")
    with FakeKlingServer(tasks=400, token=TOKEN, seed=21, faults=faults) as server:
        argv = export_args(server, str(out), "--page-size", "20", "--max-retries", "12")
        assert cli.main([*argv, "--backoff-base", "0.001"]) == 0
        assert sum(server.stats.faults.values()) >= 5
        expected = expected_works(server.library, 20)
    assert read_jsonl(out) == expected
    err = capsys.readouterr().err
    retries = int(err.split(" retries, ")[0].rsplit(" ", 1)[1])
    assert retries >= 5
    assert "Traceback" not in err


async def test_wrong_token_exit_1_one_line_no_token_in_output(tmp_path: Path) -> None:
    """401: exit 1, one line saying to check the token, no traceback, the token never shown."""
    secret = "sk-wrong-token-4242"
    async with FakeKlingServer(tasks=10, token=TOKEN) as server:
        code, out, err = await run_process(
            "export",
            str(tmp_path / "w.jsonl"),
            "--base-url",
            server.base_url,
            env={"USEAPI_TOKEN": secret},
        )
    assert code == 1
    assert "unauthorized" in err and "check your token (USEAPI_TOKEN or --token)" in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert secret not in out + err


DEEP = b'{"history": [{"works": [{"workId": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}]}"


@pytest.mark.parametrize(
    ("status", "body", "needle"),
    [
        (402, b'{"error": "Subscription required", "code": 402}', "subscription"),
        (429, b'{"error": "busy"}', "rate limited"),
        (503, b"<html>503</html>", "server error (HTTP 503)"),
        (200, b'{"history": [', "unexpected response"),
        (200, DEEP, "unexpected response"),
    ],
    ids=["402", "429", "503", "broken-json", "deep-json"],
)
def test_api_failures_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int, body: bytes, needle: str
) -> None:
    """402, 429 after retries, 5xx and bad bodies: exit 1 and one line naming the cause."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, content_type="application/json")

    async def scenario() -> int:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            base = str(server.make_url("/v1/kling"))
            argv = ["export", str(tmp_path / "w.jsonl"), "--base-url", base, "--token", TOKEN]
            argv += ["--max-retries", "1", "--backoff-base", "0"]
            return await asyncio.to_thread(cli.main, argv)
        finally:
            await server.close()

    assert asyncio.run(scenario()) == 1
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and TOKEN not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["w.jsonl", "--token", "t", "--since", "yesterday"],
        ["w.jsonl", "--token", "t", "--since", "1714521600"],
        ["w.jsonl", "--token", "t", "--content-type", "gif"],
        ["w.jsonl", "--token", "t", "--page-size", "0"],
        ["w.jsonl", "--token", "t", "--file-types", "MP4"],
        ["w.jsonl", "--token", "t", "--download", "d", "--file-types", "GIF"],
        ["-", "--token", "t", "--resume"],
        ["w.jsonl", "--token", "t", "--resume", "--force"],
        ["w.jsonl", "--no-such-option"],
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """Bad options, dates, content types, file types and --resume with stdout: exit 2."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export", *argv]) == 2
    assert not (tmp_path / "w.jsonl").exists()


def test_missing_token_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --token and no USEAPI_TOKEN: exit 2 with the documented message."""
    monkeypatch.delenv("USEAPI_TOKEN", raising=False)
    assert cli.main(["export", str(tmp_path / "w.jsonl")]) == 2
    assert "no API token: pass --token or set USEAPI_TOKEN" in capsys.readouterr().err


def test_help_and_dispatcher(capsys: pytest.CaptureFixture[str]) -> None:
    """The usage lists export and demo; export --help explains resume and the deletion caveat."""
    assert cli.main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert "export" in usage and "demo" in usage and "fake-server" in usage
    assert cli.main(["export", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--resume" in text and "A deletion" in text and "halved on a 429" in text


# -- progress ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_on_a_terminal_rewrites_one_line_at_most_10_per_second() -> None:
    """On a tty the status line is redrawn with \\r, throttled to about 10 redraws a second."""
    stream, clock = io.StringIO(), Clock()
    progress = Progress(stream, tty=True, clock=clock, columns=200)
    clock.now += 1
    progress.update(works=100, pages=3, retries=1, files=2, nbytes=2048)
    progress.update(works=140, pages=4, retries=1)  # within 0.1 s: skipped
    clock.now += 0.2
    progress.update(works=180, pages=5, retries=2)
    text = stream.getvalue()
    assert text.count("\r") == 2 and "\n" not in text
    assert "100 works, 3 pages, 100 works/s, 1 retries, 2 files (2.0 KiB)" in text
    assert "180 works" in text and "140 works" not in text
    progress.error("boom")
    assert stream.getvalue().endswith("\rboom\n")  # the status line was erased first


def test_progress_off_a_terminal_prints_every_10_pages_and_quiet_prints_errors_only() -> None:
    """Off a tty, a plain line every 10 pages; --quiet keeps only errors."""
    stream = io.StringIO()
    progress = Progress(stream, tty=False, clock=Clock())
    for page in range(1, 26):
        progress.update(works=page * 10, pages=page, retries=0)
    assert [line.split(",")[1].strip() for line in stream.getvalue().splitlines()] == [
        "10 pages",
        "20 pages",
    ]
    quiet = io.StringIO()
    progress = Progress(quiet, quiet=True, tty=True)
    progress.update(works=1, pages=1, retries=0, force=True)
    progress.info("summary")
    progress.error("an error")
    assert quiet.getvalue() == "an error\n"


@pytest.mark.parametrize("columns", [60, 40, 20, 5])
def test_progress_line_fits_the_terminal(columns: int) -> None:
    """On a narrow terminal every redraw is shorter than its width (a wrapped status line
    leaves a copy behind at each redraw), dropping the least useful counters first."""
    stream, clock = io.StringIO(), Clock()
    progress = Progress(stream, tty=True, clock=clock, columns=columns, prefix="kling-async export")
    for n in range(1, 6):
        clock.now += 1
        progress.update(works=n * 12_345, pages=n * 300, retries=n, files=n * 10, nbytes=n << 30)
    progress.error("boom")
    segments = stream.getvalue().split("\r")  # "", 5 draws, the erasing spaces, "boom\n"
    assert len(segments) == 8 and segments[-1] == "boom\n"
    assert "\n" not in "".join(segments[:-1])
    assert all(len(segment) < columns for segment in segments[:-1])
    last = segments[-3].strip()
    assert last.startswith("kling-async export: 61,725 works" if columns >= 60 else "61,7")
    if columns == 60:
        assert "files" in last and "works/s" not in last


def test_progress_line_width_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a terminal to ask, COLUMNS gives the width."""
    monkeypatch.setenv("COLUMNS", "50")
    assert Progress(io.StringIO(), tty=True).columns() == 50


def test_progress_off_a_terminal_is_one_plain_line_per_update() -> None:
    """Off a terminal the line is neither cut nor rewritten: one plain line per update."""
    stream = io.StringIO()
    progress = Progress(stream, tty=False, columns=20, every_pages=1, clock=Clock())
    for page in (1, 2):
        progress.update(works=page * 99_999, pages=page, retries=0, files=1, nbytes=1)
    lines = stream.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) == 3 and "\r" not in stream.getvalue()
    assert all("works/s" in line and "files" in line for line in lines[:2])


def test_format_helpers() -> None:
    """Byte counts and durations read naturally."""
    assert format_bytes(512) == "512 B" and format_bytes(1536) == "1.5 KiB"
    assert format_bytes(5 * 1024**3) == "5.0 GiB"
    assert format_duration(1.25) == "1.2 s" and format_duration(75) == "1 min 15 s"
    assert format_duration(7500) == "2 h 5 min"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(version=1), "format 1, not 2"),
        (lambda d: d["walk"].update(next_page=-5), "next_page -5 is below 1"),
        (lambda d: d["walk"].update(page_size="forty"), "damaged checkpoint"),
    ],
    ids=["old-format", "next-page-negative", "wrong-type"],
)
def test_a_foreign_or_damaged_checkpoint_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, message: str
) -> None:
    """--resume on a checkpoint of another format, or edited by hand: exit 2, one line, OUT
    untouched."""
    out = tmp_path / "w.jsonl"
    with FakeKlingServer(tasks=30, token=TOKEN, seed=2) as server:
        assert cli.main(export_args(server, str(out), "-q", "--page-size", "10")) == 0
        ckpt = checkpoint_path(out)
        data = msgspec.json.decode(ckpt.read_bytes())
        data["finished"] = False
        edit(data)
        ckpt.write_bytes(msgspec.json.encode(data))
        before = out.read_bytes()
        capsys.readouterr()
        assert cli.main(export_args(server, str(out), "-q", "--resume")) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out.read_bytes() == before
