"""The engine of ``tinkex conformance``: steps, their order and prerequisites, how an
outcome becomes a row (ok / failed / not offered / skipped), and the cleanup.

A :class:`Step` is one public client call (or a small group of them) checked against what
the protocol promises. Steps run in table order and share one :class:`Probe` (the clients
and what earlier steps created). A step that needs another step's result is skipped when
that one did not pass. Everything the run creates is recorded in the probe and removed by
:func:`cleanup` (unpublished, deleted, unloaded, the session closed) -- nothing else is
touched.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tinkex_types import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    RequestErrorCategory,
    RequestFailedError,
    TinkexValidationError,
)

if TYPE_CHECKING:
    from tinkex_clients import SamplingClient, ServiceClient, TrainingClient
    from tinkex_http import Config
    from tinkex_types import Hooks, SampleResponse, SupportedModel

__all__ = [
    "NOT_OFFERED_STATUSES",
    "Gate",
    "NotOffered",
    "Probe",
    "Row",
    "Status",
    "Step",
    "Wrong",
    "cleanup",
    "plan",
    "run_steps",
]

Status = Literal["ok", "failed", "not_offered", "skipped"]
#: Which capability of the base model a step needs (``trainable`` / ``sampleable``).
Gate = Literal["train", "sample"] | None
#: HTTP statuses that mean "this server does not serve that route" (optional steps only).
NOT_OFFERED_STATUSES = frozenset({404, 405, 501})


class Wrong(Exception):
    """The server answered, but the answer breaks the protocol (a failed row)."""


class NotOffered(Exception):
    """The server says (or its capabilities say) that it does not offer this."""


@dataclass(frozen=True)
class Step:
    """One row of the table: ``run(probe)`` returns a short detail or raises."""

    name: str
    call: str
    run: Callable[[Probe], str]
    needs: tuple[str, ...] = ()
    #: A 404/405/501 answer means "not offered" rather than "failed".
    optional: bool = False
    gate: Gate = None
    #: For ``forward_backward:<loss>``: a 4xx naming the loss means "not offered".
    loss: str | None = None


@dataclass
class Row:
    """The outcome of one step."""

    step: str
    call: str
    status: Status
    message: str = ""
    http_status: int | None = None
    seconds: float = 0.0


@dataclass
class Probe:
    """What the steps share: settings, the clients, and everything the run created."""

    config: Config
    hooks: Hooks | None = None
    base_model: str | None = None
    #: Seconds to wait for one future.
    wait: float = 300.0
    tag: str = field(default_factory=lambda: f"conformance-{secrets.token_hex(4)}")
    service: ServiceClient | None = None
    model: SupportedModel | None = None
    training: TrainingClient | None = None
    state_path: str | None = None
    sampler_path: str | None = None
    sampler: SamplingClient | None = None
    greedy: SampleResponse | None = None
    prompt_logprobs: list[float | None] | None = None
    #: Checkpoints this run saved (tinker:// paths), in order; and those already deleted.
    created: list[str] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)
    published: set[str] = field(default_factory=set)
    #: Training clients this run created besides ``training`` (unloaded at cleanup).
    extra_training: list[TrainingClient] = field(default_factory=list)
    closed: bool = False

    def name(self, suffix: str) -> str:
        """A checkpoint name unique to this run (``conformance-<hex>-<suffix>``)."""
        return f"{self.tag}-{suffix}"

    def require_service(self) -> ServiceClient:
        assert self.service is not None, "create_session did not run"
        return self.service

    def require_training(self) -> TrainingClient:
        assert self.training is not None, "create_lora_training_client did not run"
        return self.training

    def require_sampler(self) -> SamplingClient:
        assert self.sampler is not None, "create_sampling_client did not run"
        return self.sampler


# -- selection -------------------------------------------------------------------------------


def _matches(name: str, selector: str) -> bool:
    """``sample`` selects ``sample`` and ``sample:*``; ``rest`` selects ``rest.*``."""
    return name == selector or name.startswith((f"{selector}:", f"{selector}."))


def unknown_selectors(steps: Sequence[Step], selectors: Iterable[str]) -> list[str]:
    return [s for s in selectors if not any(_matches(step.name, s) for step in steps)]


def plan(
    steps: Sequence[Step], only: Sequence[str], skip: Sequence[str]
) -> tuple[list[Step], set[str]]:
    """The steps to run (the selected ones plus their prerequisites, never a skipped one)
    and the names of the selected ones (the rows always shown)."""
    by_name = {s.name: s for s in steps}
    skipped = {s.name for s in steps if any(_matches(s.name, sel) for sel in skip)}
    selected = {
        s.name
        for s in steps
        if (not only or any(_matches(s.name, sel) for sel in only)) and s.name not in skipped
    }
    wanted = set(selected)
    todo = list(selected)
    while todo:
        for need in by_name[todo.pop()].needs:
            if need not in wanted and need not in skipped:
                wanted.add(need)
                todo.append(need)
    return [s for s in steps if s.name in wanted or s.name in selected], selected


# -- outcomes --------------------------------------------------------------------------------


def _names_loss(text: str, loss: str) -> bool:
    return f"'{loss}'" in text or f'"{loss}"' in text or f" {loss}" in text or loss == text


def outcome(step: Step, exc: BaseException) -> tuple[Status, str, int | None]:
    """The status, message and HTTP status of a step that raised ``exc``."""
    if isinstance(exc, NotOffered):
        return "not_offered", str(exc), None
    if isinstance(exc, Wrong):
        return "failed", str(exc), None
    if isinstance(exc, APIStatusError):
        status = exc.status_code
        if step.optional and status in NOT_OFFERED_STATUSES:
            return "not_offered", exc.message, status
        if step.loss is not None and status in (400, 422) and _names_loss(exc.message, step.loss):
            return "not_offered", exc.message, status
        return "failed", exc.message, status
    if isinstance(exc, RequestFailedError):
        if (
            step.loss is not None
            and exc.category is RequestErrorCategory.USER
            and _names_loss(exc.message, step.loss)
        ):
            return "not_offered", exc.message, None
        return "failed", f"request failed ({exc.category.value}): {exc.message}", None
    if isinstance(exc, APIResponseValidationError):
        return "failed", f"unexpected answer: {exc.message}", None
    if isinstance(exc, APIConnectionError):
        return "failed", f"{type(exc).__name__}: {exc.message}", None
    if isinstance(exc, TinkexValidationError):
        return "failed", f"refused by the client: {exc}", None
    return "failed", f"{type(exc).__name__}: {exc}", None


def _gate(step: Step, probe: Probe) -> str | None:
    model = probe.model
    if model is None or step.gate is None:
        return None
    if step.gate == "train" and model.trainable is False:
        return f"{probe.base_model} is not trainable (get_server_capabilities)"
    if step.gate == "sample" and model.sampleable is False:
        return f"{probe.base_model} is not sampleable (get_server_capabilities)"
    return None


def run_one(step: Step, probe: Probe) -> Row:
    gated = _gate(step, probe)
    if gated is not None:
        return Row(step.name, step.call, "not_offered", gated)
    started = time.monotonic()
    try:
        detail = step.run(probe)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        status, message, http = outcome(step, exc)
        return Row(step.name, step.call, status, message, http, time.monotonic() - started)
    return Row(step.name, step.call, "ok", detail, None, time.monotonic() - started)


def run_steps(
    steps: Sequence[Step],
    probe: Probe,
    shown: set[str],
    on_row: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Run ``steps`` in order; a step whose prerequisite did not pass is skipped. Returns
    the rows of the ``shown`` steps, plus those of prerequisites that did not pass."""
    results: dict[str, Row] = {}
    rows: list[Row] = []
    for step in steps:
        missing = [n for n in step.needs if n in results and results[n].status != "ok"]
        missing += [n for n in step.needs if n not in results]
        if missing:
            row = Row(step.name, step.call, "skipped", f"needs {', '.join(missing)}")
        else:
            row = run_one(step, probe)
        results[step.name] = row
        if step.name in shown or row.status not in ("ok", "skipped"):
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


# -- cleanup ---------------------------------------------------------------------------------


def cleanup(probe: Probe) -> tuple[list[str], list[str]]:
    """Undo what the run created: unpublish, delete its checkpoints, unload its extra
    training runs. Returns (what was removed, what could not be: with the reason)."""
    service = probe.service
    done: list[str] = []
    left: list[str] = []
    if service is None or probe.closed:
        left += [p for p in probe.created if p not in probe.deleted]
        return done, left
    rest = service.create_rest_client()
    for path in [p for p in probe.created if p not in probe.deleted]:
        try:
            if path in probe.published:
                with contextlib.suppress(Exception):  # the delete below says what is left
                    rest.unpublish_checkpoint_from_tinker_path(path).result(probe.wait)
                probe.published.discard(path)
            rest.delete_checkpoint_from_tinker_path(path).result(probe.wait)
        except Exception as exc:
            left.append(f"{path} ({_reason(exc)})")
        else:
            probe.deleted.add(path)
            done.append(f"deleted {path}")
    for training in probe.extra_training:
        with contextlib.suppress(Exception):  # unloading only frees server memory
            training.unload_model().result(probe.wait)
            done.append(f"unloaded {training.model_id}")
    probe.extra_training.clear()
    return done, left


def _reason(exc: BaseException) -> str:
    if isinstance(exc, APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def close_service(probe: Probe) -> None:
    """Close the session (idempotent)."""
    if probe.service is not None and not probe.closed:
        probe.closed = True
        probe.service.close()


def describe(value: Any) -> str:
    """A short text for a detail column."""
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
