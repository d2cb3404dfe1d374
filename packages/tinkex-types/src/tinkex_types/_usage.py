"""Usage accounting: the tokens a server processed for a training run or a session.

A tinkex extension (no official Tinker route). ``tinkex serve`` answers
``GET /api/v1/training_runs/{id}/usage`` and ``GET /api/v1/sessions/{id}/usage`` with a
:class:`UsageResponse` (``source="server"``); the clients keep the same counts for what they
sent and got back, and answer them (``source="client"``) from servers without the routes.

What is counted, once per applied request (a retried request with the same ``seq_id`` or
idempotency key counts once):

* ``forward`` / ``forward_backward``: requests (one per chunk sent), datums, and input
  tokens (the length of every datum's ``model_input``);
* ``optim_step``: steps;
* sampling (``asample``, also what ``compute_logprobs`` sends): requests, prompt tokens (once
  per request, whatever ``num_samples``), sequences returned and tokens generated (the
  tokens of every returned sequence);
* of those sample requests, the ones that asked for prompt logprobs (``compute_logprobs``
  and ``include_prompt_logprobs=True``): ``logprobs_requests`` and
  ``logprobs_prompt_tokens``. They are a part of the sampling counts, not in addition.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field

from tinkex_types._base import WireModel

__all__ = [
    "USAGE_COUNTERS",
    "UsageCounts",
    "UsageEntry",
    "UsageKind",
    "UsageResponse",
    "UsageScope",
    "UsageSource",
    "usage_response",
]

#: Who counted: the server (its usage route) or the client (local counts).
UsageSource = Literal["server", "client"]
#: What the report covers: one training run, or everything one session issued.
UsageScope = Literal["training_run", "session"]
#: ``training`` (a training run's passes and steps) or ``sampling`` (one sampler's samples).
UsageKind = Literal["training", "sampling"]


class UsageCounts(WireModel):
    """Counters of processed work (all zero by default; see the module docstring)."""

    forward_requests: int = Field(0, ge=0)
    forward_datums: int = Field(0, ge=0)
    forward_tokens: int = Field(0, ge=0)
    forward_backward_requests: int = Field(0, ge=0)
    forward_backward_datums: int = Field(0, ge=0)
    forward_backward_tokens: int = Field(0, ge=0)
    optim_steps: int = Field(0, ge=0)
    sample_requests: int = Field(0, ge=0)
    sample_prompt_tokens: int = Field(0, ge=0)
    sampled_sequences: int = Field(0, ge=0)
    sampled_tokens: int = Field(0, ge=0)
    logprobs_requests: int = Field(0, ge=0)
    logprobs_prompt_tokens: int = Field(0, ge=0)

    def counters(self) -> dict[str, int]:
        """The counters by name (only the counters, in declaration order)."""
        return {name: int(getattr(self, name)) for name in USAGE_COUNTERS}

    def plus(self, other: UsageCounts) -> UsageCounts:
        """The sum of two sets of counters (a plain :class:`UsageCounts`)."""
        mine, theirs = self.counters(), other.counters()
        return UsageCounts(**{name: mine[name] + theirs[name] for name in USAGE_COUNTERS})

    @property
    def training_tokens(self) -> int:
        """Input tokens of every forward and forward_backward pass."""
        return self.forward_tokens + self.forward_backward_tokens

    @property
    def sampling_tokens(self) -> int:
        """Prompt tokens plus generated tokens of every sample request."""
        return self.sample_prompt_tokens + self.sampled_tokens


#: The counter fields of :class:`UsageCounts`, in declaration order.
USAGE_COUNTERS: tuple[str, ...] = tuple(UsageCounts.model_fields)


class UsageEntry(UsageCounts):
    """The counters of one training run (``kind="training"``) or one sampler
    (``kind="sampling"``; ``training_run_id`` is set when the sampler serves weights of a
    training run: a checkpoint of it or an unnamed ``save_weights_for_sampler``)."""

    kind: UsageKind
    base_model: str
    training_run_id: str | None = None
    sampling_session_id: str | None = None


class UsageResponse(WireModel):
    """``GET /api/v1/training_runs/{id}/usage`` and ``GET /api/v1/sessions/{id}/usage``.

    ``totals`` is the sum of ``entries``; ``by_base_model`` the same sums per base model.
    """

    scope: UsageScope
    id: str
    source: UsageSource = "server"
    totals: UsageCounts = Field(default_factory=UsageCounts)
    entries: list[UsageEntry] = Field(default_factory=list)
    by_base_model: dict[str, UsageCounts] = Field(default_factory=dict)


def usage_response(
    scope: UsageScope, id: str, source: UsageSource, entries: Iterable[UsageEntry]
) -> UsageResponse:
    """A :class:`UsageResponse` of ``entries`` with its totals and per-base-model sums."""
    listed = list(entries)
    totals = UsageCounts()
    per_model: dict[str, UsageCounts] = {}
    for entry in listed:
        totals = totals.plus(entry)
        per_model[entry.base_model] = per_model.get(entry.base_model, UsageCounts()).plus(entry)
    return UsageResponse(
        scope=scope,
        id=id,
        source=source,
        totals=totals,
        entries=listed,
        by_base_model=dict(sorted(per_model.items())),
    )
