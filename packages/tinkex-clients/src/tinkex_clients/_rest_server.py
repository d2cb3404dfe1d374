"""``RestClient.get_server_capabilities`` (tinker 0.38 moved it from ServiceClient to
RestClient, as a future)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote

from pydantic import BaseModel

from tinkex_clients._future import APIFuture
from tinkex_clients._session import Session, parse_result
from tinkex_clients._validate import as_access_scope, as_non_negative_int, as_positive_int
from tinkex_types import (
    GetSamplerResponse,
    GetServerCapabilitiesResponse,
    GetSessionResponse,
    ListSessionsResponse,
    TinkexValidationError,
)

__all__ = ["CapabilitiesRestMixin", "SessionsRestMixin"]

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)
AccessScope = Literal["owned", "accessible"]


def _seg(value: str) -> str:
    """One path segment, escaped (``:`` and ``@`` stay: ids carry them)."""
    return quote(value, safe=":@-._~")


class CapabilitiesRestMixin:
    """The server-level read of :class:`~tinkex_clients.RestClient`."""

    _session: Session

    async def _capabilities(self) -> GetServerCapabilitiesResponse:
        session = self._session
        with session.span("rest.get_server_capabilities"):
            body = await session.get("/api/v1/get_server_capabilities")
        return parse_result(body, GetServerCapabilitiesResponse, what="get_server_capabilities")

    def get_server_capabilities(self) -> APIFuture[GetServerCapabilitiesResponse]:
        """The models the server supports (a future: ``.result()`` or ``await``)."""
        self._session.check_open("RestClient")
        return self._session.run(self._capabilities(), "RestClient")


class SessionsRestMixin:
    """Sessions and samplers of :class:`~tinkex_clients.RestClient`."""

    _session: Session

    if TYPE_CHECKING:

        def _check(self) -> None: ...

        def _submit(self, coro: Coroutine[Any, Any, _T]) -> APIFuture[_T]: ...

        async def _bridge(self, coro: Coroutine[Any, Any, _T]) -> _T: ...

        async def _get(
            self, op: str, path: str, result_type: type[_M], params: dict[str, Any] | None = None
        ) -> _M: ...

    def _get_session(
        self, session_id: Any, access_scope: Any
    ) -> Coroutine[Any, Any, GetSessionResponse]:
        self._check()
        if not isinstance(session_id, str) or not session_id or "/" in session_id:
            raise TinkexValidationError("session_id", f"must be a session id, got {session_id!r}")
        return self._get(
            "get_session",
            f"/api/v1/sessions/{_seg(session_id)}",
            GetSessionResponse,
            {"access_scope": as_access_scope(access_scope)},
        )

    def get_session(
        self, session_id: str, access_scope: AccessScope = "owned"
    ) -> APIFuture[GetSessionResponse]:
        """The training runs and samplers of one session."""
        return self._submit(self._get_session(session_id, access_scope))

    async def get_session_async(
        self, session_id: str, access_scope: AccessScope = "owned"
    ) -> GetSessionResponse:
        return await self._bridge(self._get_session(session_id, access_scope))

    def _list_sessions(
        self, limit: Any, offset: Any, access_scope: Any
    ) -> Coroutine[Any, Any, ListSessionsResponse]:
        self._check()
        params = {
            "limit": as_positive_int(limit, "limit"),
            "offset": as_non_negative_int(offset, "offset"),
            "access_scope": as_access_scope(access_scope),
        }
        return self._get("list_sessions", "/api/v1/sessions", ListSessionsResponse, params)

    def list_sessions(
        self, limit: int = 20, offset: int = 0, access_scope: AccessScope = "owned"
    ) -> APIFuture[ListSessionsResponse]:
        """A page of session ids."""
        return self._submit(self._list_sessions(limit, offset, access_scope))

    async def list_sessions_async(
        self, limit: int = 20, offset: int = 0, access_scope: AccessScope = "owned"
    ) -> ListSessionsResponse:
        return await self._bridge(self._list_sessions(limit, offset, access_scope))

    def _get_sampler(self, sampler_id: Any) -> Coroutine[Any, Any, GetSamplerResponse]:
        self._check()
        if not isinstance(sampler_id, str) or not sampler_id or "/" in sampler_id:
            raise TinkexValidationError("sampler_id", f"must be a sampler id, got {sampler_id!r}")
        return self._get("get_sampler", f"/api/v1/samplers/{_seg(sampler_id)}", GetSamplerResponse)

    def get_sampler(self, sampler_id: str) -> APIFuture[GetSamplerResponse]:
        """A sampler's base model and model path."""
        return self._submit(self._get_sampler(sampler_id))

    async def get_sampler_async(self, sampler_id: str) -> GetSamplerResponse:
        return await self._bridge(self._get_sampler(sampler_id))
