"""``tinkex serve`` / ``python -m tinkex_server serve``: the server over HTTP (uvicorn).

Binds 127.0.0.1 by default. ``--port 0`` picks a free port; the chosen address is printed
as a line ``tinkex-server listening on http://HOST:PORT`` (flushed) once the socket is
bound, so scripts can wait for it. The API key (``--api-key`` or ``TINKEX_SERVER_API_KEY``)
is never printed or logged.

OpenTelemetry: before the app serves, the server asks its hooks to set up export
(``Hooks.setup_telemetry("tinkex-server", required=--otel)``; tinkex-telemetry implements
it from the standard ``OTEL_*`` variables). Without ``--otel``, export is set up only when
those variables ask for it (zero code); ``--otel`` sets it up even without them (OTLP
defaults) and is an error when no telemetry plugin is installed.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import click

from tinkex_server._config import DATA_DIR_ENV, PATH_STYLES, ServerConfig, default_data_dir
from tinkex_types import Hooks, get_hooks

__all__ = ["serve", "serve_main"]

API_KEY_ENV = "TINKEX_SERVER_API_KEY"
#: ``service.name`` of the server's telemetry (unless ``OTEL_SERVICE_NAME`` names one).
SERVICE_NAME = "tinkex-server"
_log = logging.getLogger("tinkex_server.serve")


def setup_telemetry(hooks: Hooks, *, required: bool) -> bool:
    """Ask ``hooks`` to set up telemetry export for this process (see the module
    docstring); ``True`` when a plugin did. ``required`` (``--otel``) with no plugin
    installed raises :class:`RuntimeError` naming the package to install."""
    if required and not hooks.pm.hook.tinkex_setup_telemetry.get_hookimpls():
        raise RuntimeError(
            "--otel: no telemetry plugin is installed; install tinkex-telemetry "
            "(pip install tinkex-telemetry, or tinkex[telemetry]) or drop --otel"
        )
    done = hooks.setup_telemetry(SERVICE_NAME, required=required)
    if required and not done:
        _log.warning(
            "--otel: OpenTelemetry export is not set up (OTEL_SDK_DISABLED is true, or a "
            "warning above names the variable at fault)"
        )
    return done


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Name the protocol: asyncio turns TCP_NODELAY on only for sockets whose ``proto`` is
    # IPPROTO_TCP, and accepted sockets inherit it. Without it every response waits ~40 ms
    # for Nagle's algorithm and the peer's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _graceful_server(config: Any, runtime: Any) -> Any:
    """A uvicorn server whose shutdown first answers every held ``retrieve_future`` poll
    ("try again": the client polls the restarted server), so no poll is cut off after
    uvicorn's grace period with a ``CancelledError``."""
    import uvicorn

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            hub = getattr(runtime, "hub", None)  # set once the runtime has started
            if hub is not None:
                hub.release_waiters()
            await super().shutdown(sockets)

    return _Server(config)


def run_server(
    config: ServerConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    torch_threads: int | None = None,
    hooks: Hooks | None = None,
    otel: bool = False,
) -> None:
    """Serve ``config`` with uvicorn until interrupted; ``hooks`` default to the process's
    (``tinkex_types.get_hooks()``: the plugins installed for ``tinkex``). Telemetry export
    is set up first (:func:`setup_telemetry`; ``otel`` makes it required)."""
    import uvicorn

    from tinkex_server._app import create_app

    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)
    from tinkex_server._runtime import _DataDirLock

    probe = _DataDirLock(config.data_dir)
    probe.acquire()  # fail before binding if another server owns the data directory
    probe.release()
    server_hooks = hooks if hooks is not None else get_hooks()
    setup_telemetry(server_hooks, required=otel)
    app = create_app(config, hooks=server_hooks)
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(f"tinkex-server listening on http://{shown}:{bound_port}")
    click.echo(f"tinkex-server data directory: {config.data_dir}")
    sys.stdout.flush()
    uv_config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=log_level == "debug",
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    server = _graceful_server(uv_config, app.state.tinkex)
    server.run(sockets=[sock])
    if not server.started:
        raise RuntimeError("the server failed to start (see the log above)")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port (0 picks a free one).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"SQLite database and checkpoints (default ${DATA_DIR_ENV} or the user data dir).",
)
@click.option(
    "--api-key",
    envvar=API_KEY_ENV,
    default=None,
    multiple=True,
    help=f"Require this X-API-Key (repeatable; or ${API_KEY_ENV}). Default: accept any key.",
)
@click.option(
    "--seq-gap-grace",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for a missing seq_id before skipping it.",
)
@click.option(
    "--poll-hold",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds retrieve_future holds an unfinished future before answering 408.",
)
@click.option(
    "--max-body-mib",
    type=float,
    default=64.0,
    show_default=True,
    help="Largest request body in MiB (larger gets 413).",
)
@click.option(
    "--torch-threads",
    type=click.IntRange(1, 1024),
    default=None,
    help="torch.set_num_threads for the engine.",
)
@click.option(
    "--json-only",
    is_flag=True,
    default=False,
    help="Speak only the JSON generation (official SDK 0.16.1): client/config and "
    "dynamic_config answer 404, protobuf request bodies 415.",
)
@click.option(
    "--path-style",
    type=click.Choice(list(PATH_STYLES)),
    default="standard",
    show_default=True,
    help="Shape of issued save paths: standard tinker://<run>/<kind>/<name>, or two-part "
    "tinker://<run>/<name> (both shapes are accepted back).",
)
@click.option(
    "--enable-test-routes",
    is_flag=True,
    default=False,
    help="Add /api/v1/_test/* routes (mark runs corrupted, read the applied log).",
)
@click.option(
    "--otel",
    is_flag=True,
    default=False,
    help="Export OpenTelemetry traces and metrics (configured by the standard OTEL_* "
    "variables; needs tinkex-telemetry). Without it, export is on when OTEL_* ask for it.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
def serve(
    host: str,
    port: int,
    data_dir: Path | None,
    api_key: tuple[str, ...],
    seq_gap_grace: float,
    poll_hold: float,
    max_body_mib: float,
    torch_threads: int | None,
    json_only: bool,
    path_style: str,
    enable_test_routes: bool,
    otel: bool,
    log_level: str,
) -> None:
    """Run the local Tinker-compatible server over HTTP."""
    keys = tuple(k for raw in api_key for k in raw.split(",") if k.strip())
    try:
        config = ServerConfig(
            data_dir=data_dir if data_dir is not None else default_data_dir(),
            api_keys=tuple(k.strip() for k in keys),
            seq_gap_grace_s=seq_gap_grace,
            poll_hold_s=poll_hold,
            max_body_bytes=max(1, int(max_body_mib * 1024 * 1024)),
            enable_test_routes=enable_test_routes,
            protobuf=not json_only,
            path_style=path_style,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        run_server(
            config,
            host=host,
            port=port,
            log_level=log_level,
            torch_threads=torch_threads,
            otel=otel,
        )
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def _cli() -> None:
    """tinkex-server commands."""


_cli.add_command(serve)


def serve_main(argv: list[str] | None = None) -> Any:
    """Entry point of ``python -m tinkex_server`` (``serve`` is the default command)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        args = ["serve", *args]
    return _cli.main(args=args, prog_name="python -m tinkex_server")


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    serve_main()
