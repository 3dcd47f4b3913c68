"""GET /accounts: get_accounts() against the fake and scripted servers."""

from __future__ import annotations

import pytest
from aiohttp import web

from kling_async import Account, AuthenticationError, BadRequestError, KlingSession, NotFoundError
from kling_async.testing import FakeKlingServer

from .conftest import Scripted

EMAILS = ["a@example.com", "b@example.com", "c+x@example.com"]


async def test_accounts_keyed_by_email_without_passwords() -> None:
    """Every configured account comes back keyed by email, typed, and without its password."""
    async with (
        FakeKlingServer(tasks=5, emails=EMAILS) as server,
        KlingSession(server.token, base_url=server.base_url) as kling,
    ):
        accounts = await kling.get_accounts()
    assert list(accounts) == EMAILS
    first = accounts["a@example.com"]
    assert isinstance(first, Account)
    assert first.email == "a@example.com" and first.max_jobs == 5
    assert first.session is not None and first.session.user_id == 10_000
    assert first.session.expire_time == 1_746_760_011_119
    assert first.session.expire_time_utc == "2025-05-09T03:06:51.119Z"
    assert not hasattr(first, "password")
    assert "secured" not in repr(accounts)


async def test_no_account_configured_is_an_empty_dict() -> None:
    """useapi's plain-text 404 ("Configuration not found") means no account: {}."""
    async with (
        FakeKlingServer(tasks=5) as server,
        KlingSession(server.token, base_url=server.base_url) as kling,
    ):
        assert await kling.get_accounts() == {}
        assert server.stats.accounts_requests == 1


async def test_json_404_and_401_are_errors(scripted: Scripted) -> None:
    """A JSON 404 (not the plain-text one) is a NotFoundError; a 401 an AuthenticationError."""
    statuses = iter([404, 401])

    async def handler(request: web.Request) -> web.Response:
        assert request.path == "/v1/kling/accounts"
        return web.json_response({"error": "nope"}, status=next(statuses))

    scripted.handle(handler)
    async with KlingSession("tok", base_url=scripted.base_url) as kling:
        with pytest.raises(NotFoundError):
            await kling.get_accounts()
        with pytest.raises(AuthenticationError):
            await kling.get_accounts()


async def test_unknown_fields_tolerated_and_missing_email_filled(scripted: Scripted) -> None:
    """Fields the model does not know are ignored; an account without email gets its key."""

    async def handler(request: web.Request) -> web.Response:
        body = {"x@example.com": {"maxJobs": 2, "newField": [1], "session": {"userId": 7}}}
        return web.json_response(body)

    scripted.handle(handler)
    async with KlingSession("tok", base_url=scripted.base_url) as kling:
        accounts = await kling.get_accounts()
    assert accounts["x@example.com"].email == "x@example.com"
    assert accounts["x@example.com"].max_jobs == 2


async def test_fake_requires_email_with_several_accounts() -> None:
    """With several accounts, an assets request without email is a 400, as useapi answers;
    each account has its own library."""
    async with (
        FakeKlingServer(tasks=5, emails=EMAILS[:2]) as server,
        KlingSession(server.token, base_url=server.base_url, max_retries=0) as kling,
    ):
        with pytest.raises(BadRequestError):
            await kling.get_assets()
        a = await kling.get_assets(email=EMAILS[0])
        b = await kling.get_assets(email=EMAILS[1])
        assert {w.work_id for w in a.works()}.isdisjoint(w.work_id for w in b.works())
