"""``kling-async demo``: the export against the built-in fake, with no token and no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kling_async import cli
from kling_async.testing import FakeLibrary

ROOT = Path(__file__).resolve().parent.parent


def test_demo_in_process_writes_jsonl_and_media(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo exports the fake library losslessly and a few media files, and says where."""
    monkeypatch.delenv("USEAPI_TOKEN", raising=False)
    folder = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(folder), "--tasks", "200", "--downloads", "6"]) == 0
    lines = [json.loads(line) for line in (folder / "works.jsonl").read_text().splitlines()]
    library = FakeLibrary(200, seed=2028)
    expected = [
        work
        for n in range(1, 6)
        for item in library.page(n, 40)["history"]
        for work in item["works"]
    ]
    assert lines == expected
    media = sorted(os.listdir(folder / "media"))
    first_ids = {str(work["workId"]) for work in expected[:6] if work["status"] == 99}
    assert media and {name.split(".")[0] for name in media} == first_ids
    assert not any(name.endswith(".part") for name in media)
    out = capsys.readouterr().out
    assert str(folder / "works.jsonl") in out and str(folder / "media") in out
    assert f"exported {len(expected)} works" in out


def test_demo_subprocess_defaults_twice(tmp_path: Path) -> None:
    """'python -m kling_async demo' works with its defaults (3,000 tasks) and can run again."""
    env = {k: v for k, v in os.environ.items() if k != "USEAPI_TOKEN"}
    for run in (1, 2):
        proc = subprocess.run(
            [sys.executable, "-m", "kling_async", "demo", "--out", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "no token or network needed" in proc.stdout
        if run == 2:
            assert "works already there" in proc.stdout
    jsonl = (tmp_path / "d" / "works.jsonl").read_bytes()
    assert jsonl.count(b"\n") == 6600
    assert len(os.listdir(tmp_path / "d" / "media")) >= 10


def test_demo_usage_error_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad demo option is a usage error."""
    assert cli.main(["demo", "--tasks", "zero"]) == 2
    assert "--tasks" in capsys.readouterr().err
