"""Custom losses created with ``ServiceClient.create_custom_loss`` (tinker 0.38).

``fn(logprobs, *inputs) -> (loss, metrics)`` runs once per datum: ``logprobs`` are the
datum's target logprobs, each further parameter is the ``loss_fn_inputs`` entry of that
name (a tensor of the declared rank), ``loss`` a scalar tensor and ``metrics`` scalar
tensors keyed ``custom/<name>:sum`` or ``custom/<name>:mean``. It is traced with torch.fx
(:func:`trace_loss`), which rejects what a graph of torch and math calls cannot express,
and becomes a :class:`LossHandle`.

When the server's ``client/config`` says ``custom_loss_server_side``, the graph is sent as
data (:func:`encode_graph`, the encoding of :mod:`tinkex_types._custom_loss_graph`) and the
handle gets the server's ``loss_id``: ``forward_backward_custom(data, handle)`` is then one
``forward_backward`` with ``loss_fn="custom"``. Otherwise the traced graph runs here
(:func:`run_handle`) inside the client-side ``forward_backward_custom``.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import hashlib
import inspect
import itertools
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tinkex_clients._chunking import chunk_data
from tinkex_clients._future import APIFuture
from tinkex_clients._session import Session
from tinkex_clients._training_forward import ForwardOps
from tinkex_clients._validate import as_data
from tinkex_types import (
    CUSTOM_LOSS_FN,
    CreateCustomLossRequest,
    CreateCustomLossResponse,
    CustomLossGraph,
    CustomLossInput,
    CustomLossInputRank,
    CustomLossNode,
    Datum,
    ForwardBackwardInput,
    ForwardBackwardOutput,
    TinkexValidationError,
)

__all__ = [
    "CustomLossServiceMixin",
    "HandleLossOps",
    "LossHandle",
    "PerDatumLossFn",
    "check_handle_inputs",
    "encode_graph",
    "run_handle",
    "trace_loss",
]

#: ``fn(logprobs, *inputs) -> (scalar loss, {"custom/<name>:sum|mean": scalar})``, all torch
#: tensors; the parameters after ``logprobs`` name the ``loss_fn_inputs`` it reads.
PerDatumLossFn = Callable[..., tuple[Any, Mapping[str, Any]]]

_FUNCTION_MODULES = ("torch", "math", "operator", "_operator")
_METRIC_KEY = re.compile(r"custom/[a-z0-9_./-]{1,64}:(sum|mean)")
_INPUT_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_MAX_INPUTS = 16
_HOST_METHODS = frozenset({"item", "numpy", "tolist"})
_CONSTANT_KINDS = ("dtype", "device", "layout", "memory_format")


@dataclass(frozen=True)
class LossHandle:
    """A loss created with ``ServiceClient.create_custom_loss``; pass it to
    ``TrainingClient.forward_backward_custom`` in place of a callable."""

    name: str
    #: ``logprobs``, then the ``loss_fn_inputs`` keys the loss reads, each with its rank.
    inputs: tuple[CustomLossInput, ...]
    #: The session that created the loss; only its clients can use it.
    session_id: str
    #: The traced loss (a ``torch.fx.GraphModule``): this, not the function, is what runs.
    graph: Any = field(repr=False, compare=False)
    #: The server's id of the uploaded loss, or None when it runs client-side.
    loss_id: str | None = None

    @property
    def key(self) -> str:
        """Identifies the traced loss, so a session creates each loss once."""
        digest = hashlib.sha256(str(self.graph.code).encode())
        digest.update(repr([(x.name, x.rank) for x in self.inputs]).encode())
        return digest.hexdigest()

    @property
    def input_names(self) -> tuple[str, ...]:
        """The ``loss_fn_inputs`` keys the loss reads, in the order it takes them."""
        return tuple(x.name for x in self.inputs[1:])


def _fn_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__name__", type(fn).__name__))


def _bad(problem: str, fix: str | None = None, where: str = "fn") -> TinkexValidationError:
    return TinkexValidationError(where, problem, fix)


def _inputs(fn: Callable[..., Any], input_ranks: Mapping[str, Any]) -> tuple[CustomLossInput, ...]:
    name = _fn_name(fn)
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].name != "logprobs":
        raise _bad(
            f"{name} must take logprobs as its first parameter",
            "then the loss_fn_inputs it reads, e.g. def loss(logprobs, advantages)",
        )
    if len(params) > _MAX_INPUTS:
        raise _bad(f"{name} takes {len(params)} parameters", f"take at most {_MAX_INPUTS}")
    for p in params:
        if not _INPUT_NAME.fullmatch(p.name):
            raise _bad(f"parameter {p.name!r} of {name} is not a lowercase identifier")
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            raise _bad(f"parameter {p.name!r} of {name} is not a plain positional parameter")
        if p.default is not p.empty:
            raise _bad(
                f"parameter {p.name!r} of {name} has a default",
                "every parameter after logprobs names a required loss_fn_inputs key",
            )
    names = [p.name for p in params]
    if not isinstance(input_ranks, Mapping) or set(input_ranks) != set(names):
        got = sorted(input_ranks) if isinstance(input_ranks, Mapping) else input_ranks
        raise _bad(f"must give a rank for each of {names}, got {got}", None, "input_ranks")
    for key in names:
        rank = input_ranks[key]
        if isinstance(rank, bool) or rank not in (0, 1, 2):
            raise _bad(f"{rank!r} is not 0, 1 or 2", None, f"input_ranks[{key!r}]")
    if input_ranks["logprobs"] == 0:
        raise _bad("logprobs has rank 1 ([T]) or 2 ([T, K])", None, "input_ranks['logprobs']")
    return tuple(CustomLossInput(name=n, rank=input_ranks[n]) for n in names)


def _check_call(name: str, node: Any, torch: Any) -> None:
    if node.op == "call_function":
        module = str(getattr(node.target, "__module__", None) or "")
        if node.target is not builtins.getattr and module.split(".")[0] not in _FUNCTION_MODULES:
            raise _bad(
                f"{name} calls {getattr(node.target, '__qualname__', node.target)!r} from "
                f"{module or 'an unknown module'!r}",
                "a custom loss may only call torch, math and Python operators",
            )
    elif node.op == "call_method":
        if not hasattr(torch.Tensor, node.target):
            raise _bad(f"{name} calls {node.target!r}, which is not a torch.Tensor method")
        if node.target == "backward":
            raise _bad(f"{name} calls backward()", "return the loss; the backward pass is run")
        if node.target in _HOST_METHODS:
            raise _bad(f"{name} calls {node.target}()", "keep every value a tensor")
    elif node.op == "call_module":
        raise _bad(f"{name} calls module {node.target!r}", "use torch.nn.functional instead")
    elif node.op == "get_attr":
        raise _bad(
            f"{name} captures a tensor ({node.target!r})",
            "read only logprobs and the loss_fn_inputs it names",
        )


def _check_output(name: str, output: Any, torch: Any) -> None:
    node_type = torch.fx.Node
    if not (isinstance(output, tuple | list) and len(output) == 2):
        raise _bad(f"{name} must return (loss, metrics)")
    loss, metrics = output
    if not isinstance(loss, node_type):
        raise _bad(f"{name} must return its loss as a torch tensor, got {loss!r}")
    if not isinstance(metrics, dict):
        raise _bad(f"{name} must return its metrics as a dict")
    for key, value in metrics.items():
        if not (isinstance(key, str) and _METRIC_KEY.fullmatch(key)):
            raise _bad(
                f"{name} returns metric {key!r}",
                "name metrics custom/<name>:sum or custom/<name>:mean in lowercase",
            )
        if not isinstance(value, node_type):
            raise _bad(f"{name} metric {key!r} must be a torch tensor, got {value!r}")


def trace_loss(
    fn: PerDatumLossFn, input_ranks: Mapping[str, CustomLossInputRank], session_id: str
) -> LossHandle:
    """Trace ``fn`` into a :class:`LossHandle`; raises :class:`TinkexValidationError` on
    what a graph of torch and math calls cannot represent."""
    if not callable(fn):
        raise _bad(f"must be a function, got {type(fn).__name__}")
    try:
        import torch
        import torch.fx
    except ImportError as exc:
        raise ImportError(
            "create_custom_loss needs PyTorch: pip install 'tinkex-clients[torch]'"
        ) from exc
    inputs = _inputs(fn, input_ranks)
    name = _fn_name(fn)
    try:
        graph = torch.fx.symbolic_trace(fn)
    except Exception as exc:
        raise _bad(
            f"{name} cannot be traced by torch.fx: {exc}",
            "do not branch on tensor values or call libraries other than torch and math",
        ) from exc
    for node in graph.graph.nodes:
        if node.op == "output":
            _check_output(name, node.args[0], torch)
        else:
            _check_call(name, node, torch)
    return LossHandle(name=name, inputs=inputs, session_id=session_id, graph=graph)


def _encode_arg(name: str, arg: Any) -> Any:
    import torch
    import torch.fx

    if isinstance(arg, torch.fx.Node):
        return {"ref": arg.name}
    if isinstance(arg, float) and not math.isfinite(arg):
        return {"float": str(arg)}
    if arg is None or isinstance(arg, bool | int | float | str):
        return arg
    if isinstance(arg, list):
        return [_encode_arg(name, a) for a in arg]
    if isinstance(arg, tuple):
        return {"tuple": [_encode_arg(name, a) for a in arg]}
    if isinstance(arg, dict) and all(isinstance(k, str) for k in arg):
        return {"dict": {k: _encode_arg(name, a) for k, a in arg.items()}}
    if isinstance(arg, slice):
        return {"slice": [_encode_arg(name, a) for a in (arg.start, arg.stop, arg.step)]}
    if arg is Ellipsis:
        return {"ellipsis": True}
    for kind in _CONSTANT_KINDS:
        if isinstance(arg, getattr(torch, kind)):
            return {kind: str(arg).removeprefix("torch.")}
    raise _bad(f"{name} passes a {type(arg).__name__} argument, which cannot be sent")


def encode_graph(handle: LossHandle) -> CustomLossGraph:
    """The handle's graph as plain data, node for node (the server decides what runs)."""
    from torch.fx.node import _get_qualified_name

    nodes: list[CustomLossNode] = []
    for node in handle.graph.graph.nodes:
        if node.op == "call_function":
            target = _get_qualified_name(node.target)
            if target.startswith("_operator."):  # CPython's home of the operator functions
                target = "operator." + target.removeprefix("_operator.")
        else:
            target = str(node.target)
        nodes.append(
            CustomLossNode(
                op=node.op,
                name=node.name,
                target=target,
                args=[_encode_arg(handle.name, a) for a in node.args],
                kwargs={k: _encode_arg(handle.name, a) for k, a in node.kwargs.items()},
            )
        )
    return CustomLossGraph(nodes=nodes)


def check_handle_inputs(handle: LossHandle, data: Sequence[Datum]) -> None:
    """Every datum has each input the loss reads, at its declared rank (``logprobs`` has
    the rank of ``target_tokens``)."""
    logprobs, *rest = handle.inputs
    for i, datum in enumerate(data):
        pairs = [(logprobs, "target_tokens"), *((x, x.name) for x in rest)]
        for declared, key in pairs:
            value = datum.loss_fn_inputs.get(key)
            where = f"data[{i}].loss_fn_inputs.{key}"
            if value is None:
                raise TinkexValidationError(
                    where, f"is missing (loss {handle.name!r} reads it)", f"add {key!r}"
                )
            rank = len(value.effective_shape)
            if rank != declared.rank:
                raise TinkexValidationError(
                    where,
                    f"has rank {rank}, but loss {handle.name!r} declared {declared.name} with "
                    f"rank {declared.rank}",
                )


def run_handle(
    handle: LossHandle, data: Sequence[Datum], logprobs: Sequence[Any]
) -> tuple[Any, dict[str, float]]:
    """Run the traced loss on each datum and sum the losses; ``:sum`` metrics add up over
    datums, ``:mean`` metrics are averaged. ``loss:sum`` is the summed loss."""
    total: Any = None
    sums: dict[str, float] = {}
    for datum, lp in zip(data, logprobs, strict=True):
        values = [datum.loss_fn_inputs[n].to_torch() for n in handle.input_names]
        loss, metrics = handle.graph(lp, *values)
        if loss.ndim != 0:
            raise TinkexValidationError(
                "fn", f"{handle.name} must return a scalar loss, got shape {list(loss.shape)}"
            )
        total = loss if total is None else total + loss
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach().sum())
    out = {k: v / len(data) if k.endswith(":mean") else v for k, v in sums.items()}
    out["loss:sum"] = float(total.detach())
    return total, out


class CustomLossServiceMixin:
    """``ServiceClient.create_custom_loss``."""

    _session: Session

    def _custom_loss_state(self) -> tuple[threading.Lock, Any, dict[str, LossHandle]]:
        state = self.__dict__.get("_tinkex_custom_losses")
        if state is None:
            state = (threading.Lock(), itertools.count(), {})
            self.__dict__["_tinkex_custom_losses"] = state
        return state

    def _register(self, handle: LossHandle) -> int:
        lock, counter, created = self._custom_loss_state()
        with lock:
            earlier = created.get(handle.key)
            if earlier is not None:
                raise TinkexValidationError(
                    "fn",
                    f"this session already created {earlier.name!r} with the same traced loss",
                    "reuse its LossHandle",
                )
            created[handle.key] = handle
            return int(next(counter))

    async def _upload(self, handle: LossHandle, seq_id: int) -> LossHandle:
        session = self._session
        request = CreateCustomLossRequest(
            session_id=handle.session_id,
            custom_loss_seq_id=seq_id,
            name=handle.name,
            inputs=list(handle.inputs),
            graph=encode_graph(handle),
        )
        with session.span("create_custom_loss", name=handle.name):
            started = time.monotonic()
            submitted = await session.post(
                "/api/v1/create_custom_loss",
                request.to_json_dict(),
                request_type="CreateCustomLoss",
            )
            response = await session.resolve(
                submitted,
                CreateCustomLossResponse,
                request_type="CreateCustomLoss",
                started=started,
            )
        return dataclasses.replace(handle, loss_id=response.loss_id)

    async def _create_custom_loss(self, handle: LossHandle) -> LossHandle:
        seq_id = self._register(handle)
        if self._session.protocol.flag("custom_loss_server_side", False) is not True:
            return handle
        try:
            return await self._upload(handle, seq_id)
        except BaseException:
            lock, _, created = self._custom_loss_state()
            with lock:  # not created: the same loss may be created again
                created.pop(handle.key, None)
            raise

    def create_custom_loss(
        self, fn: PerDatumLossFn, input_ranks: Mapping[str, CustomLossInputRank]
    ) -> APIFuture[LossHandle]:
        """Create a custom loss for ``TrainingClient.forward_backward_custom``.

        ``fn(logprobs, *inputs)`` runs once per datum and the losses are summed: ``logprobs``
        first (the datum's target logprobs), then one parameter per ``loss_fn_inputs`` key
        it reads; it returns a scalar loss tensor and a dict of scalar tensors keyed
        ``custom/<name>:sum`` or ``custom/<name>:mean``. ``input_ranks`` gives each
        parameter's rank (0 scalar, 1 ``[T]``, 2 ``[T, K]``; ``logprobs`` has the rank of
        ``target_tokens``). ``fn`` is traced with torch.fx here, so it may use torch and math
        only, without branching on tensor values. Servers that run custom losses
        (``tinkex serve``, ``local://``) get the graph and run it in one
        ``forward_backward``; elsewhere it runs client-side. The handle works with the
        clients of this session only; each loss is created once per session.
        """
        self._session.check_open()
        handle = trace_loss(fn, input_ranks, self._session.session_id or "")
        return self._session.run(self._create_custom_loss(handle), "ServiceClient")


class HandleLossOps(ForwardOps):
    """``forward_backward_custom(data, loss_handle)`` of :class:`TrainingClient`."""

    def _handle_data(self, data: Any, handle: LossHandle) -> list[Datum]:
        self._check_open()
        if handle.session_id != (self._session.session_id or ""):
            raise TinkexValidationError(
                "loss_fn",
                f"LossHandle {handle.name!r} was created in session {handle.session_id}",
                "use it with the clients of that session, or create the loss again",
            )
        datums = as_data(data)
        check_handle_inputs(handle, datums)
        return datums

    def _forward_backward_handle(
        self, data: Any, handle: LossHandle, run_here: Callable[..., Any]
    ) -> APIFuture[ForwardBackwardOutput]:
        """One ``forward_backward`` with ``loss_fn="custom"`` when the server holds the loss;
        else ``run_here(data, loss_fn)`` (the client-side ``forward_backward_custom``) with
        the traced graph as the loss function."""
        datums = self._handle_data(data, handle)
        if handle.loss_id is None:
            future: APIFuture[ForwardBackwardOutput] = run_here(
                datums, functools.partial(run_handle, handle)
            )
            return future
        config: dict[str, float | str] = {"loss_id": handle.loss_id}
        inputs = [
            ForwardBackwardInput(data=chunk, loss_fn=CUSTOM_LOSS_FN, loss_fn_config_v2=config)
            for chunk in chunk_data(datums, self.max_chunk_items, self.max_chunk_bytes)
        ]
        numbers = self._reserve(len(inputs))
        return self._launch(
            numbers,
            self._forward_op("forward_backward", False, inputs, numbers, CUSTOM_LOSS_FN),
        )
