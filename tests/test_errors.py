"""The error tree, as the errors module draws it."""

from __future__ import annotations

import kling_async
from kling_async import errors


def test_tree() -> None:
    """Each class sits where the docstring's tree puts it."""
    api = errors.APIError
    for cls in (
        errors.BadRequestError,
        errors.AuthenticationError,
        errors.PaymentRequiredError,
        errors.PermissionDeniedError,
        errors.NotFoundError,
        errors.RateLimitError,
        errors.ServerError,
    ):
        assert issubclass(cls, api)
        assert cls.__name__ in errors.__doc__  # type: ignore[operator]
    for cls in (api, errors.TransportError, errors.DecodeError, errors.WalkError):
        assert issubclass(cls, errors.KlingError)
    assert issubclass(errors.WalkStalledError, errors.WalkError)
    for name in errors.__all__:
        assert getattr(kling_async, name) is getattr(errors, name)


def test_api_error_str_and_repr() -> None:
    """str says status, message and URL; repr names the class."""
    error = errors.RateLimitError(429, "busy", b"{}", url="http://h/a", retry_after=2.0)
    assert str(error) == "HTTP 429: busy (http://h/a)"
    assert repr(error) == "RateLimitError(status=429, message='busy')"
    assert error.retry_after == 2.0
