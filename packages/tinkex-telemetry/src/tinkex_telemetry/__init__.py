"""tinkex-telemetry: OpenTelemetry traces and metrics, telemetry sinks and structlog setup.

Installing the package switches it on (entry point ``telemetry`` of group ``tinkex``);
``TINKEX_DISABLE_PLUGINS=telemetry`` switches it off.
"""

from __future__ import annotations

from tinkex_telemetry._autosetup import export_requested, setup_from_env
from tinkex_telemetry._capture import capture_exceptions
from tinkex_telemetry._classify import is_user_error
from tinkex_telemetry._core import SINK_NAMES, TelemetryPlugin
from tinkex_telemetry._logging import configure_logging, parse_log_level
from tinkex_telemetry._metrics import METRIC_NAMES, SAMPLING_OPERATIONS
from tinkex_telemetry._otel import OtelSetup, OtelSink, otel_configured, setup_otel_from_env
from tinkex_telemetry._plugin import default_plugin
from tinkex_telemetry._records import (
    Severity,
    TelemetryRecord,
    TelemetrySink,
    exception_record,
    record_from_event,
)
from tinkex_telemetry._redact import (
    REDACTED,
    SENSITIVE_HEADERS,
    is_secret_key,
    redact_secrets,
    redact_text,
    redact_value,
    register_secret,
    sanitize_url,
)
from tinkex_telemetry._reporter import (
    DEFAULT_FORWARD,
    DEFAULT_SDK_VERSION,
    BackendReporter,
    ReporterSettings,
    ReporterStats,
    telemetry_enabled_from_env,
)
from tinkex_telemetry._sinks import BaseSink, ConsoleSink, format_record
from tinkex_telemetry._transport import TracingTransport

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_FORWARD",
    "DEFAULT_SDK_VERSION",
    "METRIC_NAMES",
    "REDACTED",
    "SAMPLING_OPERATIONS",
    "SENSITIVE_HEADERS",
    "SINK_NAMES",
    "BackendReporter",
    "BaseSink",
    "ConsoleSink",
    "OtelSetup",
    "OtelSink",
    "ReporterSettings",
    "ReporterStats",
    "Severity",
    "TelemetryPlugin",
    "TelemetryRecord",
    "TelemetrySink",
    "TracingTransport",
    "__version__",
    "capture_exceptions",
    "configure_logging",
    "default_plugin",
    "exception_record",
    "export_requested",
    "format_record",
    "is_secret_key",
    "is_user_error",
    "otel_configured",
    "parse_log_level",
    "record_from_event",
    "redact_secrets",
    "redact_text",
    "redact_value",
    "register_secret",
    "sanitize_url",
    "setup_from_env",
    "setup_otel_from_env",
    "telemetry_enabled_from_env",
]
