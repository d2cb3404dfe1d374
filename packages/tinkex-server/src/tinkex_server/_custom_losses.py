"""Server-side custom losses (tinker 0.38): ``POST /api/v1/create_custom_loss`` and the
lookup ``forward``/``forward_backward`` make for ``loss_fn="custom"``.

* :meth:`CustomLossService.create` checks the graph against the allowlist
  (:func:`tinkex_server._custom_loss_ops.check_graph_ops`: a 400 names the node and its
  target), then queues a job that rebuilds it on the engine thread and stores it under its
  ``loss_id`` (``<session_id>:loss:<custom_loss_seq_id>``). The same session and seq id
  again answers the first future.
* :func:`custom_loss_for` turns a ``forward``/``forward_backward`` batch's ``loss_id``
  (``loss_fn_config`` or ``loss_fn_config_v2``) into the stored loss; only models of the
  session that created it may use it.

Stored losses live in the store's key table (``custom_loss:<loss_id>``), so they survive a
restart of the server with its data directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tinkex_server._context import Desk, user_error
from tinkex_server._custom_loss_ops import check_graph_ops
from tinkex_server._jobs import Job
from tinkex_server._problems import bad_request
from tinkex_server._store import Store
from tinkex_types import (
    CUSTOM_LOSS_FN,
    CreateCustomLossRequest,
    CreateCustomLossResponse,
    CustomLossGraph,
    CustomLossInput,
    ForwardBackwardInput,
    TinkexValidationError,
    UntypedAPIFuture,
    WireModel,
)

if TYPE_CHECKING:
    from tinkex_server._engine import Engine

__all__ = [
    "CustomLossService",
    "StoredCustomLoss",
    "custom_loss_for",
]

_KEY = "custom_loss:"


@dataclass(frozen=True)
class StoredCustomLoss:
    """A created loss as stored: what the engine rebuilds it from."""

    loss_id: str
    session_id: str
    name: str
    inputs: list[CustomLossInput]
    graph: CustomLossGraph

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "name": self.name,
            "inputs": [x.to_json_dict() for x in self.inputs],
            "graph": self.graph.to_json_dict(),
        }

    @classmethod
    def from_json(cls, loss_id: str, raw: Mapping[str, Any]) -> StoredCustomLoss:
        return cls(
            loss_id=loss_id,
            session_id=str(raw["session_id"]),
            name=str(raw["name"]),
            inputs=[CustomLossInput.model_validate(x) for x in raw["inputs"]],
            graph=CustomLossGraph.model_validate(raw["graph"]),
        )

    def program(self) -> Any:
        """The loss rebuilt for the engine (imports torch: call on the engine thread)."""
        from tinkex_server._engine.custom_loss import CustomLossProgram

        return CustomLossProgram(self.name, self.inputs, self.graph)


@dataclass(kw_only=True, eq=False)
class CreateCustomLossJob(Job):
    """Rebuild the loss once on the engine thread (so a graph that cannot be rebuilt fails
    its future), then store it."""

    store: Store
    loss: StoredCustomLoss

    def execute(self, engine: Engine) -> Any:
        return self.loss.program()

    def finish(self, output: Any) -> WireModel:
        self.store.dedup_put(_KEY + self.loss.loss_id, response=self.loss.to_json())
        return CreateCustomLossResponse(loss_id=self.loss.loss_id)


class CustomLossService:
    """``create_custom_loss``."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    def create(
        self,
        req: CreateCustomLossRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> UntypedAPIFuture:
        dedup = f"create_custom_loss:{req.session_id}:{req.custom_loss_seq_id}"
        earlier = self.desk.existing(dedup)
        if earlier is not None:
            return earlier
        self.desk.live_session(req.session_id)
        try:
            check_graph_ops(req.graph)
        except TinkexValidationError as exc:
            raise user_error(exc) from None
        loss_id = f"{req.session_id}:loss:{req.custom_loss_seq_id}"
        loss = StoredCustomLoss(loss_id, req.session_id, req.name, req.inputs, req.graph)
        job = CreateCustomLossJob(
            target=loss_id,
            seq_id=None,
            request_type="CreateCustomLoss",
            carrier=carrier,
            attributes={"loss_id": loss_id, "nodes": len(req.graph.nodes)},
            store=self.desk.store,
            loss=loss,
        )
        return self.desk.submit(
            job,
            endpoint="create_custom_loss",
            idempotency_key=idempotency_key,
            session_id=req.session_id,
            dedup_keys=(dedup,),
        )


def custom_loss_for(
    store: Store, session_id: str, fb: ForwardBackwardInput, field: str
) -> StoredCustomLoss | None:
    """The created loss a ``loss_fn="custom"`` batch names in ``loss_fn_config`` (or
    ``loss_fn_config_v2``) ``loss_id``; ``None`` for any other loss. A 400 names
    ``<field>.loss_fn_config.loss_id`` when it is missing, unknown or another session's."""
    if fb.loss_fn != CUSTOM_LOSS_FN:
        return None
    config = {**(fb.loss_fn_config or {}), **(fb.loss_fn_config_v2 or {})}
    loss_id = config.get("loss_id")
    where = f"{field}.loss_fn_config.loss_id"
    fix = "create the loss with ServiceClient.create_custom_loss and pass its LossHandle"
    if not isinstance(loss_id, str) or not loss_id:
        raise bad_request(where, "is missing (loss_fn 'custom' runs a created loss)", fix)
    _, raw = store.dedup_get(_KEY + loss_id)
    if not isinstance(raw, dict):
        raise bad_request(where, f"no custom loss {loss_id!r} was created", fix)
    loss = StoredCustomLoss.from_json(loss_id, raw)
    if loss.session_id != session_id:
        raise bad_request(
            where,
            f"custom loss {loss_id!r} belongs to another session",
            "create it again in this model's session",
        )
    return loss
