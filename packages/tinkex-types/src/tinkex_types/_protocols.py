"""The shapes the hooks pass around, as Protocols (no httpx, click or torch import here).

Hookspecs in :mod:`tinkex_types.hookspecs` are typed with these, so a plugin author sees
what a hook hands over and what it must return, and mypy checks implementations that
annotate their arguments with them. The concrete classes live in the packages that own
them (``httpx.AsyncBaseTransport``, ``tinkex_http.Config``, ``click.Group``...); each
satisfies its Protocol structurally, without importing this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "AsyncTransport",
    "CommandGroup",
    "RegisterRegularizer",
    "RegisterTelemetrySink",
    "RegisterTransport",
    "RegularizerFactory",
    "TelemetrySinkFactory",
    "TransportConfig",
    "TransportFactory",
]


@runtime_checkable
class AsyncTransport(Protocol):
    """An asynchronous HTTP transport: the shape of ``httpx.AsyncBaseTransport``.

    ``handle_async_request`` takes an ``httpx.Request`` and returns an ``httpx.Response``.
    Return a subclass of ``httpx.AsyncBaseTransport`` from factories and wrappers: the
    clients hand the transport to ``httpx.AsyncClient``, which also enters it as an async
    context manager (the base class provides that).
    """

    async def handle_async_request(self, request: Any, /) -> Any: ...

    async def aclose(self) -> None: ...


class TransportConfig(Protocol):
    """What the transport hooks may rely on in the client configuration they receive.

    The object is a ``tinkex_http.Config``; factories and wrappers from other packages read
    only ``base_url`` (the service URL, whose scheme picked the factory) and look up any
    optional attribute with ``getattr(config, name, default)``. The built-in ``http``
    factory needs a real ``tinkex_http.Config`` (pool limits, proxy).
    """

    @property
    def base_url(self) -> str: ...


class TransportFactory(Protocol):
    """Builds the transport of one connection pool: ``factory(config=..., pool=...)``.

    ``pool`` names the connection pool the transport serves (``"session"``, ``"training"``,
    ``"sampling"``, ``"futures"``; the telemetry reporter asks for ``"telemetry"``); a
    factory may size its connection limits by it.
    """

    def __call__(self, *, config: TransportConfig, pool: str) -> AsyncTransport: ...


class CommandGroup(Protocol):
    """The ``tinkex`` CLI group as ``tinkex_register_commands`` sees it: a ``click.Group``."""

    def add_command(self, cmd: Any, name: str | None = None) -> None: ...


#: A regularizer class: ``cls(**options)`` returns an object with ``name`` and
#: ``compute(batch) -> (scalar_tensor, metrics)`` (see tinkex-regularizers).
RegularizerFactory = Callable[..., Any]
#: A telemetry sink factory: ``factory(**options)`` returns an object with ``emit(record)``,
#: ``flush(timeout)`` and ``close(timeout)`` (see tinkex-telemetry).
TelemetrySinkFactory = Callable[..., Any]

#: ``register(scheme, factory)``, handed to ``tinkex_register_transports``.
RegisterTransport = Callable[[str, TransportFactory], None]
#: ``register(name, regularizer_class)``, handed to ``tinkex_register_regularizers``.
RegisterRegularizer = Callable[[str, RegularizerFactory], None]
#: ``register(name, sink_factory)``, handed to ``tinkex_register_telemetry_sinks``.
RegisterTelemetrySink = Callable[[str, TelemetrySinkFactory], None]
