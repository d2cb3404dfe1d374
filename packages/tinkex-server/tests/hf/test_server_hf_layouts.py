"""Model directories written by transformers load with transformers' numbers, in both config
layouts, or are refused with an error naming the key; tokenizer files of transformers 5."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tinkex_server._engine import Engine, EngineInputError, LoraConfig, ModelConfig
from tinkex_server._engine.registry import load_base_model


@pytest.mark.parametrize("layout", ["new", "old"])
@pytest.mark.parametrize(
    "name", ["llama", "llama-llama3", "llama-linear", "llama-bias-tied", "qwen3"]
)
def test_logprobs_match_transformers_in_both_layouts(
    hf: Any, tiny_dirs: dict[tuple[str, str], Path], name: str, layout: str
) -> None:
    directory = tiny_dirs[(name, layout)]
    cfg = json.loads((directory / "config.json").read_text())
    assert ("rope_parameters" in cfg) == (layout == "new")
    want = hf.reference_logprobs(hf.hf_model(directory), hf.TOKENS)
    engine = Engine(seed=0)
    engine.create_adapter("m", str(directory), LoraConfig(rank=2, seed=0))
    got = hf.engine_logprobs(engine, "m", hf.TOKENS)
    assert (got - want).abs().max().item() <= 1e-4
    # The sampler's prompt logprobs (base model, KV-cache path) agree as well.
    prompt = engine.compute_logprobs(hf.TOKENS, base_model=str(directory))
    assert prompt[0] is None
    assert max(abs(a - b) for a, b in zip(prompt[1:], want.tolist(), strict=True)) <= 1e-4


def test_both_layouts_parse_to_the_same_config(tiny_dirs: dict[tuple[str, str], Path]) -> None:
    for name in ("llama-llama3", "llama-linear", "qwen3"):
        new = json.loads((tiny_dirs[(name, "new")] / "config.json").read_text())
        old = json.loads((tiny_dirs[(name, "old")] / "config.json").read_text())
        assert ModelConfig.from_hf(new) == ModelConfig.from_hf(old)
    llama3 = ModelConfig.from_hf(
        json.loads((tiny_dirs[("llama-llama3", "new")] / "config.json").read_text())
    )
    assert llama3.rope_theta == 5000.0
    assert llama3.rope_scaling == {
        "rope_type": "llama3",
        "factor": 4.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8.0,
    }


def test_llama3_rope_frequencies_equal_transformers(tiny_dirs: dict[tuple[str, str], Path]) -> None:
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from tinkex_server._engine.model import rope_inv_freq

    for name in ("llama-llama3", "llama-linear"):
        directory = tiny_dirs[(name, "old")]
        hf_cfg = transformers.AutoConfig.from_pretrained(str(directory))
        rope_type = hf_cfg.rope_parameters["rope_type"]
        want, scale = ROPE_INIT_FUNCTIONS[rope_type](hf_cfg, None)
        ours = rope_inv_freq(
            ModelConfig.from_hf(json.loads((directory / "config.json").read_text()))
        )
        assert scale == 1.0
        assert torch.equal(ours, want.to(torch.float32))


def _edit(src: Path, dst: Path, **changes: Any) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for key, value in changes.items():
        if value is _DROP:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


_DROP = object()
_ROPE = {"rope_type": "default", "rope_theta": 500.0}


@pytest.mark.parametrize(
    ("name", "changes", "key"),
    [
        (
            "llama",
            {"rope_parameters": {**_ROPE, "rope_type": "yarn", "factor": 2.0}},
            "rope_parameters.rope_type",
        ),
        (
            "llama",
            {"rope_parameters": {**_ROPE, "rope_type": "dynamic", "factor": 2.0}},
            "rope_parameters.rope_type",
        ),
        ("llama", {"rope_scaling": {"type": "longrope", "factor": 2.0}}, "rope_scaling.rope_type"),
        (
            "llama",
            {"rope_parameters": {**_ROPE, "rope_type": "llama3", "factor": 8.0}},
            "rope_parameters.low_freq_factor",
        ),
        ("llama", {"rope_parameters": {**_ROPE, "rope_type": "linear"}}, "rope_parameters.factor"),
        (
            "llama",
            {"rope_parameters": {**_ROPE, "partial_rotary_factor": 0.5}},
            "partial_rotary_factor",
        ),
        ("llama", {"sliding_window": 16}, "sliding_window"),
        ("llama", {"layer_types": ["full_attention", "sliding_attention"]}, "layer_types"),
        (
            "qwen3",
            {
                "use_sliding_window": True,
                "sliding_window": 8,
                "max_window_layers": 1,
                "layer_types": _DROP,
            },
            "use_sliding_window",
        ),
        ("qwen3", {"layer_types": ["sliding_attention", "full_attention"]}, "layer_types"),
        ("qwen3", {"mlp_bias": True}, "mlp_bias"),
        ("llama", {"quantization_config": {"quant_method": "bitsandbytes"}}, "quantization_config"),
        (
            "llama",
            {"architectures": ["MistralForCausalLM"], "model_type": "mistral"},
            "architectures",
        ),
        ("llama", {"architectures": _DROP, "model_type": "gemma"}, "model_type"),
        ("llama", {"model_type": "qwen3"}, "model_type"),
        ("llama", {"hidden_act": "gelu"}, "hidden_act"),
        ("llama", {"attention_dropout": 0.1}, "attention_dropout"),
        ("llama", {"vocab_size": _DROP}, "vocab_size"),
    ],
)
def test_unsupported_configs_are_refused_naming_the_key(
    tiny_dirs: dict[tuple[str, str], Path],
    tmp_path: Path,
    name: str,
    changes: dict[str, Any],
    key: str,
) -> None:
    directory = _edit(tiny_dirs[(name, "new")], tmp_path / "m", **changes)
    with pytest.raises(EngineInputError) as info:
        load_base_model(str(directory))
    assert info.value.field == f"config.json:{key}"
    assert key.split(".")[-1] in str(info.value)


def test_tied_config_with_a_different_lm_head_is_refused(
    tiny_dirs: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    # An untied model relabelled tied: transformers would drop its lm_head; we refuse.
    directory = _edit(tiny_dirs[("llama", "new")], tmp_path / "m", tie_word_embeddings=True)
    with pytest.raises(EngineInputError) as info:
        load_base_model(str(directory))
    assert info.value.field == "config.json:tie_word_embeddings"


def test_harmless_qwen3_sliding_keys_load(
    hf: Any, tiny_dirs: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    # use_sliding_window with max_window_layers >= layers has no sliding layer (as in
    # transformers): it loads and computes transformers' numbers.
    directory = _edit(
        tiny_dirs[("qwen3", "new")],
        tmp_path / "m",
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=2,
        layer_types=_DROP,
    )
    want = hf.reference_logprobs(hf.hf_model(directory), hf.TOKENS)
    got = Engine(seed=0).compute_logprobs(hf.TOKENS, base_model=str(directory))
    assert max(abs(a - b) for a, b in zip(got[1:], want.tolist(), strict=True)) <= 1e-4


def test_chat_template_jinja_and_special_tokens_map(
    tiny_dirs: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    import transformers

    directory = tmp_path / "m"
    shutil.copytree(tiny_dirs[("llama", "new")], directory)
    template = (
        "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}"
        "{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    (directory / "chat_template.jinja").write_text(template)
    cfg = json.loads((directory / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{{ 'ignored: chat_template.jinja wins' }}"
    for key in ("bos_token", "eos_token", "pad_token", "added_tokens_decoder"):
        cfg.pop(key, None)
    (directory / "tokenizer_config.json").write_text(json.dumps(cfg))
    special = {"bos_token": "<|bos|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>"}
    (directory / "special_tokens_map.json").write_text(json.dumps(special))

    base = load_base_model(str(directory))
    ours = base.tokenizer
    assert ours is not None
    theirs = transformers.AutoTokenizer.from_pretrained(str(directory))
    assert (ours.bos_token, ours.eos_token, ours.pad_token) == (
        theirs.bos_token,
        theirs.eos_token,
        theirs.pad_token,
    )
    assert ours.eos_token_id == theirs.eos_token_id
    assert ours.eos_token_id in base.eos_token_ids
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
    ]
    text = ours.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|bos|>[system] Be brief.<|im_end|>")
