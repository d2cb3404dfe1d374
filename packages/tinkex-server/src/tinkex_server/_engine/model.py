"""A Llama/Qwen3-style decoder in plain torch, with Hugging Face parameter names.

The module tree mirrors ``LlamaForCausalLM``/``Qwen3ForCausalLM``, so ``state_dict()`` keys
are exactly the Hugging Face ones (``model.embed_tokens.weight``,
``model.layers.N.self_attn.q_proj.weight``, ``model.norm.weight``, ``lm_head.weight``...).
Pieces: RMSNorm, rotary embeddings (default, linear and llama3 scaling), grouped-query
attention through ``F.scaled_dot_product_attention``, SwiGLU MLP, optional per-head QK-norm
(Qwen3), tied or untied unembedding.

The base weights are frozen. LoRA is applied from outside: every projection has a string key
(its Hugging Face module path, e.g. ``model.layers.0.mlp.up_proj`` or ``lm_head``) and the
forward pass asks an optional :class:`LoraContext` for an additive delta per key. All
computation is float32.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinkex_server._engine.config import ModelConfig
from tinkex_server._engine.fused import lora_linear, rms_norm, rope, swiglu

__all__ = [
    "DecoderLM",
    "KVCache",
    "LoraContext",
    "RMSNorm",
    "rope_inv_freq",
]


class LoraContext(Protocol):
    """Supplies the LoRA contribution of one projection, or ``None`` for none."""

    def delta(self, key: str, x: Tensor) -> Tensor | None:
        """The additive output of the adapter(s) at projection ``key`` for input ``x``."""
        ...


class GroupedLora(Protocol):
    """A :class:`LoraContext` that can also hand out the factors of several projections at
    once (one adapter for the whole batch), for the fused projection path."""

    def factors(self, keys: Sequence[str], outs: Sequence[int]) -> tuple[Tensor, Tensor] | None:
        """``(A, B)`` stacked over ``keys``: ``A`` ``[sum r, in]`` (rows of the adapted
        keys), ``B`` ``[sum outs, sum r]`` block-diagonal with the LoRA scale folded in;
        ``None`` when no key is adapted."""
        ...


class RMSNorm(nn.Module):
    """Root-mean-square layer norm, computed in float32 (as in Hugging Face Llama/Qwen3)."""

    def __init__(self, size: int, eps: float, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size, device=device))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32:
            return rms_norm(x, self.weight, self.eps)
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def rope_inv_freq(config: ModelConfig) -> Tensor:
    """Inverse rotary frequencies for ``config`` (float32, length ``head_dim // 2``)."""
    dim = config.head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim
    inv_freq = 1.0 / (config.rope_theta**exponents)
    scaling = config.rope_scaling
    if not scaling:
        return inv_freq
    rope_type = scaling.get("rope_type", "default")
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / float(scaling["factor"])
    if rope_type == "llama3":
        factor = float(scaling["factor"])
        low = float(scaling["low_freq_factor"])
        high = float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        low_wavelen = old_len / low
        high_wavelen = old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled)
    raise ValueError(f"rope_type {rope_type!r} is not implemented (ModelConfig.from_hf refuses it)")


class KVCache:
    """Pre-allocated keys and values of every layer: ``[batch, kv_heads, capacity, head_dim]``."""

    def __init__(self, config: ModelConfig, batch: int, capacity: int) -> None:
        shape = (batch, config.num_key_value_heads, capacity, config.head_dim)
        self.keys = [torch.zeros(shape) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape) for _ in range(config.num_hidden_layers)]
        self.capacity = capacity

    def grow(self, capacity: int) -> None:
        """Enlarge every layer's buffers to ``capacity`` positions (keeping the contents)."""
        if capacity <= self.capacity:
            return
        extra = capacity - self.capacity

        def _pad(t: Tensor) -> Tensor:
            return torch.cat([t, t.new_zeros((*t.shape[:2], extra, t.shape[3]))], dim=2)

        self.keys = [_pad(k) for k in self.keys]
        self.values = [_pad(v) for v in self.values]
        self.capacity = capacity

    def select(self, rows: Tensor) -> None:
        """Keep only the batch rows ``rows`` (an index tensor), in that order."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]


def _project(x: Tensor, layer: nn.Linear, key: str, lora: LoraContext | None) -> Tensor:
    factors = getattr(lora, "factors", None)
    pair = factors((key,), (layer.out_features,)) if factors is not None else None
    if pair is not None:
        return lora_linear(x, layer.weight, layer.bias, pair[0], pair[1])
    out = F.linear(x, layer.weight, layer.bias)
    if lora is not None:
        delta = lora.delta(key, x)
        if delta is not None:
            out = out + delta
    return out


_FUSE_LOCK = threading.Lock()


class _Fused:
    """Projections sharing one input whose frozen weights live in one buffer: each
    ``nn.Linear.weight`` becomes a view of its rows (same ``state_dict``, no copy kept), so
    the group is one matmul. Rebuilt if a weight is replaced (``load_state_dict(assign=True)``)."""

    def __init__(self, *layers: nn.Linear) -> None:
        self.layers = layers
        self.outs = tuple(layer.out_features for layer in layers)
        self._weights: tuple[Tensor, ...] = ()
        self.weight: Tensor = layers[0].weight
        self.bias: Tensor | None = layers[0].bias

    def _current(self) -> bool:
        return len(self._weights) == len(self.layers) and all(
            w is layer.weight for w, layer in zip(self._weights, self.layers, strict=True)
        )

    def refresh(self) -> None:
        """Make sure the layers' weights are (still) views of this group's buffer."""
        if self._current():
            return
        with _FUSE_LOCK, torch.no_grad():
            if self._current():
                return
            weight = torch.cat([layer.weight.detach() for layer in self.layers])
            biases = [layer.bias for layer in self.layers]
            bias = None
            if all(b is not None for b in biases):
                bias = torch.cat([b.detach() for b in biases if b is not None])
            for layer, w_rows, b_rows in zip(
                self.layers,
                weight.split_with_sizes(self.outs),
                bias.split_with_sizes(self.outs) if bias is not None else [None] * len(self.layers),
                strict=True,
            ):
                layer.weight = nn.Parameter(w_rows, requires_grad=False)
                if b_rows is not None:
                    layer.bias = nn.Parameter(b_rows, requires_grad=False)
            self._weights = tuple(layer.weight for layer in self.layers)
            self.weight, self.bias = weight, bias


def _project_group(
    x: Tensor, fused: _Fused, keys: Sequence[str], lora: LoraContext | None
) -> Tensor:
    """The concatenated outputs ``[..., sum(outs)]`` of a group of projections of ``x``."""
    fused.refresh()
    factors = getattr(lora, "factors", None)
    pair = factors(keys, fused.outs) if factors is not None else None
    if pair is not None:
        return lora_linear(x, fused.weight, fused.bias, pair[0], pair[1])
    out = F.linear(x, fused.weight, fused.bias)
    if lora is None:
        return out
    parts = list(out.split_with_sizes(fused.outs, dim=-1))
    changed = False
    for i, key in enumerate(keys):
        delta = lora.delta(key, x)
        if delta is not None:
            parts[i] = parts[i] + delta
            changed = True
    return torch.cat(parts, dim=-1) if changed and len(parts) > 1 else parts[0] if changed else out


class Attention(nn.Module):
    """Grouped-query self-attention with rotary embeddings and optional QK-norm."""

    def __init__(self, config: ModelConfig, prefix: str, device: torch.device | str | None) -> None:
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = config.head_dim
        bias = config.attention_bias
        d = config.hidden_size
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=bias, device=device)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=bias, device=device)
        self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=bias, device=device)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=bias, device=device)
        self.q_norm: RMSNorm | None = None
        self.k_norm: RMSNorm | None = None
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps, device)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps, device)
        self.keys = {n: f"{prefix}.{n}" for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
        self._qkv = _Fused(self.q_proj, self.k_proj, self.v_proj)
        self._qkv_keys = (self.keys["q_proj"], self.keys["k_proj"], self.keys["v_proj"])

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        lora: LoraContext | None,
        attn_mask: Tensor | None,
        cache: tuple[Tensor, Tensor] | None,
        cache_pos: int,
    ) -> Tensor:
        b, t, _ = x.shape
        q, k, v = _project_group(x, self._qkv, self._qkv_keys, lora).split_with_sizes(
            self._qkv.outs, -1
        )
        q = q.view(b, t, self.n_heads, self.head_dim)
        k = k.view(b, t, self.n_kv, self.head_dim)
        v = v.view(b, t, self.n_kv, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q = self.q_norm(q)
            k = self.k_norm(k)
        q = q.transpose(1, 2)
        k = k.transpose(1, 2)
        v = v.transpose(1, 2)
        q = rope(q, cos, sin)
        k = rope(k, cos, sin)
        if cache is not None:
            k_cache, v_cache = cache
            k_cache[:, :, cache_pos : cache_pos + t] = k
            v_cache[:, :, cache_pos : cache_pos + t] = v
            k = k_cache[:, :, : cache_pos + t]
            v = v_cache[:, :, : cache_pos + t]
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            is_causal=attn_mask is None,
            scale=self.head_dim**-0.5,
            enable_gqa=self.n_kv != self.n_heads,
        )
        out = out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        return _project(out, self.o_proj, self.keys["o_proj"], lora)


class MLP(nn.Module):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: ModelConfig, prefix: str, device: torch.device | str | None) -> None:
        super().__init__()
        d, f, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(d, f, bias=bias, device=device)
        self.up_proj = nn.Linear(d, f, bias=bias, device=device)
        self.down_proj = nn.Linear(f, d, bias=bias, device=device)
        self.keys = {n: f"{prefix}.{n}" for n in ("gate_proj", "up_proj", "down_proj")}
        self._gate_up = _Fused(self.gate_proj, self.up_proj)
        self._gate_up_keys = (self.keys["gate_proj"], self.keys["up_proj"])

    def forward(self, x: Tensor, lora: LoraContext | None) -> Tensor:
        gate_up = _project_group(x, self._gate_up, self._gate_up_keys, lora)
        act = swiglu(gate_up, self.gate_proj.out_features)
        return _project(act, self.down_proj, self.keys["down_proj"], lora)


class DecoderLayer(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: ModelConfig, index: int, device: torch.device | str | None) -> None:
        super().__init__()
        prefix = f"model.layers.{index}"
        self.self_attn = Attention(config, f"{prefix}.self_attn", device)
        self.mlp = MLP(config, f"{prefix}.mlp", device)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, device)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, device)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        lora: LoraContext | None,
        attn_mask: Tensor | None,
        cache: tuple[Tensor, Tensor] | None,
        cache_pos: int,
    ) -> Tensor:
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, lora, attn_mask, cache, cache_pos)
        out: Tensor = h + self.mlp(self.post_attention_layernorm(h), lora)
        return out


class Backbone(nn.Module):
    """Embedding, decoder layers and final norm (Hugging Face's ``model.`` prefix)."""

    def __init__(self, config: ModelConfig, device: torch.device | str | None) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, device=device)
        self.layers = nn.ModuleList(
            DecoderLayer(config, i, device) for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, device)


class DecoderLM(nn.Module):
    """The causal language model. Build with ``device="meta"`` and then
    ``load_state_dict(..., assign=True)`` to avoid initialising weights twice."""

    def __init__(self, config: ModelConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.config = config
        self.model = Backbone(config, device)
        self.lm_head: nn.Linear | None = None
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(
                config.hidden_size, config.vocab_size, bias=False, device=device
            )
        self.inv_freq = rope_inv_freq(config)

    # -- structure ---------------------------------------------------------------------
    def lora_targets(self) -> Iterator[tuple[str, str, int, int]]:
        """``(key, short_name, in_features, out_features)`` of every LoRA-able projection,
        in a fixed order (layer by layer, attention then MLP, then ``lm_head``)."""
        for layer in self.model.layers:
            assert isinstance(layer, DecoderLayer)
            for short, key in layer.self_attn.keys.items():
                lin = getattr(layer.self_attn, short)
                yield key, short, lin.in_features, lin.out_features
            for short, key in layer.mlp.keys.items():
                lin = getattr(layer.mlp, short)
                yield key, short, lin.in_features, lin.out_features
        yield "lm_head", "lm_head", self.config.hidden_size, self.config.vocab_size

    @property
    def unembedding(self) -> Tensor:
        """The ``[vocab, hidden]`` output matrix (the embedding when tied)."""
        if self.lm_head is not None:
            return self.lm_head.weight
        return self.model.embed_tokens.weight

    # -- compute -----------------------------------------------------------------------
    def rotary(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """``cos``/``sin`` of shape ``[batch, 1, seq, head_dim]`` for integer ``positions``."""
        freqs = positions.to(torch.float32)[..., None] * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[:, None], emb.sin()[:, None]

    def hidden_states(
        self,
        tokens: Tensor,
        positions: Tensor | None = None,
        *,
        lora: LoraContext | None = None,
        attn_mask: Tensor | None = None,
        cache: KVCache | None = None,
        cache_pos: int = 0,
    ) -> Tensor:
        """Final-norm hidden states ``[batch, seq, hidden]``.

        Without ``attn_mask`` the attention is causal over ``tokens`` alone (right padding
        is harmless then). With a cache, ``attn_mask`` (bool, ``[batch, 1, seq,
        cache_pos + seq]``, True = attend) is required; keys/values are written at
        ``cache_pos``.
        """
        if positions is None:
            positions = torch.arange(tokens.shape[1]).expand(tokens.shape[0], -1)
        cos, sin = self.rotary(positions)
        x = F.embedding(tokens, self.model.embed_tokens.weight)
        for i, layer in enumerate(self.model.layers):
            layer_cache = (cache.keys[i], cache.values[i]) if cache is not None else None
            x = layer(x, cos, sin, lora, attn_mask, layer_cache, cache_pos)
        out: Tensor = self.model.norm(x)
        return out

    def logits(self, hidden: Tensor, lora: LoraContext | None = None) -> Tensor:
        """Float32 logits ``[..., vocab]`` from final hidden states."""
        out = F.linear(hidden, self.unembedding)
        if lora is not None:
            delta = lora.delta("lm_head", hidden)
            if delta is not None:
                out = out + delta
        return out.to(torch.float32)

    def forward(self, tokens: Tensor, lora: LoraContext | None = None) -> Tensor:
        """Logits of a causal pass over ``tokens`` ``[batch, seq]``."""
        return self.logits(self.hidden_states(tokens, lora=lora), lora)
