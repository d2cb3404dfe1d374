"""tinkex_clients."""

__all__: list[str] = []
