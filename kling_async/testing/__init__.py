"""Test helpers: a faithful fake of useapi.net's Kling assets API, with fault injection.

Usage::

    async with FakeKlingServer(tasks=1000, token="test-token", seed=0) as server:
        async with KlingSession(token=server.token, base_url=server.base_url) as kling:
            ...

With pytest, the ``kling_fake_server`` fixture (configured by the ``kling_fake_server``
marker) yields a started server. :class:`FakeLibrary` builds the same pages without a server.
"""

from ._library import FakeLibrary
from ._server import FAULT_KINDS, FakeKlingServer, FakeStats, Faults

__all__ = ["FAULT_KINDS", "FakeKlingServer", "FakeLibrary", "FakeStats", "Faults"]
