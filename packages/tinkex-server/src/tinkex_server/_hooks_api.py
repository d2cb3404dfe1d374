"""Hook implementations contributed by the server side: the ``local`` transport scheme and
the ``serve`` CLI command. Cheap to import: the app, torch and uvicorn load on first use."""

from __future__ import annotations

from tinkex_types import (
    AsyncTransport,
    CommandGroup,
    RegisterTransport,
    TransportConfig,
    hookimpl,
)

__all__ = ["tinkex_register_commands", "tinkex_register_transports"]


def _local_factory(
    *, config: TransportConfig | None = None, pool: str = "default"
) -> AsyncTransport:
    from tinkex_server._local import local_transport_factory

    return local_transport_factory(config=config, pool=pool)


@hookimpl
def tinkex_register_transports(register: RegisterTransport) -> None:
    """``local://``: the server in-process (see :mod:`tinkex_server._local`)."""
    register("local", _local_factory)


@hookimpl
def tinkex_register_commands(cli: CommandGroup) -> None:
    """``tinkex serve``: the server over HTTP."""
    from tinkex_server._serve import serve

    cli.add_command(serve)
