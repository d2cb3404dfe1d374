"""Hook implementations of tinkex_chaos (loaded through the `tinkex` entry point group)."""
