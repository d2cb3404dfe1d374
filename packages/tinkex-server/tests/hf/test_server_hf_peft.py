"""PEFT adapters in and out, checked against peft and transformers on tiny models: an adapter
made by peft imports and gives peft's logprobs and gradients; tinkex's adapter loads into
peft with no key mismatch and gives ours; a merged export loaded by transformers equals
adapter-on-base; unsupported adapter configs are refused naming the key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tinkex_server._engine import Engine, EngineInputError, LoraConfig

# peft 0.21 calls a transformers-5 deprecated property, and warns about LoRA on a tied lm_head
# (which is what this file checks on purpose).
pytestmark = [
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`:UserWarning"),
    pytest.mark.filterwarnings("ignore:Setting `save_embedding_layers` to `True`:UserWarning"),
]


def _peft_adapter(hf: Any, base_dir: Path, out: Path, **config: Any) -> Any:
    """A peft LoRA with random A and B (``init_lora_weights=False``) saved to ``out``."""
    import peft

    torch.manual_seed(3)
    model = peft.get_peft_model(
        hf.hf_model(base_dir),
        peft.LoraConfig(init_lora_weights=False, lora_dropout=0.0, **config),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.mul_(0.5)
    model.save_pretrained(str(out))
    return model


@pytest.mark.parametrize(
    ("name", "targets"),
    [
        ("llama", ["q_proj", "v_proj"]),
        ("qwen3", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        ("llama-bias-tied", "all-linear"),
        ("llama-llama3", ["self_attn.o_proj", "mlp.down_proj", "lm_head"]),
    ],
)
def test_peft_adapter_imports_with_peft_logprobs_and_gradients(
    hf: Any, tiny_dirs: dict[tuple[str, str], Path], tmp_path: Path, name: str, targets: Any
) -> None:
    base_dir = tiny_dirs[(name, "new")]
    peft_model = _peft_adapter(
        hf, base_dir, tmp_path / "a", r=4, lora_alpha=12, target_modules=targets
    )
    engine = Engine(seed=0)
    info = engine.import_peft_adapter("imp", tmp_path / "a", base_model=str(base_dir))
    assert (info.rank, info.alpha, info.trainable) == (4, 12.0, True)
    want = hf.reference_logprobs(peft_model, hf.TOKENS)
    got = hf.engine_logprobs(engine, "imp", hf.TOKENS)
    assert (got - want).abs().max().item() <= 1e-4
    # Gradients of the summed cross-entropy agree with peft's.
    peft_model.train()
    ids = torch.tensor([hf.TOKENS])
    logits = peft_model(ids).logits[0, :-1]
    loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
    loss.backward()
    theirs = hf.peft_grads(peft_model)
    engine.forward_backward("imp", [hf.sft_datum(hf.TOKENS)])
    ours = engine.adapter_grads("imp")
    assert set(ours) == set(theirs)
    for key, grad in ours.items():
        assert grad is not None
        scale = theirs[key].abs().max().item() + 1e-12
        assert (grad - theirs[key]).abs().max().item() / scale <= 1e-4, key
    # An imported adapter trains and is saved as a tinkex checkpoint of the same subset.
    engine.optim_step("imp", {"learning_rate": 1e-2})
    state = engine.save_state("imp", tmp_path / "state")
    again = Engine(seed=1)
    again.create_adapter("r", str(base_dir), engine.read_state_info(state).lora)
    again.load_state("r", state)
    assert torch.equal(
        hf.engine_logprobs(again, "r", hf.TOKENS), hf.engine_logprobs(engine, "imp", hf.TOKENS)
    )


def _trained(base: str, lora: LoraConfig) -> Engine:
    engine = Engine(seed=0)
    engine.create_adapter("m", base, lora)
    for _ in range(3):
        engine.forward_backward("m", [_datum()])
        engine.optim_step("m", {"learning_rate": 5e-2})
    return engine


def _datum() -> Any:
    from tinkex_server._engine import Datum

    tokens = [5, 17, 3, 42, 8, 23, 61, 2, 9, 33]
    return Datum(tokens[:-1], {"target_tokens": tokens[1:], "weights": [1.0] * 9})


@pytest.mark.parametrize(
    ("name", "lora"),
    [
        ("llama", LoraConfig(rank=4, seed=1)),
        ("qwen3", LoraConfig(rank=2, seed=2, train_unembed=False, alpha=8.0)),
        ("llama-bias-tied", LoraConfig(rank=3, seed=3, train_attn=False)),
    ],
)
def test_tinkex_adapter_loads_in_peft_and_merged_export_in_transformers(
    hf: Any, tiny_dirs: dict[tuple[str, str], Path], tmp_path: Path, name: str, lora: LoraConfig
) -> None:
    import peft

    base_dir = tiny_dirs[(name, "new")]
    engine = _trained(str(base_dir), lora)
    ours = hf.engine_logprobs(engine, "m", hf.TOKENS)
    # Adapter out: peft loads it with no missing or unexpected key and computes ours.
    adapter_dir = engine.save_sampler_weights("m", tmp_path / "adapter")
    base = hf.hf_model(base_dir)
    peft_model = peft.PeftModel.from_pretrained(base, str(adapter_dir))
    result = peft.set_peft_model_state_dict(
        peft_model, peft.load_peft_weights(str(adapter_dir)), adapter_name="default"
    )
    assert not result.unexpected_keys
    assert not [k for k in result.missing_keys if "lora_" in k]
    theirs = hf.reference_logprobs(peft_model.eval(), hf.TOKENS)
    assert (ours - theirs).abs().max().item() <= 1e-4
    # Merged out: transformers loads the directory and equals adapter-on-base.
    merged = engine.export_merged("m", tmp_path / "merged")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in merged.iterdir()
    }
    merged_ref = hf.reference_logprobs(hf.hf_model(merged), hf.TOKENS)
    assert (ours - merged_ref).abs().max().item() <= 1e-4
    # The same from the saved checkpoint directory, and the merged model loads in tinkex.
    state = engine.save_state("m", tmp_path / "state")
    again = engine.export_merged_checkpoint(state, tmp_path / "merged2")
    loaded = Engine(seed=0).compute_logprobs(hf.TOKENS, base_model=str(again))
    assert max(abs(a - b) for a, b in zip(loaded[1:], ours.tolist(), strict=True)) <= 1e-4


def test_merged_export_of_builtin_untied_lm_head_and_tokenizer(tmp_path: Path, hf: Any) -> None:
    import transformers

    engine = _trained("tinkex/tiny-qwen3-100k", LoraConfig(rank=2, seed=5))  # lm_head adapted
    merged = engine.export_merged("m", tmp_path / "merged")
    config = json.loads((merged / "config.json").read_text())
    assert config["tie_word_embeddings"] is False  # the lm_head delta unties it
    ours = hf.engine_logprobs(engine, "m", hf.TOKENS)
    theirs = hf.reference_logprobs(hf.hf_model(merged), hf.TOKENS)
    assert (ours - theirs).abs().max().item() <= 1e-4
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(merged))
    assert tokenizer.encode("hello world", add_special_tokens=False) == engine.tokenizer(
        "tinkex/tiny-qwen3-100k"
    ).encode("hello world", add_special_tokens=False)  # type: ignore[union-attr]


def _edit_adapter(src: Path, dst: Path, **changes: Any) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    cfg.update(changes)
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"use_dora": True}, "use_dora"),
        ({"use_rslora": True}, "use_rslora"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"target_modules": ["q_proj", "embed_tokens"]}, "target_modules"),
        ({"target_modules": r"model\.layers\.0\.self_attn\.q_proj"}, "target_modules"),
        ({"layers_to_transform": [0]}, "layers_to_transform"),
        ({"rank_pattern": {"q_proj": 8}}, "rank_pattern"),
        ({"alpha_pattern": {"q_proj": 8}}, "alpha_pattern"),
        ({"bias": "lora_only"}, "bias"),
        ({"init_lora_weights": "pissa"}, "init_lora_weights"),
        ({"peft_type": "IA3"}, "peft_type"),
        ({"task_type": "SEQ_CLS"}, "task_type"),
        ({"r": 0}, "r"),
    ],
)
def test_unsupported_peft_adapters_are_refused_naming_the_key(
    hf: Any,
    tiny_dirs: dict[tuple[str, str], Path],
    tmp_path: Path,
    changes: dict[str, Any],
    key: str,
) -> None:
    base_dir = tiny_dirs[("llama", "new")]
    src = tmp_path / "src"
    if not src.exists():
        _peft_adapter(hf, base_dir, src, r=2, lora_alpha=4, target_modules=["q_proj"])
    bad = _edit_adapter(src, tmp_path / "bad", **changes)
    engine = Engine(seed=0)
    with pytest.raises(EngineInputError) as info:
        engine.import_peft_adapter("x", bad, base_model=str(base_dir))
    assert info.value.field == f"adapter_config.json:{key}"
    with pytest.raises(EngineInputError):
        engine.load_sampler_weights("x", bad, base_model=str(base_dir))
    assert not engine.has_adapter("x")


def test_peft_directory_needs_safetensors_and_a_base(
    hf: Any, tiny_dirs: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    base_dir = tiny_dirs[("llama", "new")]
    src = tmp_path / "a"
    _peft_adapter(hf, base_dir, src, r=2, lora_alpha=4, target_modules=["v_proj"])
    engine = Engine(seed=0)
    # base_model_name_or_path is the directory peft saw: it resolves by itself.
    info = engine.import_peft_adapter("ok", src, trainable=False)
    assert (info.trainable, info.target_modules) == (False, ["v_proj"])
    (src / "adapter_model.safetensors").rename(src / "adapter_model.bin")
    with pytest.raises(EngineInputError, match="safe_serialization=True"):
        engine.import_peft_adapter("x", src)
    cfg = json.loads((src / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = None
    (src / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(EngineInputError) as err:
        engine.import_peft_adapter("x", src)
    assert err.value.field == "base_model"


def test_saved_lm_head_copy_must_be_the_base_one(
    hf: Any, tiny_dirs: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    base_dir = tiny_dirs[("llama", "new")]
    src = tmp_path / "a"
    _peft_adapter(hf, base_dir, src, r=2, lora_alpha=4, target_modules=["lm_head"])
    tensors = load_file(str(src / "adapter_model.safetensors"))
    name = "base_model.model.lm_head.base_layer.weight"
    assert name in tensors  # peft's save_embedding_layers copy: accepted when unchanged
    assert Engine(seed=0).import_peft_adapter("ok", src).target_modules == ["lm_head"]
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, str(src / "adapter_model.safetensors"))
    with pytest.raises(EngineInputError, match="differs from the base model"):
        Engine(seed=0).import_peft_adapter("x", src)
