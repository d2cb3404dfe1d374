"""tinkex_chaos."""

__all__: list[str] = []
