"""Plain data types of the engine API (no pydantic, no wire format).

Inputs accept duck-typed objects on purpose: a ``tinkex_types`` wire ``LoraConfig``,
``AdamParams`` or ``TensorData`` can be passed as they are, and so can the dataclasses here,
torch tensors, numpy arrays or nested lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "AdapterInfo",
    "Datum",
    "FlatTensor",
    "ForwardResult",
    "LoraConfig",
    "LoraConfigLike",
    "ModelInfo",
    "SampleRequest",
    "SampleResult",
    "SampledSequence",
    "StateInfo",
]


@runtime_checkable
class LoraConfigLike(Protocol):
    """Anything with LoraConfig's attributes (the wire model fits)."""

    rank: int
    seed: int | None
    train_attn: bool
    train_mlp: bool
    train_unembed: bool


@dataclass(frozen=True)
class LoraConfig:
    """LoRA settings of a new adapter. ``alpha`` ``None`` means the engine default (32);
    ``seed`` ``None`` means a seed drawn by the engine (recorded in :class:`AdapterInfo`).
    ``target_modules`` (short names such as ``("q_proj", "v_proj")``), when given, replaces
    the train_* groups (adapters imported from PEFT target any subset)."""

    rank: int = 32
    seed: int | None = None
    train_attn: bool = True
    train_mlp: bool = True
    train_unembed: bool = True
    alpha: float | None = None
    target_modules: tuple[str, ...] | None = None


@dataclass(frozen=True)
class FlatTensor:
    """A row-major tensor as plain Python data (the shape of the wire ``TensorData``)."""

    data: list[float] | list[int]
    dtype: Literal["float32", "int64"]
    shape: list[int]

    def to_dict(self) -> dict[str, Any]:
        """``{"data", "dtype", "shape"}`` ready for JSON."""
        return {"data": self.data, "dtype": self.dtype, "shape": self.shape}

    def tolist(self) -> Any:
        """The data as a nested list of ``shape``."""
        if len(self.shape) <= 1:
            return list(self.data)
        inner = 1
        for dim in self.shape[1:]:
            inner *= dim
        return [
            FlatTensor(self.data[i * inner : (i + 1) * inner], self.dtype, self.shape[1:]).tolist()
            for i in range(self.shape[0])
        ]


@dataclass(frozen=True)
class Datum:
    """One training example: the input tokens (the concatenated chunks of ``model_input``)
    and the loss inputs (``target_tokens``, ``weights``, ``logprobs``, ``advantages``...),
    each a list, a torch tensor, a numpy array or a ``TensorData``-like object with ``data``
    and ``shape``. Every loss input has the same length as ``tokens``."""

    tokens: Sequence[int]
    loss_fn_inputs: Mapping[str, Any]


@dataclass
class ForwardResult:
    """Result of ``forward``/``forward_backward``: per datum (in request order) ``logprobs``
    and ``elementwise_loss`` (float32, the shape of ``target_tokens``), and metrics
    (``loss:sum``)."""

    loss_fn_outputs: list[dict[str, FlatTensor]]
    metrics: dict[str, float]
    loss_fn_output_type: str = "ArrayRecord"


@dataclass(frozen=True)
class SampleRequest:
    """One sampling request: ``num_samples`` continuations of ``prompt``.

    * ``model_id``: an adapter (training model or loaded sampler weights); ``None`` samples
      the bare ``base_model``.
    * ``temperature`` 0 is greedy; ``top_k`` <= 0 is off; ``top_p`` in (0, 1].
    * ``seed``: sample ``i`` uses ``seed + i``; ``None`` draws a seed (recorded in the
      result). Same seed, same tokens, whatever else is in the batch.
    * Stops: the generated token is in ``stop_token_ids``, the decoded text contains one of
      ``stop_strings``, or (when ``stop_at_eos``) the token is an EOS of the model. The token
      that triggers a stop is included. Otherwise ``max_tokens`` ends it ("length").
    * ``prompt_logprobs``/``topk_prompt_logprobs``: per prompt position, ``None`` first;
      ``prompt_logprobs_last_n`` N scores only the last N positions (earlier ones ``None``).
    * ``topk_sample_logprobs``: the top-k ``(token, logprob)`` at each generated position.
    * ``target_prompt_logprobs``: ``[len(prompt) - 1, K]`` token ids; row ``i`` is scored at
      prompt position ``i + 1``, ``-1`` cells get 0.0.
    * ``prompt_alt_tokens_k``: k independent draws (at ``temperature``, from the first
      sample's seed) at every prompt position after the first, with their logprobs.
    All logprobs are of the untempered, unfiltered model distribution.
    """

    prompt: Sequence[int]
    max_tokens: int
    model_id: str | None = None
    base_model: str | None = None
    num_samples: int = 1
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: Sequence[int] = ()
    stop_strings: Sequence[str] = ()
    stop_at_eos: bool = True
    prompt_logprobs: bool = False
    topk_prompt_logprobs: int = 0
    prompt_logprobs_last_n: int | None = None
    topk_sample_logprobs: int = 0
    target_prompt_logprobs: Sequence[Sequence[int]] | None = None
    prompt_alt_tokens_k: int = 0


@dataclass
class SampledSequence:
    """One generated continuation. ``logprobs[i]`` is the log-probability of ``tokens[i]``
    under the untempered, unfiltered model distribution."""

    tokens: list[int]
    logprobs: list[float]
    stop_reason: Literal["stop", "length"]
    #: ``topk_sample_logprobs``: the top-k ``(token, logprob)`` at each generated position.
    topk_logprobs: list[list[tuple[int, float]]] | None = None


@dataclass
class SampleResult:
    """All samples of one :class:`SampleRequest`, with the seed that was used."""

    sequences: list[SampledSequence]
    seed: int
    prompt_logprobs: list[float | None] | None = None
    topk_prompt_logprobs: list[list[tuple[int, float]] | None] | None = None
    #: ``[len(prompt) - 1, K]`` logprobs of ``SampleRequest.target_prompt_logprobs``.
    target_prompt_logprobs: list[list[float]] | None = None
    #: ``(tokens, logprobs)``, each ``[len(prompt) - 1, k]`` (``prompt_alt_tokens_k``).
    prompt_alt_tokens: tuple[list[list[int]], list[list[float]]] | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What the engine knows about a base model."""

    name: str
    architecture: Literal["llama", "qwen3"]
    vocab_size: int
    hidden_size: int
    num_layers: int
    context_length: int
    num_parameters: int
    eos_token_ids: tuple[int, ...]
    tokenizer_id: str | None
    source: str


@dataclass(frozen=True)
class AdapterInfo:
    """A registered adapter (``trainable`` False for loaded sampler weights)."""

    model_id: str
    base_model: str
    rank: int
    alpha: float
    seed: int
    train_attn: bool
    train_mlp: bool
    train_unembed: bool
    trainable: bool
    step: int
    num_parameters: int
    target_modules: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StateInfo:
    """What a training-state directory says about itself (to recreate its adapter)."""

    base_model: str
    lora: LoraConfig
    step: int
    has_optimizer: bool
