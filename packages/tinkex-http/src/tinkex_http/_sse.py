"""Incremental server-sent-events decoder (tinkex-features.md §2.9).

:class:`SSEDecoder` accepts bytes split at arbitrary boundaries (inside a line, inside a
``\\r\\n`` pair, inside a multi-byte UTF-8 character) and yields the same :class:`SSEEvent`
sequence for any split. Lines end with ``\\n``, ``\\r\\n`` or ``\\r``; a blank line ends an
event; ``data`` lines are joined with ``\\n``; ``event``, ``id`` and ``retry`` (integer) are
kept; comment lines (``:``) and unknown fields are ignored; one space after the colon is
dropped. An event is emitted when at least one field was seen. :meth:`SSEDecoder.flush`
ends the stream and emits an unterminated last event.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["SSEDecoder", "SSEEvent"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One server-sent event."""

    data: str = ""
    event: str | None = None
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        """``data`` decoded as JSON (raises ``ValueError`` when it is not JSON)."""
        return orjson.loads(self.data)


class SSEDecoder:
    """Feed bytes with :meth:`feed`, collect events; call :meth:`flush` at the end."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._skip_lf = False
        self._reset_event()

    def _reset_event(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._seen = False

    def feed(self, chunk: bytes | str) -> list[SSEEvent]:
        """Decode ``chunk`` and return the events it completes."""
        text = chunk if isinstance(chunk, str) else self._utf8.decode(chunk)
        return list(self._consume(text, final=False))

    def flush(self) -> list[SSEEvent]:
        """End of stream: process a last unterminated line and emit a pending event."""
        text = self._utf8.decode(b"", final=True)
        events = list(self._consume(text, final=True))
        if self._buffer:
            line, self._buffer = self._buffer, ""
            events.extend(self._line(line))
        if self._seen:
            events.append(self._build())
        return events

    def _consume(self, text: str, *, final: bool) -> Iterator[SSEEvent]:
        if self._skip_lf and text:
            if text[0] == "\n":
                text = text[1:]
            self._skip_lf = False
        buf = self._buffer + text
        start = 0
        n = len(buf)
        while start < n:
            cr = buf.find("\r", start)
            lf = buf.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, nxt = lf, lf + 1
            else:
                end = cr
                if cr + 1 < n:
                    nxt = cr + 2 if buf[cr + 1] == "\n" else cr + 1
                else:
                    # "\r" at the end of the data seen so far: a "\n" may follow.
                    nxt = cr + 1
                    self._skip_lf = not final
            yield from self._line(buf[start:end])
            start = nxt
        self._buffer = buf[start:]

    def _line(self, line: str) -> Iterator[SSEEvent]:
        if line == "":
            if self._seen:
                yield self._build()
            return
        if line.startswith(":"):
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._seen = True
        elif name == "event":
            self._event = value
            self._seen = True
        elif name == "id":
            if "\x00" not in value:
                self._id = value
                self._seen = True
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
            self._seen = True

    def _build(self) -> SSEEvent:
        event = SSEEvent(
            data="\n".join(self._data), event=self._event, id=self._id, retry=self._retry
        )
        self._reset_event()
        return event
