"""Output: one JSON document on stdout, or rich tables; messages and progress on stderr."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tinkex_cli._logging import Redactor

__all__ = [
    "Output",
    "OutputFormat",
    "format_bool",
    "format_size",
    "format_time",
    "to_json_data",
]

OutputFormat = Literal["table", "json"]

#: Width used when stdout is not a terminal, so that tables never wrap or truncate values
#: such as ``tinker://`` paths (rich does not expand tables beyond their content).
_PIPE_WIDTH = 400


def format_size(size: int | None) -> str:
    """``1536`` → ``1.5 KB``; ``None`` → ``-``."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_bool(value: bool | None) -> str:
    if value is None:
        return "-"
    return "Yes" if value else "No"


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def format_time(value: dt.datetime | None, *, now: dt.datetime | None = None) -> str:
    """Human time: ``just now``, ``5 minutes ago``, ``in 2 days``; the date past 30 days."""
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    delta = (value - now).total_seconds()
    future = delta > 0
    secs = abs(delta)
    if secs < 60:
        return "just now" if not future else "in less than a minute"
    for limit, size, unit in (
        (3600, 60, "minute"),
        (86400, 3600, "hour"),
        (30 * 86400, 86400, "day"),
    ):
        if secs < limit:
            text = _plural(int(secs // size), unit)
            return f"in {text}" if future else f"{text} ago"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def to_json_data(value: Any) -> Any:
    """Plain JSON data from pydantic models (all fields), datetimes, mappings and sequences."""
    if isinstance(value, BaseModel):
        # Every field, ``None`` included, so that JSON output has a stable set of keys
        # (wire dumps drop ``None`` fields).
        return {name: to_json_data(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): to_json_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_data(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # keep the document valid JSON
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


class Output:
    """Where a command's results go.

    ``emit(doc, render)``: in JSON mode prints ``doc`` as the single JSON document on stdout;
    in table mode calls ``render(out)``. ``info``/``warn`` always go to stderr (never
    in JSON mode's stdout). Every text printed passes through the redactor.
    """

    def __init__(self, fmt: OutputFormat, redactor: Redactor) -> None:
        self.format: OutputFormat = fmt
        self.redactor = redactor
        self._emitted = False

    @property
    def json(self) -> bool:
        return self.format == "json"

    # -- consoles -------------------------------------------------------------------
    def _console(self, stream: Any) -> Console:
        is_tty = bool(getattr(stream, "isatty", lambda: False)())
        return Console(
            file=stream,
            width=None if is_tty else _PIPE_WIDTH,
            highlight=False,
            soft_wrap=not is_tty,
            emoji=False,
            markup=False,
        )

    def stdout_console(self) -> Console:
        return self._console(sys.stdout)

    def stderr_console(self) -> Console:
        return self._console(sys.stderr)

    # -- results --------------------------------------------------------------------
    def emit(self, doc: Any, render: Callable[[Output], None]) -> None:
        if self._emitted:
            raise RuntimeError("a command may emit only one result")
        self._emitted = True
        if self.json:
            text = json.dumps(to_json_data(doc), indent=2, ensure_ascii=False, allow_nan=False)
            sys.stdout.write(self.redactor(text) + "\n")
            sys.stdout.flush()
        else:
            render(self)

    def line(self, text: str = "") -> None:
        """A plain line of table-mode output on stdout."""
        sys.stdout.write(self.redactor(text) + "\n")

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        title: str | None = None,
    ) -> None:
        table = Table(title=title, title_justify="left", show_lines=False, highlight=False)
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*(Text(self.redactor("" if v is None else str(v))) for v in row))
        self.stdout_console().print(table)

    def properties(self, rows: Iterable[tuple[str, Any]], *, title: str | None = None) -> None:
        """A two-column ``Property | Value`` table."""
        self.table(["Property", "Value"], rows, title=title)

    # -- messages (stderr) ------------------------------------------------------------
    def info(self, text: str) -> None:
        """A human message on stderr (kept out of stdout so JSON stays clean)."""
        sys.stderr.write(self.redactor(text) + "\n")
        sys.stderr.flush()

    def warn(self, text: str) -> None:
        self.info(f"Warning: {text}")
