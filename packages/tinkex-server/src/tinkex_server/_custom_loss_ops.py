"""What a custom loss graph may run on this server (tinker 0.38 ``create_custom_loss``).

A graph is plain data (:class:`tinkex_types.CustomLossGraph`); this module holds the
allowlist it is checked against, by name only (no torch import, so the check runs in the
request handler): functions (``call_function`` targets such as ``torch.exp`` or
``operator.mul``), tensor methods (``call_method``), the attributes ``getattr`` may read,
and the torch constants (dtypes, devices...). Nothing outside these tables is ever looked
up: :mod:`tinkex_server._engine.custom_loss` resolves each allowed name from its own module
when it rebuilds the loss. :func:`check_graph_ops` refuses anything else naming the node
and its target.

Left out on purpose: constructors that take a size (``torch.zeros``, ``arange``...),
``repeat``/``expand`` and ``einsum`` (a few bytes of graph could ask for unbounded memory),
in-place methods, ``backward``/``item``/``tolist`` (leave torch or the graph), modules,
captured tensors (``get_attr``) and the ``out=`` keyword. Broadcasting can still multiply
sizes, so the engine also refuses any node whose result (or broadcast operands) would hold
more than :data:`MAX_NODE_ELEMENTS` elements.
"""

from __future__ import annotations

import re
from typing import Any, Final

from tinkex_types import CustomLossGraph, CustomLossNode, TinkexValidationError
from tinkex_types._custom_loss_graph import NodeRef, TorchConstant

__all__ = [
    "ALLOWED_ATTRIBUTES",
    "ALLOWED_METHODS",
    "CONSTANTS",
    "FUNCTIONS",
    "MAX_NODE_ELEMENTS",
    "METRIC_KEY",
    "check_graph_ops",
]

_ELEMENTWISE: Final = [
    "abs",
    "exp",
    "exp2",
    "expm1",
    "log",
    "log1p",
    "log2",
    "log10",
    "sigmoid",
    "tanh",
    "sqrt",
    "rsqrt",
    "square",
    "neg",
    "sign",
    "relu",
    "reciprocal",
    "floor",
    "ceil",
    "round",
    "trunc",
    "isfinite",
    "isnan",
    "nan_to_num",
    "clamp",
    "clip",
    "clamp_min",
    "clamp_max",
    "pow",
    "add",
    "sub",
    "mul",
    "div",
    "true_divide",
    "minimum",
    "maximum",
    "where",
    "lt",
    "le",
    "gt",
    "ge",
    "eq",
    "ne",
    "logical_and",
    "logical_or",
    "logical_not",
    "logical_xor",
]
_REDUCTIONS: Final = [
    "sum",
    "mean",
    "min",
    "max",
    "amin",
    "amax",
    "logsumexp",
    "softmax",
    "log_softmax",
    "cumsum",
    "prod",
    "argmax",
    "argmin",
    "any",
    "all",
    "var",
    "std",
    "norm",
    "count_nonzero",
]
_SHAPES: Final = [
    "gather",
    "squeeze",
    "unsqueeze",
    "reshape",
    "flatten",
    "transpose",
    "masked_fill",
]

_TORCH: Final = (
    *_ELEMENTWISE,
    *_REDUCTIONS,
    *_SHAPES,
    "stack",
    "cat",
    "zeros_like",
    "ones_like",
    "full_like",
    "detach",
    "tensor",
    "matmul",
    "dot",
)
_FUNCTIONAL: Final = [
    "log_softmax",
    "softmax",
    "softplus",
    "relu",
    "logsigmoid",
    "sigmoid",
    "mse_loss",
    "smooth_l1_loss",
    "huber_loss",
    "l1_loss",
    "kl_div",
    "nll_loss",
    "cross_entropy",
    "binary_cross_entropy_with_logits",
]
_OPERATOR: Final = [
    "add",
    "sub",
    "mul",
    "truediv",
    "floordiv",
    "mod",
    "pow",
    "neg",
    "pos",
    "abs",
    "invert",
    "getitem",
    "lt",
    "le",
    "gt",
    "ge",
    "eq",
    "ne",
    "and_",
    "or_",
    "xor",
    "matmul",
]
_MATH: Final = ["exp", "log", "log1p", "expm1", "sqrt", "pow", "fabs", "tanh"]

#: Wire target (``call_function``) -> (module, attribute) it is resolved from.
FUNCTIONS: Final[dict[str, tuple[str, str]]] = {
    **{f"torch.{n}": ("torch", n) for n in _TORCH},
    **{f"torch.nn.functional.{n}": ("torch.nn.functional", n) for n in _FUNCTIONAL},
    **{f"operator.{n}": ("operator", n) for n in _OPERATOR},
    **{f"math.{n}": ("math", n) for n in _MATH},
    "getattr": ("builtins", "getattr"),
}
#: Tensor methods a ``call_method`` node may call.
ALLOWED_METHODS: Final = frozenset(
    (
        *_ELEMENTWISE,
        *_REDUCTIONS,
        *_SHAPES,
        "view",
        "permute",
        "t",
        "size",
        "dim",
        "numel",
        "float",
        "double",
        "long",
        "int",
        "bool",
        "to",
        "type_as",
        "detach",
        "clone",
        "contiguous",
    )
)
#: Attributes ``getattr(tensor, name)`` may read.
ALLOWED_ATTRIBUTES: Final = frozenset({"shape", "ndim", "dtype", "T"})
#: Torch constants by kind and name (the values are torch attribute names).
CONSTANTS: Final[dict[str, dict[str, str]]] = {
    "dtype": {
        n: n
        for n in (
            [
                "float32",
                "float64",
                "float16",
                "bfloat16",
                "int64",
                "int32",
                "int16",
                "int8",
                "uint8",
                "bool",
            ]
        )
    },
    "device": {"cpu": "cpu"},
    "layout": {"strided": "strided"},
    "memory_format": {
        "contiguous_format": "contiguous_format",
        "preserve_format": "preserve_format",
    },
}
#: The most elements one node of a custom loss may produce (256 MiB of float32).
MAX_NODE_ELEMENTS: Final = 1 << 26
#: A metric key a loss may return (tinker's rule: the suffix says how datums combine).
METRIC_KEY: Final = re.compile(r"custom/[a-z0-9_./-]{1,64}:(sum|mean)")


def _refuse(where: str, node: CustomLossNode, problem: str, fix: str) -> TinkexValidationError:
    return TinkexValidationError(
        where, f"node {node.name!r} ({node.op} {node.target!r}) {problem}", fix
    )


def _check_values(where: str, node: CustomLossNode, value: Any) -> None:
    if isinstance(value, TorchConstant) and value.value not in CONSTANTS[value.kind]:
        known = ", ".join(CONSTANTS[value.kind])
        raise _refuse(where, node, f"uses {value.kind} {value.value!r}", f"use one of {known}")
    if isinstance(value, list | tuple):
        for item in value:
            _check_values(where, node, item)
    elif isinstance(value, dict):
        for item in value.values():
            _check_values(where, node, item)


def _check_call(where: str, node: CustomLossNode, args: list[Any], kwargs: dict[str, Any]) -> None:
    if node.op == "call_function" and node.target not in FUNCTIONS:
        raise _refuse(
            where,
            node,
            "calls a function this server does not run",
            "use torch functions such as torch.exp, torch.log, torch.clamp, torch.where, "
            "torch.gather, torch.logsumexp or Python arithmetic",
        )
    if node.op == "call_method" and node.target not in ALLOWED_METHODS:
        raise _refuse(
            where,
            node,
            "calls a tensor method this server does not run",
            "use methods such as .exp(), .log(), .sum(), .mean(), .clamp() or .gather()",
        )
    if node.op == "call_method" and not (args and isinstance(args[0], NodeRef)):
        raise _refuse(where, node, "has no tensor to call the method on", "re-trace the loss")
    if node.target == "getattr" and (len(args) != 2 or args[1] not in ALLOWED_ATTRIBUTES or kwargs):
        raise _refuse(
            where,
            node,
            "reads an attribute this server does not allow",
            f"read only {', '.join(sorted(ALLOWED_ATTRIBUTES))}",
        )
    if "out" in kwargs:
        raise _refuse(where, node, "writes into out=", "return the result instead")


def _check_output(where: str, node: CustomLossNode, value: Any) -> None:
    if not (isinstance(value, tuple | list) and len(value) == 2):
        raise _refuse(where, node, "does not return (loss, metrics)", "return (loss, {...})")
    loss, metrics = value
    if not isinstance(loss, NodeRef):
        raise _refuse(where, node, "returns a loss that is not a tensor", "return a tensor")
    if not isinstance(metrics, dict):
        raise _refuse(where, node, "returns metrics that are not a dict", "return a dict")
    for key, metric in metrics.items():
        if not METRIC_KEY.fullmatch(key):
            raise _refuse(
                where,
                node,
                f"returns metric {key!r}",
                "name metrics custom/<name>:sum or custom/<name>:mean in lowercase",
            )
        if not isinstance(metric, NodeRef):
            raise _refuse(where, node, f"returns metric {key!r} that is not a tensor", "")


def check_graph_ops(graph: CustomLossGraph, field: str = "graph") -> None:
    """Raise :class:`TinkexValidationError` naming ``graph.nodes[i]``, the node and its
    target unless every node is allowed here (see the module docstring)."""
    for i, node in enumerate(graph.nodes):
        where = f"{field}.nodes[{i}]"
        try:
            args, kwargs = node.decoded(where)
        except ValueError as exc:
            raise _refuse(where, node, f"has a malformed argument: {exc}", "re-trace") from None
        if node.op in ("get_attr", "call_module"):
            raise _refuse(
                where,
                node,
                "is not allowed: a custom loss may not capture tensors or call modules",
                "compute from logprobs and the loss_fn_inputs with torch functions",
            )
        if node.op in ("call_function", "call_method"):
            _check_call(where, node, args, kwargs)
        _check_values(where, node, [args, kwargs])
        if node.op == "output":
            _check_output(where, node, args[0])
