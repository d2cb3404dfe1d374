"""Hook implementations of tinkex_server (loaded through the `tinkex` entry point group)."""
