"""tinkex-server: a local Tinker-compatible server that really trains LoRA adapters with torch.

Public names are imported lazily (``import tinkex_server`` stays cheap; FastAPI, torch and
uvicorn load when a name that needs them is first used).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinkex_server._app import create_app, runtime_of
    from tinkex_server._builtin import builtin_models
    from tinkex_server._config import ServerConfig
    from tinkex_server._engine import (
        BareLoopResult,
        Engine,
        bare_training_loop,
        export_builtin_model,
    )
    from tinkex_server._local import (
        LocalServer,
        LocalTransport,
        get_local_server,
        local_transport_factory,
        shutdown_local_servers,
    )
    from tinkex_server._runtime import Runtime
    from tinkex_server._serve import serve
    from tinkex_server._store import AppliedStep, Store, TelemetryRow

_EXPORTS: dict[str, str] = {
    # server side
    "AppliedStep": "tinkex_server._store",
    "LocalServer": "tinkex_server._local",
    "LocalTransport": "tinkex_server._local",
    "Runtime": "tinkex_server._runtime",
    "ServerConfig": "tinkex_server._config",
    "Store": "tinkex_server._store",
    "TelemetryRow": "tinkex_server._store",
    "create_app": "tinkex_server._app",
    "get_local_server": "tinkex_server._local",
    "local_transport_factory": "tinkex_server._local",
    "runtime_of": "tinkex_server._app",
    "serve": "tinkex_server._serve",
    "shutdown_local_servers": "tinkex_server._local",
    # engine and models
    "BareLoopResult": "tinkex_server._engine",
    "Engine": "tinkex_server._engine",
    "bare_training_loop": "tinkex_server._engine",
    "builtin_models": "tinkex_server._builtin",
    "export_builtin_model": "tinkex_server._engine",
}

__all__ = [
    "AppliedStep",
    "BareLoopResult",
    "Engine",
    "LocalServer",
    "LocalTransport",
    "Runtime",
    "ServerConfig",
    "Store",
    "TelemetryRow",
    "bare_training_loop",
    "builtin_models",
    "create_app",
    "export_builtin_model",
    "get_local_server",
    "local_transport_factory",
    "runtime_of",
    "serve",
    "shutdown_local_servers",
]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tinkex_server' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
