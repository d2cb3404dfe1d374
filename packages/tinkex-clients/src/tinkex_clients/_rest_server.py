"""``RestClient.get_server_capabilities`` (tinker 0.38 moved it from ServiceClient to
RestClient, as a future)."""

from __future__ import annotations

from tinkex_clients._future import APIFuture
from tinkex_clients._session import Session, parse_result
from tinkex_types import GetServerCapabilitiesResponse

__all__ = ["CapabilitiesRestMixin"]


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
