"""Server-side custom losses (tinker 0.38 ``ServiceClient.create_custom_loss``).

A per-datum loss ``fn(logprobs, *inputs) -> (loss, metrics)`` is traced with torch.fx on
the client and sent as plain data: a :class:`CustomLossGraph` of :class:`CustomLossNode`
(one per fx node, in execution order). Nothing in it is executable: a server rebuilds it
from its own list of allowed operations. ``forward_backward`` then runs it with
``loss_fn="custom"`` and ``loss_fn_config={"loss_id": ...}``.

Argument encoding (``CustomLossNode.args`` / ``kwargs``): JSON scalars and strings stand
for themselves and lists for lists; anything else is a one-key object: ``{"ref": name}``
(an earlier node), ``{"tuple": [...]}``, ``{"dict": {...}}``, ``{"slice": [start, stop,
step]}``, ``{"ellipsis": true}``, ``{"float": "inf"}`` (also ``"-inf"``, ``"nan"``),
``{"dtype": "float32"}``, ``{"device": "cpu"}``, ``{"layout": "strided"}`` or
``{"memory_format": "contiguous_format"}``. :func:`decode_arg` turns that back into Python
values, with :class:`NodeRef` for references and :class:`TorchConstant` for torch
constants (the server maps those through its own tables).

The models check the graph's *shape* (unique names, references to earlier nodes only, one
final ``output``, placeholders matching the declared inputs, well-formed arguments);
which functions and methods may run is the server's decision.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, TypeAlias

from pydantic import Field, model_validator

from tinkex_types._base import WireModel
from tinkex_types._numbers import int_rule

__all__ = [
    "CUSTOM_LOSS_FN",
    "MAX_CUSTOM_LOSS_INPUTS",
    "MAX_CUSTOM_LOSS_NODES",
    "CreateCustomLossRequest",
    "CreateCustomLossResponse",
    "CustomLossGraph",
    "CustomLossInput",
    "CustomLossInputRank",
    "CustomLossNode",
    "CustomLossNodeOp",
    "NodeRef",
    "TorchConstant",
    "decode_arg",
]

#: The ``loss_fn`` of a ``forward_backward`` that runs a created loss (config ``loss_id``).
CUSTOM_LOSS_FN: Final = "custom"
#: ``logprobs`` included (tinker's limit).
MAX_CUSTOM_LOSS_INPUTS: Final = 16
#: A bound on the graph a server accepts (typical losses have a few dozen nodes).
MAX_CUSTOM_LOSS_NODES: Final = 4096
_MAX_DEPTH: Final = 16
_INPUT_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_NODE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_FLOATS: Final = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_CONSTANT_KINDS: Final = ("dtype", "device", "layout", "memory_format")

CustomLossNodeOp: TypeAlias = Literal[
    "placeholder", "get_attr", "call_function", "call_method", "call_module", "output"
]
#: A custom loss input's rank: 0 is a scalar, 1 is ``[T]`` and 2 is ``[T, K]``.
CustomLossInputRank: TypeAlias = Literal[0, 1, 2]


@dataclass(frozen=True)
class NodeRef:
    """A decoded ``{"ref": name}``: the value of an earlier node."""

    name: str


@dataclass(frozen=True)
class TorchConstant:
    """A decoded ``{"dtype": "float32"}`` (or device, layout, memory_format)."""

    kind: str
    value: str


def _one_key(value: dict[str, Any], where: str, depth: int) -> Any:
    if len(value) != 1:
        raise ValueError(f"{where}: an encoded value is an object of exactly one key")
    ((kind, body),) = value.items()
    if kind == "ref":
        if not isinstance(body, str):
            raise ValueError(f"{where}: ref must name a node")
        return NodeRef(body)
    if kind == "tuple" and isinstance(body, list):
        return tuple(decode_arg(x, f"{where}.tuple[{i}]", depth + 1) for i, x in enumerate(body))
    if kind == "dict" and isinstance(body, dict):
        return {str(k): decode_arg(x, f"{where}.dict[{k!r}]", depth + 1) for k, x in body.items()}
    if kind == "slice" and isinstance(body, list) and len(body) == 3:
        parts = [decode_arg(x, f"{where}.slice[{i}]", depth + 1) for i, x in enumerate(body)]
        return slice(*parts)
    if kind == "ellipsis" and body is True:
        return Ellipsis
    if kind == "float" and body in _FLOATS:
        return _FLOATS[body]
    if kind in _CONSTANT_KINDS and isinstance(body, str):
        return TorchConstant(kind, body)
    raise ValueError(
        f"{where}: {kind!r} with {body!r} is not an argument encoding (ref, tuple, dict, "
        "slice, ellipsis, float, dtype, device, layout, memory_format)"
    )


def decode_arg(value: Any, where: str = "arg", depth: int = 0) -> Any:
    """One encoded argument as a Python value (see the module docstring); raises
    ``ValueError`` naming ``where`` on anything else."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"{where}: arguments nest deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f'{where}: encode {value} as {{"float": "{value}"}}')
        return value
    if isinstance(value, list):
        return [decode_arg(x, f"{where}[{i}]", depth + 1) for i, x in enumerate(value)]
    if isinstance(value, dict):
        return _one_key(value, where, depth)
    raise ValueError(f"{where}: {type(value).__name__} is not an argument encoding")


def _refs(value: Any) -> list[str]:
    """Names of the nodes a decoded argument refers to."""
    if isinstance(value, NodeRef):
        return [value.name]
    if isinstance(value, list | tuple):
        return [name for x in value for name in _refs(x)]
    if isinstance(value, dict):
        return [name for x in value.values() for name in _refs(x)]
    if isinstance(value, slice):
        return _refs([value.start, value.stop, value.step])
    return []


class CustomLossNode(WireModel):
    """One node of a traced custom loss, as torch.fx records it."""

    op: CustomLossNodeOp
    #: Unique within the graph; later nodes refer to this node by it.
    name: str
    #: The parameter name (placeholder), the function's qualified name (call_function, e.g.
    #: ``torch.exp`` or ``operator.mul``), the method or attribute name, or ``output``.
    target: str
    #: Encoded arguments; an output node's one argument is what the loss returns.
    args: list[Any] = Field(default_factory=list)
    #: Encoded keyword arguments, in the same form as ``args``.
    kwargs: dict[str, Any] = Field(default_factory=dict)

    def decoded(self, where: str) -> tuple[list[Any], dict[str, Any]]:
        """``(args, kwargs)`` decoded (:func:`decode_arg`)."""
        args = [decode_arg(a, f"{where}.args[{i}]") for i, a in enumerate(self.args)]
        kwargs = {k: decode_arg(v, f"{where}.kwargs[{k!r}]") for k, v in self.kwargs.items()}
        return args, kwargs


def _check_node(node: CustomLossNode, where: str, seen: set[str]) -> None:
    if not _NODE_NAME.fullmatch(node.name):
        raise ValueError(f"{where}: node name {node.name!r} is not an identifier")
    if node.name in seen:
        raise ValueError(f"{where}: node name {node.name!r} is used twice")
    args, kwargs = node.decoded(where)
    for name in _refs([args, kwargs]):
        if name not in seen:
            raise ValueError(
                f"{where} ({node.name}, {node.target}): refers to {name!r}, which is not an "
                "earlier node"
            )
    if node.op == "output" and len(args) != 1:
        raise ValueError(f"{where}: the output node has exactly one argument")


class CustomLossGraph(WireModel):
    """A traced custom loss as plain data: its nodes in execution order. Nothing in it is
    executable until the server rebuilds it from its own list of allowed operations."""

    format: Literal[1] = 1
    nodes: list[CustomLossNode]

    @model_validator(mode="after")
    def _well_formed(self) -> CustomLossGraph:
        nodes = self.nodes
        if len(nodes) > MAX_CUSTOM_LOSS_NODES:
            raise ValueError(f"nodes: {len(nodes)} nodes, more than {MAX_CUSTOM_LOSS_NODES}")
        if not nodes or nodes[-1].op != "output":
            raise ValueError("nodes: the last node must be the output node")
        seen: set[str] = set()
        for i, node in enumerate(nodes):
            where = f"nodes[{i}]"
            if node.op == "output" and i != len(nodes) - 1:
                raise ValueError(f"{where}: only the last node may be an output node")
            if node.op == "placeholder" and any(n.op != "placeholder" for n in nodes[:i]):
                raise ValueError(f"{where}: placeholders come before every other node")
            _check_node(node, where, seen)
            seen.add(node.name)
        return self

    @property
    def placeholders(self) -> list[str]:
        """The parameter names, in order."""
        return [node.target for node in self.nodes if node.op == "placeholder"]


class CustomLossInput(WireModel):
    """One input of a custom loss, with the rank every datum's value has."""

    #: ``logprobs``, or the ``loss_fn_inputs`` key the loss reads.
    name: str
    rank: CustomLossInputRank


def _check_inputs(inputs: list[CustomLossInput]) -> None:
    if not inputs or inputs[0].name != "logprobs":
        raise ValueError("inputs: the first input is logprobs")
    if inputs[0].rank == 0:
        raise ValueError("inputs[0]: logprobs has rank 1 ([T]) or 2 ([T, K])")
    if len(inputs) > MAX_CUSTOM_LOSS_INPUTS:
        raise ValueError(f"inputs: {len(inputs)} inputs, at most {MAX_CUSTOM_LOSS_INPUTS}")
    names = [x.name for x in inputs]
    for i, name in enumerate(names):
        if not _INPUT_NAME.fullmatch(name):
            raise ValueError(f"inputs[{i}]: {name!r} is not a lowercase identifier")
        if name in names[:i]:
            raise ValueError(f"inputs[{i}]: {name!r} is given twice")


class CreateCustomLossRequest(WireModel):
    """POST /api/v1/create_custom_loss (answered with a future of
    :class:`CreateCustomLossResponse`)."""

    session_id: str
    custom_loss_seq_id: Annotated[int, int_rule(ge=0)]
    name: str
    #: The graph's inputs in order, ``logprobs`` first, with their declared ranks.
    inputs: list[CustomLossInput]
    graph: CustomLossGraph
    type: Literal["create_custom_loss"] = "create_custom_loss"

    @model_validator(mode="after")
    def _inputs_match_graph(self) -> CreateCustomLossRequest:
        _check_inputs(self.inputs)
        names = [x.name for x in self.inputs]
        if self.graph.placeholders != names:
            raise ValueError(
                f"graph: its parameters {self.graph.placeholders} are not the inputs {names}"
            )
        return self


class CreateCustomLossResponse(WireModel):
    """The result of the ``create_custom_loss`` future."""

    #: Names the stored loss in ``forward_backward`` requests of the same session.
    loss_id: str
    type: Literal["create_custom_loss"] = "create_custom_loss"
