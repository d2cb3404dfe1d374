"""Jobs: the small typed objects the scheduler runs.

A job is built by a service at submission (after validation), queued by the
:class:`~tinkex_server._scheduler.Scheduler` and run in two halves:

* :meth:`Job.execute` on the engine thread (ordered jobs), or :meth:`SampleJob.prepare`
  followed by one batched ``engine.sample_batch`` over :attr:`SampleJob.sample` (sampling);
* :meth:`Job.finish` on the event loop, inside the transaction that stores the result: it
  records what the step changed and returns the ``tinkex_types`` response model of the
  future. :meth:`Job.on_failure` runs in that transaction when the step failed. After a
  job that :attr:`Job.chains`, the next ready job may already run on the engine thread
  while this happens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from tinkex_types import WireModel

if TYPE_CHECKING:
    from tinkex_server._engine import Engine
    from tinkex_server._engine import SampleRequest as EngineSample

__all__ = ["Job", "SampleJob"]


@dataclass(kw_only=True, eq=False)
class Job:
    """One queued operation on ``target`` (a model or sampler id)."""

    #: Whether the job goes through the per-model ``seq_id`` queue (False: sampling batch).
    ordered: ClassVar[bool] = True
    #: Whether the next ready job may start on the engine thread right after this one,
    #: while this one's result is being stored: true when :meth:`finish` changes nothing a
    #: later step reads (a training step's result; not a model's creation or a save).
    chains: ClassVar[bool] = False
    #: A short step (an optimizer update): in a chain, the jobs that finished just before it
    #: are stored together with it, after it ran, so that their storing on the event loop
    #: (which shares the GIL) does not slow it down.
    brief: ClassVar[bool] = False

    target: str
    seq_id: int | None
    request_type: str
    carrier: Mapping[str, str] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    #: Assigned by the submission desk once the future row exists.
    request_id: str = ""
    enqueued_at: float = field(default_factory=time.monotonic)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def execute(self, engine: Engine) -> Any:
        """Run the step on the engine thread; the return value goes to :meth:`finish`."""
        raise NotImplementedError

    def finish(self, output: Any) -> WireModel:
        """Record the step and return the result (event loop, inside the result transaction)."""
        raise NotImplementedError

    def on_failure(self, exc: BaseException) -> None:
        """Record a failed step (event loop, inside the failure transaction)."""


@dataclass(kw_only=True, eq=False)
class SampleJob(Job):
    """A sampling job: prepared alone, then sampled in one batch with its neighbours."""

    ordered: ClassVar[bool] = False

    sample: EngineSample

    def prepare(self, engine: Engine) -> None:
        """Make the engine ready for :attr:`sample` (load the sampler's weights)."""
