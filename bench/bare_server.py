"""The framework's own ceiling for P8: uvicorn + FastAPI answering a constant.

``python -m bench.bare_server`` binds 127.0.0.1 on a free port, prints
``bare server listening on http://...`` and serves ``POST /api/v1/get_info`` returning a
constant JSON object, with the same uvicorn settings as ``tinkex serve`` (no access log,
lifespan on). Nothing of tinkex is imported.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

__all__ = ["main"]

CONSTANT = {"model_id": "bare:train:0", "model_data": {"arch": "bare"}, "is_lora": True}


def main() -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/api/v1/get_info")
    async def get_info() -> dict[str, Any]:
        return CONSTANT

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    print(f"bare server listening on http://127.0.0.1:{port}", flush=True)
    sys.stdout.flush()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
