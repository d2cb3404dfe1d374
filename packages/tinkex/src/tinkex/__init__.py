"""tinkex."""

__all__: list[str] = []
