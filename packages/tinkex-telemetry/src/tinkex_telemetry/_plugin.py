"""Hook implementations of tinkex_telemetry (loaded through the ``tinkex`` entry point group).

Every function delegates to one :class:`~tinkex_telemetry.TelemetryPlugin` built on first
use with the global OpenTelemetry providers (see :func:`default_plugin`). Disable the
whole plugin with ``TINKEX_DISABLE_PLUGINS=telemetry``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from tinkex_http import get_logger, parse_bool
from tinkex_telemetry._autosetup import auto_setup
from tinkex_telemetry._core import TelemetryPlugin
from tinkex_types import (
    AsyncTransport,
    CircuitBreakerEvent,
    FutureEvent,
    QueueStateEvent,
    RecoveryEvent,
    RegularizerEvent,
    RequestEvent,
    SessionEvent,
    TinkexValidationError,
    TransportConfig,
    hookimpl,
)

__all__ = ["default_plugin"]

_default: TelemetryPlugin | None = None
_lock = threading.Lock()


def _propagate_from_env() -> bool:
    raw = os.environ.get("TINKEX_OTEL_PROPAGATE", "").strip()
    if not raw:
        return True
    try:
        return parse_bool(raw, "TINKEX_OTEL_PROPAGATE")
    except TinkexValidationError as exc:
        get_logger("tinkex.telemetry").warning(
            "otel_propagate_ignored", problem=str(exc), using=True
        )
        return True


def default_plugin() -> TelemetryPlugin:
    """The process-wide plugin behind the entry point (global OpenTelemetry providers).

    Trace-context propagation is on unless ``TINKEX_OTEL_PROPAGATE`` is false when it is
    first used, read with the same rules as ``tinkex_http.Config.otel_propagate``
    (``0 false no off n f``); a value that is not a boolean word is logged and ignored here
    (``Config`` rejects it with an error naming the variable).

    Building it is the zero-code OpenTelemetry switch: when the ``OTEL_*`` variables ask
    for export (see :func:`tinkex_telemetry.export_requested`) and the application has no
    provider of its own, :func:`tinkex_telemetry.setup_from_env` installs the global ones
    first, so the first tinkex client of a process exports with no code.
    """
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                auto_setup()
                _default = TelemetryPlugin(propagate=_propagate_from_env())
    return _default


@hookimpl
def tinkex_operation_span(
    operation: str,
    attributes: Mapping[str, Any],
    carrier: Mapping[str, str] | None,
) -> contextlib.AbstractContextManager[Any] | None:
    return default_plugin().tinkex_operation_span(
        operation=operation, attributes=attributes, carrier=carrier
    )


@hookimpl
def tinkex_inject_headers(headers: dict[str, str]) -> None:
    default_plugin().tinkex_inject_headers(headers=headers)


@hookimpl
def tinkex_wrap_transport(
    transport: AsyncTransport, config: TransportConfig
) -> AsyncTransport | None:
    return default_plugin().tinkex_wrap_transport(transport=transport, config=config)


@hookimpl
def tinkex_on_request(event: RequestEvent) -> None:
    default_plugin().tinkex_on_request(event=event)


@hookimpl
def tinkex_on_future(event: FutureEvent) -> None:
    default_plugin().tinkex_on_future(event=event)


@hookimpl
def tinkex_on_queue_state_change(event: QueueStateEvent) -> None:
    default_plugin().tinkex_on_queue_state_change(event=event)


@hookimpl
def tinkex_on_regularizer(event: RegularizerEvent) -> None:
    default_plugin().tinkex_on_regularizer(event=event)


@hookimpl
def tinkex_on_circuit_breaker(event: CircuitBreakerEvent) -> None:
    default_plugin().on_circuit_breaker(event)


@hookimpl
def tinkex_on_recovery(event: RecoveryEvent) -> None:
    default_plugin().on_recovery(event)


@hookimpl
def tinkex_setup_telemetry(service_name: str, required: bool) -> bool:
    """Install OpenTelemetry export from ``OTEL_*`` (``tinkex serve`` calls this through
    ``Hooks.setup_telemetry``): ``True`` when export is set up."""
    return auto_setup(service_name, required=required) is not None


@hookimpl
def tinkex_on_session(event: SessionEvent) -> Any | None:
    return default_plugin().tinkex_on_session(event=event)


@hookimpl
def tinkex_register_telemetry_sinks(register: Callable[[str, Any], None]) -> None:
    default_plugin().tinkex_register_telemetry_sinks(register=register)
