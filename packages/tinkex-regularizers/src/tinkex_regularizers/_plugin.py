"""Hook implementations of tinkex_regularizers (loaded through the `tinkex` entry point group)."""
