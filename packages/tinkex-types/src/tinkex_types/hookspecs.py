"""Every hook of tinkex: the only joints between its packages.

Hooks are called with keyword arguments only, through :class:`tinkex_types.Hooks`, never
through ``pm.hook`` directly. Implementations use :data:`tinkex_types.hookimpl`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import pluggy

from tinkex_types._events import (
    FutureEvent,
    QueueStateEvent,
    RegularizerEvent,
    RequestEvent,
    SessionEvent,
)

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "tinkex"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: ``register(name, factory)``; a factory is called as ``factory(config=..., pool=...)`` and
#: returns an ``httpx.AsyncBaseTransport``.
RegisterTransport = Callable[[str, Callable[..., Any]], None]
#: ``register(name, obj)`` for the other "contribute named things" hooks.
RegisterNamed = Callable[[str, Any], None]


@hookspec
def tinkex_register_transports(register: RegisterTransport) -> None:
    """Contribute transports by URL scheme.

    Call ``register(scheme, factory)`` once per scheme (``"http"``, ``"local"``...). The
    factory is called as ``factory(config=config, pool=pool_name)`` and must return an
    ``httpx.AsyncBaseTransport``. A scheme registered twice is an error.
    """


@hookspec
def tinkex_wrap_transport(transport: Any, config: Any) -> Any | None:
    """Wrap the transport chosen for a client.

    Return a new ``httpx.AsyncBaseTransport`` that delegates to ``transport`` (fault
    injection, tracing...), or ``None`` to leave it as it is. Wrappers are applied one after
    the other in hook-call order; ``config`` is the client's ``tinkex_http.Config``.
    """


@hookspec
def tinkex_on_queue_state_change(event: QueueStateEvent) -> None:
    """Observe a future whose queue state changed (``active``, ``paused_rate_limit``,
    ``paused_capacity``, ``unknown``); ``event.reason`` is human readable.
    Observers must not raise and must not block."""


@hookspec
def tinkex_on_request(event: RequestEvent) -> None:
    """Observe one finished HTTP attempt (a response, or a transport error), including the
    attempts that will be retried. Observers must not raise and must not block."""


@hookspec
def tinkex_on_future(event: FutureEvent) -> None:
    """Observe a future that reached its final state: resolved, failed, timed out or
    cancelled. Observers must not raise and must not block."""


@hookspec
def tinkex_on_session(event: SessionEvent) -> Any | None:
    """Observe a ServiceClient session: ``phase="start"`` right after ``create_session``
    succeeded, ``phase="end"`` once when the client is closed (``close()``/``aclose()``;
    called from the closing thread after the session stopped, never on the event loop).

    On ``start`` an implementation may return a per-session telemetry handle (tinkex-telemetry
    returns its backend reporter); the client keeps the first non-``None`` one and hands it
    out through ``get_telemetry()``. The result of ``end`` is ignored. An implementation that
    keeps per-session state keys it by ``event.session_id`` and releases it on ``end``.
    Observers must not raise; ``start`` must not block, ``end`` may wait briefly (bounded)
    to flush.
    """


@hookspec
def tinkex_on_regularizer(event: RegularizerEvent) -> None:
    """Observe a regularizer starting and stopping inside a custom-loss pipeline (with its
    duration and value on ``stop``). Observers must not raise and must not block."""


@hookspec
def tinkex_operation_span(
    operation: str,
    attributes: Mapping[str, Any],
    carrier: Mapping[str, str] | None,
) -> contextlib.AbstractContextManager[Any] | None:
    """Return a context manager that spans one SDK or server operation, or ``None``.

    ``operation`` is e.g. ``"forward_backward"`` or ``"server.engine_step"``;
    ``attributes`` never hold secrets or request bodies. ``carrier`` holds incoming
    propagation headers (``traceparent``...) when the span continues a remote trace.
    Every returned manager is entered for the duration of the operation.
    """


@hookspec
def tinkex_inject_headers(headers: dict[str, str]) -> None:
    """Add propagation headers (e.g. W3C ``traceparent``/``tracestate``) to an outgoing
    request, in place. Must not add or read secrets."""


@hookspec
def tinkex_register_regularizers(register: RegisterNamed) -> None:
    """Contribute regularizer classes by name: ``register(name, regularizer_class)``.
    A name registered twice is an error."""


@hookspec
def tinkex_register_telemetry_sinks(register: RegisterNamed) -> None:
    """Contribute telemetry sinks by name (where events go): ``register(name, sink_factory)``.
    A name registered twice is an error."""


@hookspec(firstresult=True)
def tinkex_resolve_tokenizer(name: str) -> Any | None:
    """Return a tokenizer for a model name (or local path), or ``None`` to pass.

    First result wins. The tokenizer follows :class:`tinkex_types.Tokenizer`
    (``encode``, ``decode``, ``eos_token_id``...).
    """


@hookspec
def tinkex_register_commands(cli: Any) -> None:
    """Add commands to the ``tinkex`` CLI: ``cli`` is its ``click.Group``; call
    ``cli.add_command(...)``. A command name already taken is an error."""
