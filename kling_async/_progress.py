"""Progress on stderr for the long-running commands (``export``, ``demo``).

On a terminal, one status line rewrites itself in place (``\\r``) at most ``1 / min_interval``
times a second, cut to the terminal's width (a wrapped line cannot be rewritten: each redraw
would leave a copy behind). Anywhere else (a log file, CI), a plain line every ``every_pages``
pages, so a log stays readable and small. Errors always get through; ``quiet`` silences the
rest. No third-party progress library: the package depends on aiohttp and msgspec only.

A long wait (a 429's ``Retry-After``, a backoff, the pace: see :meth:`Progress.waiting`) takes
the status line over on a terminal and counts down once a second; elsewhere it is one plain
line when the wait starts.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_bytes", "format_duration"]

_WAITING = re.compile(r"waiting [0-9]+ s")


def format_bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``: binary units, one decimal above bytes."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``"1 min 15 s"``; under a minute, one decimal."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class Progress:
    """A progress display on a text stream (stderr by default).

    Args:
        stream: Where to write; ``sys.stderr`` when None (looked up at each write, so pytest's
            capture and redirections made later are honoured).
        quiet: Print nothing but :meth:`error` lines.
        tty: Whether ``stream`` is a terminal; asked from ``stream.isatty()`` when None.
        every_pages: Off a terminal, print a line each time this many more pages are done.
        min_interval: On a terminal, the least time between two redraws, in seconds.
        prefix: Put before every line (the command's name).
        clock: A monotonic clock (tests pass a fake one).
        columns: The terminal's width; asked from the terminal at each redraw when None
            (it may be resized), else ``COLUMNS`` or 80.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        quiet: bool = False,
        tty: bool | None = None,
        every_pages: int = 10,
        min_interval: float = 0.1,
        prefix: str = "kling-async",
        clock: Callable[[], float] = time.monotonic,
        columns: int | None = None,
    ) -> None:
        self._stream = stream
        self.quiet = quiet
        self._tty = tty
        self.every_pages = max(1, every_pages)
        self.min_interval = min_interval
        self.prefix = prefix
        self._clock = clock
        self.started = clock()
        self._last_draw = float("-inf")
        self._last_pages = 0
        self._width = 0  # length of the status line on screen, 0 when none is shown
        self._columns = columns
        self._wait: tuple[str, float] | None = None  # (message, deadline) of a wait shown
        self._ticker: asyncio.Task[None] | None = None

    @property
    def stream(self) -> TextIO:
        """The stream written to."""
        return self._stream if self._stream is not None else sys.stderr

    @property
    def tty(self) -> bool:
        """Whether the status line rewrites itself (the stream is a terminal)."""
        if self._tty is None:
            isatty = getattr(self.stream, "isatty", None)
            self._tty = bool(isatty and isatty())
        return self._tty

    def elapsed(self) -> float:
        """Seconds since this display was created (or :meth:`restart`)."""
        return self._clock() - self.started

    def restart(self) -> None:
        """Start the clock (and the page count of plain lines) again."""
        self.started = self._clock()
        self._last_pages = 0

    def update(
        self,
        *,
        works: int,
        pages: int,
        retries: int,
        files: int | None = None,
        nbytes: int | None = None,
        force: bool = False,
    ) -> None:
        """Show the counters: redraw the status line, or print a plain line every few pages.

        Args:
            works: Works exported in this run.
            pages: Pages received in this run.
            retries: Requests retried so far.
            files: Media files written, when downloading.
            nbytes: Media bytes written, when downloading.
            force: On a terminal, redraw now whatever the rate limit (the last state before a
                summary); off a terminal the summary says it all.
        """
        if self.quiet:
            return
        now = self._clock()
        if self.tty:
            if not force and now - self._last_draw < self.min_interval:
                return
            self._last_draw = now
            waiting = self._wait_text(now)
            self._draw(
                [waiting] if waiting else self._parts(works, pages, retries, files, nbytes, now)
            )
        elif pages >= self._last_pages + self.every_pages:
            self._last_pages = pages
            line = self._status(works, pages, retries, files, nbytes, now)
            self._write(f"{self.prefix}: {line}\n")

    def _status(
        self,
        works: int,
        pages: int,
        retries: int,
        files: int | None,
        nbytes: int | None,
        now: float,
    ) -> str:
        return ", ".join(self._parts(works, pages, retries, files, nbytes, now))

    def _parts(
        self,
        works: int,
        pages: int,
        retries: int,
        files: int | None,
        nbytes: int | None,
        now: float,
    ) -> list[str]:
        elapsed = max(now - self.started, 1e-9)
        parts = [
            f"{works:,} works",
            f"{pages:,} pages",
            f"{works / elapsed:,.0f} works/s",
            f"{retries:,} retries",
        ]
        if files is not None:
            parts.append(f"{files:,} files ({format_bytes(nbytes or 0)})")
        return parts

    def waiting(self, message: str, seconds: float) -> None:
        """Show that a wait of ``seconds`` starts (``message`` says ``waiting N s``).

        On a terminal the status line shows the message, its ``N`` counting down once a
        second, until the wait is over; elsewhere one plain line is printed now. Made for
        ``KlingSession``'s announcements of waits over 2 s.
        """
        if self.quiet:
            return
        if not self.tty:
            self._write(f"{self.prefix}: {message}\n")
            return
        now = self._clock()
        self._wait = (message, now + seconds)
        self._draw([self._wait_text(now) or message])
        self._last_draw = now
        if self._ticker is None or self._ticker.done():
            try:
                self._ticker = asyncio.get_running_loop().create_task(self._tick())
            except RuntimeError:  # no running loop: the line stays as drawn
                self._ticker = None

    def _wait_text(self, now: float) -> str | None:
        if self._wait is None:
            return None
        message, deadline = self._wait
        left = deadline - now
        if left <= 0:
            self._wait = None
            return None
        return _WAITING.sub(f"waiting {math.ceil(left)} s", message, count=1)

    async def _tick(self) -> None:
        """Redraw the countdown once a second until the wait is over."""
        while self._wait is not None:
            _, deadline = self._wait
            left = deadline - self._clock()
            await asyncio.sleep(min(1.0, max(left, 0.0)) or 0.01)
            text = self._wait_text(self._clock())
            if text is not None:
                self._draw([text])
                self._last_draw = self._clock()
        self.clear()  # the next update draws the counters again

    def columns(self) -> int:
        """The terminal's width in characters."""
        if self._columns is not None:
            return self._columns
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (AttributeError, OSError, ValueError):  # not a real terminal (tests, pipes)
            return shutil.get_terminal_size().columns

    def fit(self, parts: list[str]) -> str:
        """The status line that fits the terminal, one column to spare (a line that fills the
        last column wraps on some terminals): the least useful counters go first, then the
        prefix, then the line is cut."""
        room = max(1, self.columns() - 1)
        parts = list(parts)
        # Drop order: works/s, retries, pages; the works and files counts stay longest.
        for drop in (2, 2, 1):
            if len(f"{self.prefix}: " + ", ".join(parts)) <= room or len(parts) <= drop:
                break
            del parts[drop]
        line = f"{self.prefix}: " + ", ".join(parts)
        if len(line) > room:
            line = ", ".join(parts)
        return line[:room]

    def _draw(self, parts: list[str]) -> None:
        # Pad with spaces over the previous line instead of an ANSI "erase line": it works on
        # every terminal. fit() keeps the line shorter than the terminal, so it never wraps.
        line = self.fit(parts)
        pad = max(0, min(self._width, self.columns() - 1) - len(line))
        self._write("\r" + line + " " * pad)
        self._width = len(line)

    def clear(self) -> None:
        """Erase the status line, if one is shown, so that the next line starts clean."""
        if self._width:
            self._write("\r" + " " * self._width + "\r")
            self._width = 0
            # Redraw at the next update even if it comes within min_interval.
            self._last_draw = float("-inf")

    def info(self, text: str) -> None:
        """Print a line of information (not with ``quiet``)."""
        if not self.quiet:
            self.clear()
            self._write(text + "\n")

    def error(self, text: str) -> None:
        """Print an error line, ``quiet`` or not, after erasing the status line."""
        self.clear()
        self._write(text + "\n")

    def _write(self, text: str) -> None:
        stream = self.stream
        stream.write(text)
        stream.flush()
