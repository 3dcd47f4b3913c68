"""``kling-async fake-server``: run the fake Kling API standalone until Ctrl-C or SIGTERM.

The first line on stdout is the base URL (``http://127.0.0.1:8080/v1/kling``), flushed, so a
script can read it; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
from collections.abc import Callable, Sequence

from .._args import OneLineParser
from ._library import OFFSET_MODES, PAST_END_MODES
from ._server import CLOCK_MODES, FAULT_KINDS, FakeKlingServer, Faults

__all__ = ["add_arguments", "main", "serve"]


def _int_in(low: int, high: float = math.inf) -> Callable[[str], int]:
    """An argparse type: an int in ``[low, high]`` (a port out of range is a usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            upper = "" if high == math.inf else f" and <= {high:g}"
            raise argparse.ArgumentTypeError(f"must be >= {low}{upper}, got {value}")
        return value

    return parse


def _float_in(low: float, high: float = math.inf) -> Callable[[str], float]:
    """An argparse type: a finite float in ``[low, high]``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            upper = "" if high == math.inf else f" and <= {high:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number >= {low:g}{upper}")
        return value

    return parse


_port = _int_in(0, 65535)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``fake-server`` options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: %(default)s)")
    parser.add_argument(
        "--port", type=_port, default=8080, help="API port, 0 for a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--cdn-port", type=_port, default=0, help="fake CDN port (default: a free one)"
    )
    parser.add_argument(
        "--tasks", type=_int_in(0), default=10_000, help="tasks per account (default: %(default)s)"
    )
    parser.add_argument(
        "--token", default="test-token", help="accepted bearer token (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="library seed (default: 0)")
    parser.add_argument(
        "--email",
        action="append",
        dest="emails",
        metavar="EMAIL",
        help="a Kling account email; repeat for several accounts",
    )
    parser.add_argument(
        "--latency", type=_float_in(0), default=0.0, help="seconds added to each assets request"
    )
    parser.add_argument(
        "--fault-rate",
        type=_float_in(0, 1),
        default=0.0,
        help="fraction (0..1) of assets requests failing",
    )
    parser.add_argument(
        "--fault-kinds",
        default="429,500,502,503,504",
        help=f"comma-separated kinds for --fault-rate, from: {','.join(FAULT_KINDS)}",
    )
    parser.add_argument(
        "--file-size",
        type=_int_in(0),
        default=4096,
        help="bytes per CDN file (default: %(default)s)",
    )
    parser.add_argument(
        "--inserts-per-request",
        type=_float_in(0.0, 1e6),
        default=0.0,
        metavar="N",
        help="new tasks at the head before each assets request (works arriving; default: 0)",
    )
    parser.add_argument(
        "--clock",
        choices=CLOCK_MODES,
        default="library",
        help="how currentTimestamp is stamped (undocumented by the API; default: %(default)s)",
    )
    parser.add_argument(
        "--page-size-cap",
        type=_int_in(1),
        default=None,
        metavar="N",
        help="serve at most N entries per page, whatever pageSize asks",
    )
    parser.add_argument(
        "--cap-offsets",
        choices=OFFSET_MODES,
        default="served",
        help="with a cap, count offsets by the size served or asked (default: %(default)s)",
    )
    parser.add_argument(
        "--past-end",
        choices=PAST_END_MODES,
        default="empty",
        help="a page past the end: empty, or the last page again (default: %(default)s)",
    )


def _build(args: argparse.Namespace) -> FakeKlingServer:
    kinds = tuple(kind.strip() for kind in args.fault_kinds.split(",") if kind.strip())
    return FakeKlingServer(
        args.tasks,
        token=args.token,
        seed=args.seed,
        emails=args.emails,
        faults=Faults(
            rate=args.fault_rate, kinds=kinds, inserts_per_request=args.inserts_per_request
        ),
        latency=args.latency,
        file_size=args.file_size,
        host=args.host,
        port=args.port,
        cdn_port=args.cdn_port,
        clock=args.clock,
        page_size_cap=args.page_size_cap,
        cap_offsets=args.cap_offsets,
        past_end=args.past_end,
    )


async def serve(args: argparse.Namespace) -> None:
    """Run the server described by ``args`` until SIGINT or SIGTERM (or cancellation)."""
    server = _build(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        async with server:
            print(server.base_url, flush=True)
            print(
                f"fake Kling API: {server.base_url} (token {server.token!r}, "
                f"{args.tasks} tasks), CDN: {server.cdn_url}; Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kling-async fake-server``; returns the exit status."""
    parser = OneLineParser(
        prog="kling-async fake-server",
        description="Run a fake useapi.net Kling assets API (and CDN) for tests and demos.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        _build(args)  # validate the options before starting anything
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:  # no signal handlers on this platform
        pass
    except OSError as exc:  # the port is taken, the host does not resolve...
        print(
            f"kling-async fake-server: cannot serve on {args.host}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # a bug of ours: still one line, never a traceback
        print(
            f"kling-async fake-server: unexpected error ({type(exc).__name__}: {exc}); "
            "please report it",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
