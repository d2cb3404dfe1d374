"""Errors built the way tinker builds them (``NotFoundError(message, response, body)``,
``APIError(message, request, body=...)``, ``RequestFailedError(message, request_id,
category)``): they work, name the request, and keep no httpx object (secrets ride in its
headers)."""

from __future__ import annotations

import pickle

import httpx
import pytest

from tinkex_types import (
    APIError,
    APIStatusError,
    BadRequestError,
    NotFoundError,
    RequestErrorCategory,
    RequestFailedError,
    status_error_class,
)

SECRET = "tml-errors-SECRET-0123456789"


def _response(status: int) -> httpx.Response:
    request = httpx.Request(
        "POST", "http://tinker.test/api/v1/weights_info?x=1", headers={"X-API-Key": SECRET}
    )
    return httpx.Response(
        status, request=request, headers={"x-request-id": "req-7"}, json={"detail": "gone"}
    )


@pytest.mark.parametrize("status", [400, 404, 409, 429, 500, 503])
def test_status_error_from_a_response_names_the_request(status: int) -> None:
    cls = status_error_class(status)
    error = cls("no such weights", _response(status), {"detail": "gone"})
    assert error.status_code == status
    assert (error.method, error.path) == ("POST", "/api/v1/weights_info")
    assert error.request_id == "req-7"
    assert error.body == {"detail": "gone"}
    assert str(error) == f"POST /api/v1/weights_info → {status}: no such weights"
    assert not [v for v in vars(error).values() if isinstance(v, httpx.Request | httpx.Response)]
    assert SECRET not in repr(error) + str(error) + repr(vars(error))


def test_keywords_win_over_the_response() -> None:
    error = NotFoundError("x", response=_response(404), body=None, status_code=410, path="/p")
    assert (error.status_code, error.path, error.method) == (410, "/p", "POST")


def test_a_response_without_a_request_still_works() -> None:
    error = BadRequestError("bad", httpx.Response(400), None)
    assert (error.status_code, error.method, error.path) == (400, None, None)
    assert str(error) == "400: bad"


def test_a_status_error_needs_a_status() -> None:
    with pytest.raises(TypeError, match="status_code"):
        APIStatusError("no status")


def test_api_error_reads_the_request_and_drops_it() -> None:
    request = httpx.Request("GET", "http://h/api/v1/x", headers={"X-API-Key": SECRET})
    error = APIError("broken", request, body={"a": 1})
    assert (error.method, error.path, error.body) == ("GET", "/api/v1/x", {"a": 1})
    assert SECRET not in repr(vars(error))


def test_request_failed_error_takes_tinker_positions() -> None:
    error = RequestFailedError("boom", "req-1", RequestErrorCategory.Server)
    assert error.request_id == "req-1"
    assert error.category is RequestErrorCategory.SERVER
    assert str(error) == "boom (category: server) [request req-1]"


def test_status_errors_pickle() -> None:
    error = NotFoundError("gone", _response(404), {"detail": "gone"})
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is NotFoundError
    assert (again.status_code, again.method, again.path, again.request_id) == (
        404,
        "POST",
        "/api/v1/weights_info",
        "req-7",
    )
    assert str(again) == str(error)


def test_response_validation_error_takes_both_forms() -> None:
    from tinkex_types import APIResponseValidationError

    tinker_form = APIResponseValidationError(_response(200), {"odd": True})
    assert tinker_form.message == "Data returned by API invalid for expected schema."
    assert (tinker_form.status_code, tinker_form.method, tinker_form.path) == (
        200,
        "POST",
        "/api/v1/weights_info",
    )
    assert tinker_form.body == {"odd": True}
    assert SECRET not in repr(vars(tinker_form))
    ours = APIResponseValidationError("bad body", body=b"x", request_id="r1")
    assert (ours.message, ours.body, ours.request_id, ours.status_code) == (
        "bad body",
        b"x",
        "r1",
        None,
    )
    assert str(ours) == "bad body"
