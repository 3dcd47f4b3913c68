"""``python -m kling_async``: the same as the ``kling-async`` command."""

from .cli import main

raise SystemExit(main())
