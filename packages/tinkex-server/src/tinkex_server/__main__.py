"""``python -m tinkex_server [serve] [--host ...] [--port ...] [--data-dir ...]``."""

from __future__ import annotations

from tinkex_server._serve import serve_main

if __name__ == "__main__":
    serve_main()
