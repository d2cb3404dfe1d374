"""Hook implementations of tinkex_telemetry (loaded through the `tinkex` entry point group)."""
