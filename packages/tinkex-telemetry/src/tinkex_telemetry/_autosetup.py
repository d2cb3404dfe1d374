"""Zero-code OpenTelemetry: the process-wide export setup from the standard ``OTEL_*`` variables.

:func:`setup_from_env` is the one entry point for any process (a client, ``tinkex serve``,
a worker): it installs the global providers once, exactly like
:func:`~tinkex_telemetry.setup_otel_from_env`, and never twice. :func:`auto_setup` is what
the plugin runs when it is first used (the first tinkex client of the process): it calls
:func:`setup_from_env` only when the environment asks for export.
"""

from __future__ import annotations

import os
import threading

from tinkex_http import get_logger
from tinkex_telemetry._otel import OtelSetup, setup_otel_from_env
from tinkex_telemetry._redact import redact_text

__all__ = ["auto_setup", "export_requested", "setup_from_env"]

_log = get_logger("tinkex.telemetry")
_lock = threading.Lock()
_installed: OtelSetup | None = None
_TRUTHY = {"1", "true", "yes", "on", "y", "t"}
_FALSY = {"0", "false", "no", "off", "n", "f"}
#: Variables whose presence says "export": an endpoint, or an exporter chosen explicitly.
_EXPORT_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)
_EXPORTER_VARS = ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER")


def _flag(name: str) -> bool | None:
    raw = os.environ.get(name, "").strip().lower()
    if raw in _TRUTHY:
        return True
    if raw in _FALSY:
        return False
    return None


def export_requested() -> bool:
    """Whether the environment asks this process to export telemetry.

    ``OTEL_SDK_DISABLED=true`` or ``TINKEX_OTEL_SETUP=0``: no. ``TINKEX_OTEL_SETUP=1``:
    yes. Otherwise yes when an OTLP endpoint variable is set, or ``OTEL_TRACES_EXPORTER``
    / ``OTEL_METRICS_EXPORTER`` name an exporter other than ``none``.
    """
    if _flag("OTEL_SDK_DISABLED"):
        return False
    forced = _flag("TINKEX_OTEL_SETUP")
    if forced is not None:
        return forced
    if any(os.environ.get(var, "").strip() for var in _EXPORT_VARS):
        return True
    return any(
        os.environ.get(var, "").strip().lower() not in ("", "none") for var in _EXPORTER_VARS
    )


def setup_from_env(*, service_name: str | None = None, force: bool = False) -> OtelSetup:
    """Install the global OpenTelemetry providers from ``OTEL_*`` once per process.

    The first call does what :func:`~tinkex_telemetry.setup_otel_from_env` does (exporters
    and resource from the standard variables; nothing when ``OTEL_SDK_DISABLED=true``;
    nothing for a signal whose global provider the application, or
    ``opentelemetry-instrument``, already set, unless ``force``); later calls return what
    the first one installed. ``service_name`` is used when ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` do not name one (default ``tinkex``); the server passes
    ``tinkex-server``. The providers flush and shut down at interpreter exit.
    """
    global _installed
    with _lock:
        if _installed is None:
            _installed = setup_otel_from_env(
                force=force, resource_attributes=_service_default(service_name)
            )
        return _installed


def _service_default(service_name: str | None) -> dict[str, str]:
    """``service.name`` unless the environment names the service (env wins here)."""
    if "OTEL_SERVICE_NAME" in os.environ:
        return {}
    if "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        return {}
    return {"service.name": service_name or "tinkex"}


def auto_setup(service_name: str | None = None, *, required: bool = False) -> OtelSetup | None:
    """:func:`setup_from_env` when :func:`export_requested` (or ``required``, e.g.
    ``tinkex serve --otel``; ``OTEL_SDK_DISABLED=true`` still wins); never raises (a bad
    variable is logged as a warning naming it, and the process runs without export).

    This is what a ``tinkex_setup_telemetry(service_name, required)`` hook implementation
    calls, so that a process that must not import this package (the server) sets up
    export through the hooks."""
    try:
        if not (export_requested() or (required and not _flag("OTEL_SDK_DISABLED"))):
            return None
        return setup_from_env(service_name=service_name)
    except Exception as exc:
        _log.warning("otel_setup_failed", error=redact_text(str(exc)))
        return None


def _reset_for_tests() -> None:
    """Forget the installed setup (tests that install providers more than once)."""
    global _installed
    with _lock:
        _installed = None
