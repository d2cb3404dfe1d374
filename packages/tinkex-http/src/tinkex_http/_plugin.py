"""Hook implementations of tinkex_http (loaded through the `tinkex` entry point group)."""
