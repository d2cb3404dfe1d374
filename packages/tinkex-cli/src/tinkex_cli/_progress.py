"""Progress shown while the user waits: bars for downloads, a spinner for long waits.

Only on a terminal, and only on stderr: stdout carries the result (one JSON document with
``-f json``), and piped or captured stderr gets no control sequences.

Given the command's ``hooks``, the spinner also says where the operation stands in the
server's queue: a :class:`QueueWatch` listens to ``tinkex_on_queue_state_change`` while the
spinner runs and turns its label into e.g. ``Saving checkpoint (3rd in queue, ~12 s)`` or
``Sampling (paused: paused_capacity)`` (docs/queue.md).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from tinkex_types import Hooks, QueueStateEvent, hookimpl

__all__ = ["QueueWatch", "progress_wanted", "resolve_waiting", "waiting"]


def progress_wanted(disabled: bool = False) -> bool:
    """Whether to draw progress: not ``disabled`` and stderr is a terminal."""
    if disabled:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(callable(isatty) and isatty())


class QueueWatch:
    """A plugin that keeps the latest queue-state event of a wait and renders the label
    (:attr:`description`); ``on_change(description)`` runs after every event (on the
    client's event-loop thread)."""

    def __init__(self, label: str, on_change: Callable[[str], None] | None = None) -> None:
        self.label = label
        self.on_change = on_change
        self.last: QueueStateEvent | None = None
        self._lock = threading.Lock()

    @hookimpl
    def tinkex_on_queue_state_change(self, event: QueueStateEvent) -> None:
        with self._lock:
            self.last = event
        if self.on_change is not None:
            self.on_change(self.description)

    @property
    def description(self) -> str:
        """``label``, ``label (3rd in queue, ~12 s)`` or ``label (paused: <state>)``."""
        with self._lock:
            event = self.last
        if event is None:
            return self.label
        place = event.queue_place
        if event.queue_state != "active":
            return f"{self.label} (paused: {event.queue_state}{', ' + place if place else ''})"
        return f"{self.label} ({place})" if place else self.label

    @contextlib.contextmanager
    def listening(self, hooks: Hooks | None) -> Iterator[QueueWatch]:
        """Receive ``hooks``' queue-state events inside the block (nothing without hooks)."""
        if hooks is None:
            yield self
            return
        hooks.pm.register(self)
        try:
            yield self
        finally:
            hooks.pm.unregister(self)


@contextlib.contextmanager
def waiting(
    label: str, *, disabled: bool = False, hooks: Hooks | None = None
) -> Iterator[QueueWatch | None]:
    """A spinner with ``label`` (plus the queue place reported through ``hooks``) and the
    elapsed time on stderr while the block runs; yields its :class:`QueueWatch` (``None``
    when no spinner is drawn)."""
    if not progress_wanted(disabled):
        yield None
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
        task = progress.add_task(label, total=None)

        def show(description: str) -> None:
            progress.update(task, description=description)

        with QueueWatch(label, show).listening(hooks) as watch:
            yield watch


def resolve_waiting(value: Any, label: str, hooks: Hooks | None = None) -> Any:
    """``value.result()`` of a future (the value itself otherwise) under :func:`waiting`."""
    result = getattr(value, "result", None)
    if not callable(result):
        return value
    with waiting(label, hooks=hooks):
        return result()
