"""The decoder: forward pass vs an independent reference, HF layout round trips, configs."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tinkex_server._builtin import builtin_model, builtin_models
from tinkex_server._engine import (
    Datum,
    Engine,
    EngineInputError,
    LoraConfig,
    ModelConfig,
    UnknownModelError,
    export_builtin_model,
    load_base_model,
    save_hf_model,
)
from tinkex_server._engine.lora import SingleLora
from tinkex_server._engine.registry import (
    builtin_state_dict,
    model_from_state_dict,
    random_state_dict,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------
# An independent float64 reference implementation, written from the architecture's
# definition with explicit per-head loops (no code shared with the engine).


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def _rope(x: torch.Tensor, pos: int, theta: float) -> torch.Tensor:
    d = x.shape[-1]
    half = d // 2
    out = x.clone()
    for i in range(half):
        angle = pos * theta ** (-(2 * i) / d)
        c, s = math.cos(angle), math.sin(angle)
        a, b = x[..., i].clone(), x[..., i + half].clone()
        out[..., i] = a * c - b * s
        out[..., i + half] = a * s + b * c
    return out


def reference_logits(
    sd: dict[str, torch.Tensor],
    cfg: dict[str, Any],
    tokens: list[int],
    lora: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    scale: float = 0.0,
) -> torch.Tensor:
    w = {k: v.to(torch.float64) for k, v in sd.items()}
    if lora:
        for key, (a, b) in lora.items():
            name = f"{key}.weight"
            base = w[name] if name in w else w["model.embed_tokens.weight"]
            w[name] = base + scale * (b.double() @ a.double())
    eps = cfg["rms_norm_eps"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // nh
    theta = cfg["rope_theta"]
    qwen = cfg["model_type"] == "qwen3"
    x = w["model.embed_tokens.weight"][tokens]
    t = len(tokens)
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = _rms(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(t, nh, hd)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(t, nkv, hd)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(t, nkv, hd)
        if qwen:
            q = _rms(q, w[p + "self_attn.q_norm.weight"], eps)
            k = _rms(k, w[p + "self_attn.k_norm.weight"], eps)
        q = torch.stack([_rope(q[i], i, theta) for i in range(t)])
        k = torch.stack([_rope(k[i], i, theta) for i in range(t)])
        heads = []
        for head in range(nh):
            kv = head // (nh // nkv)
            scores = q[:, head] @ k[:, kv].T / math.sqrt(hd)
            scores = scores.masked_fill(torch.ones(t, t).triu(1).bool(), float("-inf"))
            heads.append(torch.softmax(scores, -1) @ v[:, kv])
        x = x + torch.cat(heads, -1) @ w[p + "self_attn.o_proj.weight"].T
        h = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g * torch.sigmoid(g) * u) @ w[p + "mlp.down_proj.weight"].T
    x = _rms(x, w["model.norm.weight"], eps)
    unembed = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ unembed.T


def _sft_datum(tokens: list[int]) -> Datum:
    return Datum(
        tokens=tokens[:-1],
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )


# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tinkex/tiny-llama-100k", "tinkex/tiny-qwen3-100k"])
def test_model_logits_match_independent_reference(name: str) -> None:
    base = load_base_model(name)
    tokens = [1, 57, 300, 12, 999, 4, 8, 512, 77, 3]
    got = base.module(torch.tensor([tokens]))[0].double()
    want = reference_logits(builtin_state_dict(builtin_model(name)), base.config.to_hf(), tokens)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_forward_logprobs_equal_log_softmax_of_full_logits() -> None:
    engine = Engine(seed=0)
    engine.create_adapter("m", "tinkex/tiny-llama-100k", LoraConfig(rank=4, seed=3))
    seqs = [[1, 5, 9, 200, 31, 7], [1, 44, 2], [1, 900, 901, 902, 903, 904, 905, 906, 20]]
    data = [_sft_datum(s) for s in seqs]
    # A step first, so that the adapter is not a no-op.
    engine.forward_backward("m", data)
    engine.optim_step("m", {"learning_rate": 1e-2})
    result = engine.forward("m", data)
    base = load_base_model("tinkex/tiny-llama-100k")
    ref_adapter = _adapter_copy(engine, "m", base)
    for seq, out in zip(seqs, result.loss_fn_outputs, strict=True):
        with torch.no_grad():
            logits = base.module(torch.tensor([seq[:-1]]), SingleLora(ref_adapter))[0]
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(seq[1:])[:, None])[:, 0]
        got = torch.tensor(out["logprobs"].data)
        assert out["logprobs"].shape == [len(seq) - 1]
        assert out["logprobs"].dtype == "float32"
        assert torch.allclose(got, expected, atol=1e-6, rtol=0), (got - expected).abs().max()
        assert torch.allclose(torch.tensor(out["elementwise_loss"].data), -expected, atol=1e-6)
    total = sum(-sum(o["logprobs"].data) for o in result.loss_fn_outputs)
    assert result.metrics["loss:sum"] == pytest.approx(total, rel=1e-6)


def _adapter_copy(engine: Engine, model_id: str, base: Any) -> Any:
    from tinkex_server._engine.lora import Adapter, LoraSpec

    info = engine.adapter_info(model_id)
    spec = LoraSpec(
        rank=info.rank,
        alpha=info.alpha,
        seed=info.seed,
        train_attn=info.train_attn,
        train_mlp=info.train_mlp,
        train_unembed=info.train_unembed,
    )
    adapter = Adapter(info.base_model, base.module, spec)
    adapter.load_state_dict(engine.adapter_state(model_id), source="test")
    return adapter


def test_lora_forward_matches_reference_with_merged_weights() -> None:
    engine = Engine(seed=0)
    name = "tinkex/tiny-qwen3-100k"
    engine.create_adapter("m", name, LoraConfig(rank=4, seed=1))
    data = [_sft_datum([1, 10, 20, 30, 40, 50])]
    for _ in range(2):
        engine.forward_backward("m", data)
        engine.optim_step("m", {"learning_rate": 2e-2})
    state = engine.adapter_state("m")
    lora: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in state:
        if key.endswith("lora_A.weight"):
            module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            lora[module] = (state[key], state[key.replace("lora_A", "lora_B")])
    assert any(float(b.abs().max()) > 0 for _, b in lora.values())
    tokens = [1, 10, 20, 30, 40]
    cfg = load_base_model(name).config.to_hf()
    want = torch.log_softmax(
        reference_logits(builtin_state_dict(builtin_model(name)), cfg, tokens, lora, 32 / 4), -1
    )
    got = engine.forward("m", data).loss_fn_outputs[0]["logprobs"].data
    expected = want.gather(-1, torch.tensor([10, 20, 30, 40, 50])[:, None])[:, 0]
    assert torch.allclose(torch.tensor(got, dtype=torch.float64), expected, atol=1e-5)


def test_builtin_models_are_deterministic_and_sized() -> None:
    names = builtin_models()
    assert names[:3] == ["tinkex/tiny-llama-100k", "tinkex/tiny-qwen3-100k", "tinkex/tiny-llama-1m"]
    a = builtin_state_dict(builtin_model("tinkex/tiny-llama-100k"))
    b = builtin_state_dict(builtin_model("tinkex/tiny-llama-100k"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = builtin_state_dict(builtin_model("tinkex/tiny-qwen3-100k"))
    assert not torch.equal(a["model.embed_tokens.weight"], other["model.embed_tokens.weight"])
    sizes = {n: load_base_model(n).num_parameters() for n in names[:3]}
    assert 80_000 < sizes["tinkex/tiny-llama-100k"] < 130_000
    assert 80_000 < sizes["tinkex/tiny-qwen3-100k"] < 130_000
    assert 700_000 < sizes["tinkex/tiny-llama-1m"] < 1_300_000
    assert "model.layers.0.self_attn.q_norm.weight" in other
    assert "lm_head.weight" not in a  # tied


def _random_config(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 96,
        "hidden_size": 32,
        "intermediate_size": 40,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
        "attention_bias": True,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
        "eos_token_id": 2,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    }
    cfg.update(over)
    return cfg


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "head_dim": 16},
        {"tie_word_embeddings": True, "rope_scaling": None, "attention_bias": False},
    ],
)
def test_hf_safetensors_round_trip(tmp_path: Path, overrides: dict[str, Any]) -> None:
    cfg = ModelConfig.from_hf(_random_config(**overrides))
    sd = random_state_dict(cfg, seed=7, std=0.1)
    for name in sd:
        if name.endswith(".bias"):
            sd[name] = torch.randn(sd[name].shape) * 0.1  # make biases matter
    model = model_from_state_dict(cfg, sd, source="test")
    out = save_hf_model(model, tmp_path / "m")
    files = load_file(str(out / "model.safetensors"))
    assert "model.layers.1.self_attn.q_proj.weight" in files
    assert "model.layers.0.mlp.down_proj.weight" in files
    assert ("lm_head.weight" in files) == (not cfg.tie_word_embeddings)
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["architectures"] == cfg.raw["architectures"]
    loaded = load_base_model(str(out))
    tokens = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3]])
    with torch.no_grad():
        assert torch.equal(model(tokens), loaded.module(tokens))
    # And the loaded model agrees with the float64 reference when rope is unscaled.
    if cfg.rope_scaling is None:
        want = reference_logits(sd, cfg.to_hf(), tokens[0].tolist())
        assert torch.allclose(loaded.module(tokens)[0].double(), want, atol=1e-5)


def test_sharded_checkpoint_and_trainable_by_path(tmp_path: Path) -> None:
    cfg = ModelConfig.from_hf(_random_config())
    sd = random_state_dict(cfg, seed=1)
    names = sorted(sd)
    half = len(names) // 2
    save_file({n: sd[n].to(torch.bfloat16) for n in names[:half]}, str(tmp_path / "a.safetensors"))
    save_file({n: sd[n].to(torch.bfloat16) for n in names[half:]}, str(tmp_path / "b.safetensors"))
    weight_map = {
        n: ("a.safetensors" if i < half else "b.safetensors") for i, n in enumerate(names)
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(_random_config()))
    base = load_base_model(str(tmp_path))
    assert base.tokenizer is None
    expected = sd["model.norm.weight"].to(torch.bfloat16).float()
    assert torch.equal(base.module.model.norm.weight, expected)
    engine = Engine(seed=0)
    info = engine.create_adapter("m", str(tmp_path), LoraConfig(rank=2, seed=0))
    assert info.base_model == str(tmp_path)
    out = engine.forward_backward("m", [_sft_datum([1, 2, 3, 4])])
    assert math.isfinite(out.metrics["loss:sum"])


def test_exported_builtin_loads_with_identical_logits(tmp_path: Path) -> None:
    path = export_builtin_model("tinkex/tiny-qwen3-100k", tmp_path / "q")
    assert {p.name for p in path.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    a = load_base_model("tinkex/tiny-qwen3-100k")
    b = load_base_model(str(path))
    tokens = torch.tensor([[1, 2, 3, 400, 500]])
    with torch.no_grad():
        assert torch.equal(a.module(tokens), b.module(tokens))
    assert b.tokenizer is not None
    assert b.tokenizer.encode("hello") == a.tokenizer.encode("hello")  # type: ignore[union-attr]


def test_bad_model_directories_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match="neither a built-in model"):
        load_base_model(str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text(
        json.dumps(_random_config(architectures=["GPT2LMHeadModel"], model_type="gpt2"))
    )
    with pytest.raises(EngineInputError, match="unsupported architecture"):
        load_base_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(_random_config()))
    with pytest.raises(EngineInputError, match=r"no model\.safetensors"):
        load_base_model(str(tmp_path))
    cfg = ModelConfig.from_hf(_random_config())
    sd = random_state_dict(cfg, seed=1)
    del sd["model.layers.1.mlp.up_proj.weight"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(EngineInputError, match=r"missing \['model.layers.1.mlp.up_proj.weight'\]"):
        load_base_model(str(tmp_path))
    with pytest.raises(EngineInputError, match="hidden_act"):
        ModelConfig.from_hf(_random_config(hidden_act="gelu"))
    with pytest.raises(EngineInputError, match="rope_type"):
        ModelConfig.from_hf(_random_config(rope_scaling={"rope_type": "yarn", "factor": 2.0}))
