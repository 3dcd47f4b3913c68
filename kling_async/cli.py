"""The ``kling-async`` command (also ``python -m kling_async``).

Subcommands are dispatched by name, each with its own parser, so that a subcommand's
``--help`` is its own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from ._version import __version__

__all__ = ["main"]

USAGE = f"""usage: kling-async COMMAND [OPTIONS]

kling-async {__version__}: the useapi.net Kling assets API from the command line.

commands:
  fake-server   run the built-in fake API (and CDN) for tests and demos

Run 'kling-async COMMAND --help' for a command's options.
"""


def _fake_server(argv: Sequence[str]) -> int:
    from .testing._cli import main as fake_server_main

    return fake_server_main(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "fake-server": _fake_server,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kling-async``; returns the exit status (0 done, 1 failure, 2 usage error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] == "--version":
        print(f"kling-async {__version__}")
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(USAGE, end="", file=sys.stderr)
        print(f"kling-async: unknown command {args[0]!r}", file=sys.stderr)
        return 2
    try:
        return command(args[1:])
    except SystemExit as exc:  # argparse's usage errors and --help
        return exc.code if isinstance(exc.code, int) else 2
