"""tinkex-cli: the ``tinkex`` command."""

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``tinkex`` command."""
    raise SystemExit("tinkex: the CLI is not built yet")
