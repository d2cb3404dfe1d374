"""Progress shown while the user waits: bars for downloads, a spinner for long waits.

Only on a terminal, and only on stderr: stdout carries the result (one JSON document with
``-f json``), and piped or captured stderr gets no control sequences.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["progress_wanted", "resolve_waiting", "waiting"]


def progress_wanted(disabled: bool = False) -> bool:
    """Whether to draw progress: not ``disabled`` and stderr is a terminal."""
    if disabled:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(callable(isatty) and isatty())


@contextlib.contextmanager
def waiting(label: str, *, disabled: bool = False) -> Iterator[None]:
    """A spinner with ``label`` and the elapsed time on stderr while the block runs."""
    if not progress_wanted(disabled):
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr, highlight=False, markup=False, emoji=False),
        transient=True,
    )
    with progress:
        progress.add_task(label, total=None)
        yield


def resolve_waiting(value: Any, label: str) -> Any:
    """``value.result()`` of a future (the value itself otherwise) under :func:`waiting`."""
    result = getattr(value, "result", None)
    if not callable(result):
        return value
    with waiting(label):
        return result()
