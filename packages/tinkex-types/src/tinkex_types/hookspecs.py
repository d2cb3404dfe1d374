"""Every hook of tinkex: the only joints between its packages.

Hooks are called with keyword arguments only, through :class:`tinkex_types.Hooks`, never
through ``pm.hook`` directly; the facade calls through pluggy, so an implementation may
declare only the arguments it uses, ``wrapper=True`` implementations wrap calls and
``pm.add_hookcall_monitoring`` / ``pm.trace`` see them. Implementations use
:data:`tinkex_types.hookimpl`. The argument and result types are the Protocols of
:mod:`tinkex_types._protocols` (no httpx or click import here).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Final

import pluggy

from tinkex_types._events import (
    CircuitBreakerEvent,
    FutureEvent,
    QueueStateEvent,
    RecoveryEvent,
    RegularizerEvent,
    RequestEvent,
    SessionEvent,
)
from tinkex_types._protocols import (
    AsyncTransport,
    CommandGroup,
    RegisterRegularizer,
    RegisterTelemetrySink,
    RegisterTransport,
    TransportConfig,
)
from tinkex_types._tokenizer import Tokenizer

__all__ = [
    "OBSERVER_HOOKS",
    "PROJECT_NAME",
    "RegisterNamed",
    "RegisterRegularizer",
    "RegisterTelemetrySink",
    "RegisterTransport",
    "hookimpl",
    "hookspec",
]

PROJECT_NAME = "tinkex"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: ``register(name, obj)``: the callback of the "contribute named things" hooks, loosely typed
#: (kept for implementations written before :data:`RegisterRegularizer` and
#: :data:`RegisterTelemetrySink`).
RegisterNamed = Callable[[str, Any], None]

#: Observer hooks: an implementation that raises is logged (``observer_failed``) and
#: skipped; the other implementations still run and the caller never sees the error.
OBSERVER_HOOKS: Final[frozenset[str]] = frozenset(
    {
        "tinkex_on_queue_state_change",
        "tinkex_on_request",
        "tinkex_on_future",
        "tinkex_on_session",
        "tinkex_on_regularizer",
        "tinkex_on_circuit_breaker",
        "tinkex_on_recovery",
        "tinkex_inject_headers",
    }
)


@hookspec
def tinkex_register_transports(register: RegisterTransport) -> None:
    """Contribute transports by URL scheme.

    Call ``register(scheme, factory)`` once per scheme (``"http"``, ``"local"``...). The
    factory (:class:`~tinkex_types.TransportFactory`) is called as
    ``factory(config=config, pool=pool_name)`` and must return an
    ``httpx.AsyncBaseTransport`` (:class:`~tinkex_types.AsyncTransport`). A scheme
    registered twice is an error.
    """


@hookspec
def tinkex_wrap_transport(
    transport: AsyncTransport, config: TransportConfig
) -> AsyncTransport | None:
    """Wrap the transport chosen for a client.

    Return a new ``httpx.AsyncBaseTransport`` that delegates to ``transport`` (fault
    injection, tracing...), or ``None`` to leave it as it is. ``config`` is the client's
    ``tinkex_http.Config``. The implementations are chained in hook-call order: each is
    called (through pluggy, one call per implementation) with the transport the previous
    one returned, so the first implementation called wraps innermost.
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
def tinkex_on_circuit_breaker(event: CircuitBreakerEvent) -> None:
    """Observe a circuit breaker of ``tinkex_http`` changing state (``closed``, ``open``,
    ``half_open``) for one endpoint family of one server; ``event.reason`` says why.

    Called by tinkex-http's breaker registry once per transition, from the thread whose
    attempt caused it. Observers must not raise and must not block."""


@hookspec
def tinkex_on_recovery(event: RecoveryEvent) -> None:
    """Observe a step of the opt-in recovery of a training run (``detected``, ``started``,
    ``attempt_failed``, ``completed``, ``failed``), fired by tinkex-clients' recovery.
    Observers must not raise and must not block."""


@hookspec(firstresult=True)
def tinkex_setup_telemetry(service_name: str, required: bool) -> bool | None:
    """Set up the process-wide telemetry export (OpenTelemetry from the ``OTEL_*``
    variables) for a process that must not import the telemetry package itself
    (``tinkex serve``).

    ``service_name`` is the default ``service.name`` when the environment names none;
    ``required`` asks for export even when no ``OTEL_*`` variable does (``--otel``).
    Return ``True`` when export is set up, ``False`` when it is not (the environment
    disables it, or setup failed: log why), ``None`` to pass. First result wins; with no
    implementation the facade answers ``False``. Must not raise.
    """


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
def tinkex_register_regularizers(register: RegisterRegularizer) -> None:
    """Contribute regularizer classes by name: ``register(name, regularizer_class)``.
    A name registered twice is an error."""


@hookspec
def tinkex_register_telemetry_sinks(register: RegisterTelemetrySink) -> None:
    """Contribute telemetry sinks by name (where events go): ``register(name, sink_factory)``.
    A name registered twice is an error."""


@hookspec(firstresult=True)
def tinkex_resolve_tokenizer(name: str) -> Tokenizer | None:
    """Return a tokenizer for a model name (or local path), or ``None`` to pass.

    First result wins. The tokenizer follows :class:`tinkex_types.Tokenizer`
    (``encode``, ``decode``, ``eos_token_id``...).
    """


@hookspec
def tinkex_register_commands(cli: CommandGroup) -> None:
    """Add commands to the ``tinkex`` CLI: ``cli`` is its ``click.Group``
    (:class:`~tinkex_types.CommandGroup`); call ``cli.add_command(...)``. A command name
    already taken is an error (``add_command`` raises :class:`~tinkex_types.PluginError`)."""
