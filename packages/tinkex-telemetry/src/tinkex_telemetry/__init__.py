"""tinkex_telemetry."""

__all__: list[str] = []
