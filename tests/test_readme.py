"""The README is tested: every ```python block in it runs as written against the fake server,
and all of them pass ``mypy --strict``.

How a block is run (a new block is picked up without touching this file):

* a complete program runs as ``python block.py`` in a fresh directory, with ``KLING_BASE_URL``
  and ``USEAPI_TOKEN`` pointing at a :class:`FakeKlingServer`; it must exit 0 with nothing on
  stderr (a warning or an unclosed session would show there);
* a block defining ``test_*`` functions is a test file: it runs with ``python -m pytest`` in a
  fresh project with no configuration at all, the README's claim for the pytest plugin;
* a block that runs until stopped (a bot) is marked by a comment line right above its fence,
  ``<!-- test: stop after N lines; file NAME = TEXT -->``: each ``file`` is written first, and
  the block passes once it has printed N lines (it is then terminated);
* ``<!-- no-test: why -->`` right above a fence skips the block (a signature, say).

A fragment (top-level ``await``, or names it does not define) fails here: wrap it in an
``async def`` and ``asyncio.run`` it, as the README's examples do, so that readers can run it.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kling_async.testing import FakeKlingServer

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TOKEN = "readme-test-token"
BOUND = 120.0  # seconds any one example may take; they take about one


@dataclass
class Block:
    """One ```python block of the README."""

    line: int
    code: str
    marker: str = ""
    files: dict[str, str] = field(default_factory=dict)
    stop_after: int | None = None

    @property
    def name(self) -> str:
        return f"readme_line_{self.line}"

    @property
    def is_test_file(self) -> bool:
        return any(
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test_")
            for node in ast.parse(self.code).body
        )


_FENCE = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_MARKER = re.compile(r"<!--\s*(no-test|test)\s*:?\s*(.*?)\s*-->")


def readme_blocks() -> list[Block]:
    """Every ```python block, with the marker comment on the line above it, if any."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        above = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        block = Block(line, match.group(1))
        marker = _MARKER.fullmatch(above.strip())
        if marker is not None:
            block.marker = marker.group(1)
            for directive in filter(None, (d.strip() for d in marker.group(2).split(";"))):
                if stop := re.fullmatch(r"stop after (\d+) lines?", directive):
                    block.stop_after = int(stop.group(1))
                elif file := re.fullmatch(r"file (\S+) = (.*)", directive):
                    block.files[file.group(1)] = file.group(2)
                elif block.marker == "test":
                    raise AssertionError(f"README line {line}: unknown directive {directive!r}")
        blocks.append(block)
    return blocks


BLOCKS = readme_blocks()
RUN = [b for b in BLOCKS if b.marker != "no-test"]


def test_the_readme_has_examples() -> None:
    """The README's examples are found (a broken fence would silently test nothing)."""
    assert len(RUN) >= 5
    assert all(b.marker == "no-test" for b in BLOCKS if b not in RUN)


@pytest.mark.parametrize("block", RUN, ids=[b.name for b in RUN])
def test_example_is_a_complete_program(block: Block) -> None:
    """Each example parses as a module: no top-level await (a fragment readers cannot run)."""
    try:
        compile(block.code, f"README.md:{block.line}", "exec")  # ast.parse allows top-level await
    except SyntaxError as exc:
        pytest.fail(
            f"README line {block.line}: {exc.msg}; wrap the example in an async def and "
            "asyncio.run it, or mark it <!-- no-test: why --> (see tests/test_readme.py)"
        )


def child_env(server: FakeKlingServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KLING_"))}
    env.update(
        KLING_BASE_URL=server.base_url,
        USEAPI_TOKEN=server.token,
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


async def run_to_the_end(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), BOUND)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def run_until_lines(
    args: list[str], cwd: Path, env: dict[str, str], lines: int
) -> tuple[list[str], str]:
    """Run until the program has printed `lines` lines, then stop it; its lines and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    got: list[str] = []
    try:
        while len(got) < lines:
            line = await asyncio.wait_for(proc.stdout.readline(), BOUND)
            if not line:  # it ended on its own: it was not meant to
                break
            got.append(line.decode().rstrip("\n"))
    finally:
        if proc.returncode is None:
            proc.terminate()
        _, err = await proc.communicate()
    return got, err.decode()


@pytest.mark.parametrize("block", RUN, ids=[b.name for b in RUN])
async def test_example_runs_against_the_fake_server(block: Block, tmp_path: Path) -> None:
    """Each example runs as written, against the fake server, to a clean end."""
    try:
        compile(block.code, f"README.md:{block.line}", "exec")
        is_test_file = block.is_test_file
    except SyntaxError:
        pytest.skip("not a complete program (test_example_is_a_complete_program says why)")
    for name, text in block.files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    async with FakeKlingServer(60, token=TOKEN, seed=11) as server:
        env = child_env(server)
        if is_test_file:
            # A fresh project: no pytest configuration, only what the README says to install.
            path = tmp_path / f"test_{block.name}.py"
            path.write_text(block.code, encoding="utf-8")
            args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path.name]
            code, out, err = await run_to_the_end(args, tmp_path, env)
            assert code == 0, f"README line {block.line}:\n{out}\n{err}"
            assert re.search(r"\b[1-9][0-9]* passed\b", out) and "warning" not in out, out
            return
        path = tmp_path / f"{block.name}.py"
        path.write_text(block.code, encoding="utf-8")
        if block.stop_after is not None:
            lines, err = await run_until_lines(
                [sys.executable, path.name], tmp_path, env, block.stop_after
            )
            assert len(lines) == block.stop_after, f"README line {block.line}:\n{err}"
            assert "Traceback" not in err.split("KeyboardInterrupt")[0], err
            return
        code, out, err = await run_to_the_end([sys.executable, path.name], tmp_path, env)
    assert code == 0 and err == "", f"README line {block.line} exited {code}:\n{err}"
    assert out, f"README line {block.line} printed nothing"


def test_examples_pass_mypy_strict(tmp_path: Path) -> None:
    """Every example type-checks with mypy --strict, as users' own code would."""
    from mypy import api

    paths = []
    for block in RUN:
        path = tmp_path / f"{block.name}.py"
        path.write_text(block.code, encoding="utf-8")
        paths.append(str(path))
    # The project's cache: a cold run checks aiohttp's stubs for tens of seconds.
    out, err, status = api.run(["--strict", "--cache-dir", str(ROOT / ".mypy_cache"), *paths])
    assert status == 0, out + err


def test_license_file_and_project_urls() -> None:
    """The MIT license the metadata names ships as LICENSE, and the project has URLs."""
    from importlib.metadata import metadata

    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    meta = metadata("kling-async")
    assert meta["License-Expression"] == "MIT"
    assert "LICENSE" in (meta.get_all("License-File") or [])
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Repository", "Issues", "Changelog"} <= urls.keys()
