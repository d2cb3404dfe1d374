"""Usage: the server's counts of processed tokens, or the client's own for servers without
the usage routes.

Every :class:`Session` keeps a :class:`UsageLedger`: the training and sampling clients of the
session add to it what they sent and got back, once per request whose result arrived (the
counters of :mod:`tinkex_types._usage`: ``forward``/``forward_backward`` requests, datums and
input tokens, optimizer steps, sample requests, prompt tokens, returned sequences and their
tokens, prompt-logprob requests). A request retried by the transport counts once here, as on
the server: it is counted when its result arrives.

The reports (:class:`UsageRestMixin` on RestClient, ``get_usage`` on TrainingClient and
ServiceClient) ask the server first (``GET /api/v1/training_runs/{id}/usage`` or
``GET /api/v1/sessions/{id}/usage``, ``source="server"``); a server that answers 404, 405 or
501 there (no such route: e.g. Tinker itself) gets the ledger's counts instead
(``source="client"``), when the ledger knows the run or session; ``source="client"`` asks
the ledger only, ``source="server"`` never falls back.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Literal
from urllib.parse import quote

from tinkex_clients._future import APIFuture
from tinkex_clients._session import Session, parse_result
from tinkex_types import (
    USAGE_COUNTERS,
    APIStatusError,
    ForwardBackwardInput,
    SampleRequest,
    SampleResponse,
    SampleStreamChunk,
    TinkerPath,
    TinkexValidationError,
    UsageEntry,
    UsageResponse,
    UsageScope,
    usage_response,
)

__all__ = [
    "StreamTally",
    "UsageLedger",
    "UsageRestMixin",
    "UsageServiceMixin",
    "UsageTrainingMixin",
    "ledger_of",
]

UsageSourceChoice = Literal["auto", "server", "client"]
#: Statuses of a usage route that mean "this server does not report usage".
_NO_ROUTE = frozenset({404, 405, 501})
#: Base model of an entry whose base model the client never learned.
UNKNOWN_BASE_MODEL = "unknown"

_Key = tuple[str, str, str, str]  # kind, training_run_id, sampler_id, base_model


def _input_tokens(fb_input: ForwardBackwardInput) -> int:
    total = 0
    for datum in fb_input.data:
        try:
            total += datum.model_input.length
        except ValueError:  # an image chunk without expected_tokens: its tokens are unknown
            continue
    return total


class UsageLedger:
    """The local usage counts of one session (thread-safe)."""

    def __init__(self, session_id: str | None = None) -> None:
        self.session_id = session_id
        self._lock = threading.Lock()
        self._rows: dict[_Key, dict[str, int]] = {}
        self._runs: dict[str, str] = {}  # training run -> base model ('' when unknown)
        self._samplers: dict[str, str] = {}  # unnamed sampler snapshot -> training run

    def _add(self, key: _Key, counts: dict[str, int]) -> None:
        with self._lock:
            row = self._rows.setdefault(key, dict.fromkeys(USAGE_COUNTERS, 0))
            for name, value in counts.items():
                row[name] += value

    def _run(self, model_id: str, base_model: str | None) -> str:
        with self._lock:
            known = self._runs.get(model_id) or ""
            self._runs[model_id] = base_model or known
            return base_model or known or UNKNOWN_BASE_MODEL

    # -- recording ------------------------------------------------------------------------
    def forward(
        self,
        model_id: str,
        base_model: str | None,
        inputs: Iterable[ForwardBackwardInput],
        *,
        backward: bool,
    ) -> None:
        """Count the chunks of one ``forward``/``forward_backward`` whose results arrived."""
        base = self._run(model_id, base_model)
        prefix = "forward_backward" if backward else "forward"
        for fb_input in inputs:
            counts = {
                f"{prefix}_requests": 1,
                f"{prefix}_datums": len(fb_input.data),
                f"{prefix}_tokens": _input_tokens(fb_input),
            }
            self._add(("training", model_id, "", base), counts)

    def training_step(self, model_id: str, base_model: str | None, request_type: str) -> None:
        """Count one ordered training request whose result arrived (only ``OptimStep``
        counts; the others are no usage)."""
        base = self._run(model_id, base_model)
        if request_type == "OptimStep":
            self._add(("training", model_id, "", base), {"optim_steps": 1})

    def link_sampler(self, sampling_session_id: str, model_id: str, base_model: str | None) -> None:
        """An unnamed sampler snapshot of training run ``model_id``."""
        self._run(model_id, base_model)
        with self._lock:
            self._samplers[sampling_session_id] = model_id

    def _sampler_run(self, sampling_session_id: str, model_path: str | None) -> str:
        if model_path is not None:
            try:
                return TinkerPath.parse(model_path).training_run_id
            except ValueError:
                return ""
        with self._lock:
            return self._samplers.get(sampling_session_id, "")

    def sample(
        self,
        sampling_session_id: str,
        base_model: str | None,
        model_path: str | None,
        request: SampleRequest,
        response: SampleResponse,
    ) -> None:
        """Count one sample request whose response arrived."""
        lengths = [len(s.tokens) for s in response.sequences]
        self.sampled(sampling_session_id, base_model, model_path, request, lengths)

    def sampled(
        self,
        sampling_session_id: str,
        base_model: str | None,
        model_path: str | None,
        request: SampleRequest,
        lengths: list[int],
    ) -> None:
        """Count one sample request that returned sequences of ``lengths`` tokens (a
        ``sample`` answer or a whole ``sample_stream``)."""
        run = self._sampler_run(sampling_session_id, model_path)
        with self._lock:
            base = base_model or (self._runs.get(run) if run else None) or UNKNOWN_BASE_MODEL
        try:
            prompt = request.prompt.length
        except ValueError:
            prompt = 0
        counts = {
            "sample_requests": 1,
            "sample_prompt_tokens": prompt,
            "sampled_sequences": len(lengths),
            "sampled_tokens": sum(lengths),
        }
        if request.prompt_logprobs:
            counts["logprobs_requests"] = 1
            counts["logprobs_prompt_tokens"] = prompt
        self._add(("sampling", run, sampling_session_id, base), counts)

    # -- reports --------------------------------------------------------------------------
    def knows(self, scope: UsageScope, id: str) -> bool:
        """Whether this ledger counts for the run (or is the session) ``id``."""
        if scope == "session":
            return id == self.session_id
        with self._lock:
            return id in self._runs or any(key[1] == id for key in self._rows)

    def report(self, scope: UsageScope, id: str) -> UsageResponse:
        """The local counts of a training run or of this session (``source="client"``)."""
        with self._lock:
            rows = sorted(self._rows.items(), key=lambda kv: (kv[0][0] != "training", kv[0]))
        if scope == "session":
            picked = rows if id == self.session_id else []
        else:
            picked = [(key, counts) for key, counts in rows if key[1] == id]
        entries = [
            UsageEntry(
                kind=kind,  # type: ignore[arg-type]
                base_model=base,
                training_run_id=run or None,
                sampling_session_id=sampler or None,
                **counts,
            )
            for (kind, run, sampler, base), counts in picked
        ]
        return usage_response(scope, id, "client", entries)


class StreamTally:
    """The tokens of each sequence of one sample stream, counted as its chunks pass."""

    def __init__(self) -> None:
        self.tokens: dict[int, int] = {}

    def wrap(
        self, emit: Callable[[SampleStreamChunk], Awaitable[None]]
    ) -> Callable[[SampleStreamChunk], Awaitable[None]]:
        """``emit`` that also counts the token chunks it passes on."""

        async def counting(chunk: SampleStreamChunk) -> None:
            index = chunk.index or 0
            self.tokens.setdefault(index, 0)
            if chunk.token_id is not None:
                self.tokens[index] += 1
            await emit(chunk)

        return counting

    def lengths(self) -> list[int]:
        return [self.tokens[i] for i in sorted(self.tokens)]


_LEDGERS: weakref.WeakKeyDictionary[Session, UsageLedger] = weakref.WeakKeyDictionary()
_LEDGERS_LOCK = threading.Lock()


def ledger_of(session: Session) -> UsageLedger:
    """The usage ledger of ``session`` (created at first use)."""
    with _LEDGERS_LOCK:
        ledger = _LEDGERS.get(session)
        if ledger is None:
            ledger = _LEDGERS[session] = UsageLedger()
    ledger.session_id = session.session_id
    return ledger


def _id(value: Any, field: str, fix: str) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise TinkexValidationError(field, f"must be an id without '/', got {value!r}", fix)
    return value


def _source(value: Any) -> UsageSourceChoice:
    if value not in ("auto", "server", "client"):
        raise TinkexValidationError(
            "source", f"must be 'auto', 'server' or 'client', got {value!r}", "use 'auto'"
        )
    return value  # type: ignore[no-any-return]


async def fetch_usage(
    session: Session,
    scope: UsageScope,
    id: str,
    source: UsageSourceChoice = "auto",
    *,
    known: bool = False,
) -> UsageResponse:
    """The usage report of a run or session (see the module docstring); ``known`` makes the
    fallback answer even when the ledger has counted nothing for ``id`` yet."""
    ledger = ledger_of(session)
    if source == "client":
        return ledger.report(scope, id)
    what = "training_runs" if scope == "training_run" else "sessions"
    path = f"/api/v1/{what}/{quote(id, safe=':@-._~')}/usage"
    try:
        with session.span("rest.get_usage", scope=scope):
            body = await session.get(path)
    except APIStatusError as exc:
        if source == "server" or exc.status_code not in _NO_ROUTE:
            raise
        if not (known or ledger.knows(scope, id)):
            raise
        return ledger.report(scope, id)
    return parse_result(body, UsageResponse, what="get_usage")


class UsageRestMixin:
    """``get_training_run_usage``, ``get_session_usage`` and ``get_usage`` of RestClient."""

    _session: Session

    def _usage(
        self, training_run_id: Any, session_id: Any, source: Any
    ) -> Coroutine[Any, Any, UsageResponse]:
        self._session.check_open("RestClient")
        choice = _source(source)
        if training_run_id is not None and session_id is not None:
            raise TinkexValidationError(
                "training_run_id", "give training_run_id or session_id, not both"
            )
        if training_run_id is not None:
            run = _id(training_run_id, "training_run_id", "use training_client.model_id")
            return fetch_usage(self._session, "training_run", run, choice)
        if session_id is None:
            session_id = self._session.session_id
        sid = _id(session_id, "session_id", "use service_client's session id")
        return fetch_usage(self._session, "session", sid, choice)

    def get_usage(
        self,
        training_run_id: str | None = None,
        *,
        session_id: str | None = None,
        source: UsageSourceChoice = "auto",
    ) -> APIFuture[UsageResponse]:
        """The usage of a training run, or of a session (default: this client's session).

        ``source``: ``auto`` (the server's counts; the local ones from a server without the
        usage routes), ``server`` or ``client``. The answer's ``source`` says which it is.
        """
        return self._session.run(self._usage(training_run_id, session_id, source), "RestClient")

    async def get_usage_async(
        self,
        training_run_id: str | None = None,
        *,
        session_id: str | None = None,
        source: UsageSourceChoice = "auto",
    ) -> UsageResponse:
        coro = self._usage(training_run_id, session_id, source)
        return await self._session.bridge(coro, "RestClient")

    def get_training_run_usage(
        self, training_run_id: str, source: UsageSourceChoice = "auto"
    ) -> APIFuture[UsageResponse]:
        """The usage of one training run (see :meth:`get_usage`)."""
        return self.get_usage(training_run_id, source=source)

    async def get_training_run_usage_async(
        self, training_run_id: str, source: UsageSourceChoice = "auto"
    ) -> UsageResponse:
        return await self.get_usage_async(training_run_id, source=source)

    def get_session_usage(
        self, session_id: str | None = None, source: UsageSourceChoice = "auto"
    ) -> APIFuture[UsageResponse]:
        """The usage of a session (default: this client's; see :meth:`get_usage`)."""
        return self.get_usage(session_id=session_id, source=source)

    async def get_session_usage_async(
        self, session_id: str | None = None, source: UsageSourceChoice = "auto"
    ) -> UsageResponse:
        return await self.get_usage_async(session_id=session_id, source=source)


class UsageTrainingMixin:
    """``get_usage`` of TrainingClient: the usage of its training run."""

    _session: Session
    model_id: str

    def get_usage(self, source: UsageSourceChoice = "auto") -> UsageResponse:
        """The usage of this training run (server counts, or this client's own from a server
        without the usage routes; blocks)."""
        coro = fetch_usage(
            self._session, "training_run", self.model_id, _source(source), known=True
        )
        return self._session.call(coro, "TrainingClient")

    async def get_usage_async(self, source: UsageSourceChoice = "auto") -> UsageResponse:
        coro = fetch_usage(
            self._session, "training_run", self.model_id, _source(source), known=True
        )
        return await self._session.bridge(coro, "TrainingClient")


class UsageServiceMixin:
    """``get_usage`` of ServiceClient: the usage of its session."""

    _session: Session

    def _session_usage(self, source: Any) -> Coroutine[Any, Any, UsageResponse]:
        sid = self._session.session_id
        if sid is None:
            raise TinkexValidationError("session_id", "this client has no session yet")
        return fetch_usage(self._session, "session", sid, _source(source), known=True)

    def get_usage(self, source: UsageSourceChoice = "auto") -> UsageResponse:
        """The usage of this client's session (blocks; see ``RestClient.get_usage``)."""
        return self._session.call(self._session_usage(source), "ServiceClient")

    async def get_usage_async(self, source: UsageSourceChoice = "auto") -> UsageResponse:
        return await self._session.bridge(self._session_usage(source), "ServiceClient")
