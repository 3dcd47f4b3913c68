"""kling-async watch: JSON lines of new works, --once for cron, --exec with give-back on
failure, a state file that survives kill -9."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kling_async import cli
from kling_async.testing import FakeKlingServer

from .test_cli_export import ROOT, TOKEN

PY = shlex.quote(sys.executable)


def newest_time(server: FakeKlingServer) -> int:
    works = [w for item in server.library.page(1, 5)["history"] for w in item["works"]]
    return max(w["createTime"] for w in works)


def work_dicts(server: FakeKlingServer, ids: list[int]) -> list[dict[str, Any]]:
    """The fake's own dicts of these works, in the order of ``ids``."""
    by_id = {
        w["workId"]: w for item in server.library.page(1, 200)["history"] for w in item["works"]
    }
    return [by_id[i] for i in ids]


def watch_args(server: FakeKlingServer, state: Path, *extra: str) -> list[str]:
    return [
        "watch",
        "--state",
        str(state),
        "--base-url",
        server.base_url,
        "--token",
        server.token,
        "--interval",
        "0.05",
        *extra,
    ]


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_once_twice_with_arrivals_between(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first run starts from now and prints nothing; the next prints exactly the works
    that arrived in between, oldest first, raw as sent; a third prints nothing."""
    state = tmp_path / "state.json"
    with FakeKlingServer(tasks=40, token=TOKEN, seed=11) as server:
        assert cli.main(watch_args(server, state, "--once")) == 0
        assert capsys.readouterr().out == "" and state.exists()
        new = server.insert_tasks(4, content_type="video")
        assert cli.main(watch_args(server, state, "--once")) == 0
        assert lines(capsys.readouterr().out) == work_dicts(server, new)
        assert cli.main(watch_args(server, state, "--once")) == 0
        assert capsys.readouterr().out == ""


def test_since_only_on_the_first_run_and_all_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--since yields the works after it when FILE does not exist yet, and is ignored after;
    --all-works prints a work still rendering at first sight."""
    state = tmp_path / "s.json"
    with FakeKlingServer(tasks=40, token=TOKEN, seed=12) as server:
        start = newest_time(server)
        new = server.insert_tasks(2, content_type="video")
        assert cli.main(watch_args(server, state, "--once", "--since", str(start))) == 0
        assert [w["workId"] for w in lines(capsys.readouterr().out)] == new
        pending = server.insert_tasks(1, content_type="video", pending=True)
        assert cli.main(watch_args(server, state, "--once", "--since", "2020-01-01")) == 0
        captured = capsys.readouterr()
        assert captured.out == ""  # still rendering: held back by default
        assert "--since is ignored" in captured.err
        other = tmp_path / "all.json"
        assert cli.main(watch_args(server, other, "--once", "--since", str(start))) == 0
        capsys.readouterr()
        more = server.insert_tasks(1, content_type="video", pending=True)
        assert cli.main(watch_args(server, other, "--once", "--all-works")) == 0
        assert [w["workId"] for w in lines(capsys.readouterr().out)] == [*pending, *more]


def test_failing_exec_stops_the_poll_and_starts_there_next_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CMD that fails stops that poll at its work (exit 1 with --once); the next run
    starts again from that work and skips nothing after it."""
    state = tmp_path / "s.json"
    log = tmp_path / "log"
    with FakeKlingServer(tasks=40, token=TOKEN, seed=13) as server:
        assert cli.main(watch_args(server, state, "--once")) == 0
        new = server.insert_tasks(4, content_type="video")
        failing = (
            f'test "$KLING_WORK_ID" != {new[2]} && {PY} -c '
            f"\"import sys; open({str(log)!r}, 'a').write(sys.stdin.read())\""
        )
        assert cli.main(watch_args(server, state, "--once", "--exec", failing)) == 1
        captured = capsys.readouterr()
        assert [w["workId"] for w in lines(captured.out)] == new[:2]
        assert f"CMD exited with 1 for work {new[2]}" in captured.err
        ok = f"{PY} -c \"import sys; open({str(log)!r}, 'a').write(sys.stdin.read())\""
        assert cli.main(watch_args(server, state, "--once", "--exec", ok)) == 0
        assert [w["workId"] for w in lines(capsys.readouterr().out)] == new[2:]
    assert lines(log.read_text()) == work_dicts(server, new)


def test_bad_state_file_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable state file, no token or a bad option: one line and exit 2."""
    state = tmp_path / "s.json"
    state.write_text("not json")
    with FakeKlingServer(tasks=5, token=TOKEN) as server:
        assert cli.main(watch_args(server, state, "--once")) == 2
        assert cli.main(["watch", "--state", str(tmp_path / "x"), "--base-url", "x"]) == 2
        assert cli.main(watch_args(server, state, "--interval", "0")) == 2
    err = capsys.readouterr().err
    assert "is not a watch state file" in err
    assert "Traceback" not in err


def test_help_says_cmd_should_be_idempotent(capsys: pytest.CaptureFixture[str]) -> None:
    """--help warns that CMD runs again for the work it was running when killed."""
    assert cli.main(["watch", "--help"]) == 0
    assert "CMD SHOULD BE IDEMPOTENT" in capsys.readouterr().out


def test_kill_9_during_exec_loses_nothing_and_repeats_at_most_one(tmp_path: Path) -> None:
    """kill -9 of the watch (and its CMD) in the middle of a work: the next run handles every
    work, the one that was running at most twice, every other exactly once."""
    state = tmp_path / "s.json"
    log = tmp_path / "log"
    marker = tmp_path / "marker"
    with FakeKlingServer(tasks=40, token=TOKEN, seed=14) as server:
        assert cli.main(watch_args(server, state, "--once")) == 0
        new = server.insert_tasks(6, content_type="video")
        victim = new[3]
        slow = (
            f'echo "$KLING_WORK_ID" >> {shlex.quote(str(log))}; '
            f'if [ "$KLING_WORK_ID" = {victim} ]; then touch {shlex.quote(str(marker))}; '
            "sleep 60; fi"
        )
        env = {k: v for k, v in os.environ.items() if k != "USEAPI_TOKEN"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "kling_async", *watch_args(server, state, "--exec", slow)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
            start_new_session=True,  # its own process group: CMD dies with it
        )
        try:
            deadline = time.monotonic() + 60  # a guard against a hang, not a timing assertion
            while not marker.exists():
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        fast = f'echo "$KLING_WORK_ID" >> {shlex.quote(str(log))}'
        assert cli.main(watch_args(server, state, "--once", "--exec", fast)) == 0
    handled = [int(line) for line in log.read_text().split()]
    assert sorted(set(handled)) == sorted(new)
    repeated = [wid for wid in new if handled.count(wid) > 1]
    assert repeated in ([], [victim]) and all(handled.count(w) <= 2 for w in new)
    assert handled[: new.index(victim) + 1] == new[: new.index(victim) + 1]  # oldest first
