"""Checkpoints: training state round trips, PEFT sampler weights, archives, atomicity."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tinkex_server._engine import (
    Datum,
    Engine,
    EngineInputError,
    LoraConfig,
    SampleRequest,
    fileio,
    make_archive,
)
from tinkex_server._integrity import CheckpointCorruptError
from tinkex_types.manifest import MANIFEST_FILE

MODEL = "tinkex/tiny-llama-100k"
SEQS = [[1, 40, 41, 42, 43, 44, 2], [1, 300, 301, 302, 2]]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data() -> list[Datum]:
    return [Datum(s[:-1], {"target_tokens": s[1:], "weights": [1.0] * (len(s) - 1)}) for s in SEQS]


HP = {"learning_rate": 1e-2, "weight_decay": 0.01, "grad_clip_norm": 5.0}


def _trained(steps: int = 3, **lora: object) -> Engine:
    engine = Engine(seed=0)
    engine.create_adapter("m", MODEL, LoraConfig(rank=4, seed=9, **lora))  # type: ignore[arg-type]
    for _ in range(steps):
        engine.forward_backward("m", _data())
        engine.optim_step("m", HP)
    return engine


def _next_step(engine: Engine, model_id: str) -> tuple[float, dict[str, torch.Tensor]]:
    engine.forward_backward(model_id, _data())
    engine.optim_step(model_id, HP)
    loss = engine.forward(model_id, _data()).metrics["loss:sum"]
    return loss, engine.adapter_state(model_id)


def test_save_load_state_round_trip_gives_identical_next_step(tmp_path: Path) -> None:
    original = _trained()
    path = original.save_state("m", tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "optimizer.safetensors",
        "tinkex_manifest.json",
        "tinkex_state.json",
    ]
    info = Engine.read_state_info(path)
    assert info.base_model == MODEL
    assert info.step == 3
    assert info.has_optimizer
    assert info.lora.rank == 4
    assert info.lora.seed == 9

    # A fresh engine, an adapter created from the checkpoint's own config, then load.
    restored = Engine(seed=99)
    restored.create_adapter("r", info.base_model, info.lora)
    loaded = restored.load_state("r", path)
    assert loaded.step == 3
    want_loss, want_state = _next_step(original, "m")
    got_loss, got_state = _next_step(restored, "r")
    assert got_loss == want_loss
    assert all(torch.equal(got_state[k], want_state[k]) for k in want_state)
    assert restored.adapter_info("r").step == 4


def test_load_without_optimizer_resets_adam(tmp_path: Path) -> None:
    engine = _trained()
    engine.save_state("m", tmp_path / "w", with_optimizer=False)
    assert not (tmp_path / "w" / "optimizer.safetensors").exists()
    other = Engine(seed=0)
    other.create_adapter("x", MODEL, LoraConfig(rank=4, seed=1))
    with pytest.raises(EngineInputError, match="no optimizer state"):
        other.load_state("x", tmp_path / "w")
    info = other.load_state("x", tmp_path / "w", with_optimizer=False)
    assert info.step == 0
    state = engine.adapter_state("m")
    assert all(torch.equal(other.adapter_state("x")[k], state[k]) for k in state)


def test_load_state_rejects_mismatch_and_leaves_adapter_untouched(tmp_path: Path) -> None:
    engine = _trained()
    engine.save_state("m", tmp_path / "c")
    other = Engine(seed=0)
    other.create_adapter("rank8", MODEL, LoraConfig(rank=8, seed=1))
    other.create_adapter("nomlp", MODEL, LoraConfig(rank=4, seed=1, train_mlp=False))
    before = other.adapter_state("rank8")
    with pytest.raises(EngineInputError, match="does not match") as err:
        other.load_state("rank8", tmp_path / "c")
    assert "read_state_info" in str(err.value)
    with pytest.raises(EngineInputError, match="does not match"):
        other.load_state("nomlp", tmp_path / "c")
    assert all(torch.equal(other.adapter_state("rank8")[k], before[k]) for k in before)
    with pytest.raises(EngineInputError, match="does not exist"):
        other.load_state("rank8", tmp_path / "missing")
    # A corrupt weights file is reported (as the server's fault, by file name, without the
    # directory), not crashed on, and changes nothing.
    (tmp_path / "c" / "adapter_model.safetensors").write_bytes(b"garbage")
    same = Engine(seed=0)
    same.create_adapter("m", MODEL, LoraConfig(rank=4, seed=9))
    fresh = same.adapter_state("m")
    with pytest.raises(
        CheckpointCorruptError, match=r"adapter_model\.safetensors is 7 bytes"
    ) as bad:
        same.load_state("m", tmp_path / "c")
    assert str(tmp_path) not in str(bad.value)
    assert not isinstance(bad.value, EngineInputError)
    assert all(torch.equal(same.adapter_state("m")[k], fresh[k]) for k in fresh)


def test_sampler_weights_are_peft_layout_and_sample_like_the_live_adapter(tmp_path: Path) -> None:
    engine = _trained(train_unembed=False)
    path = engine.save_sampler_weights("m", tmp_path / "s")
    assert sorted(p.name for p in path.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "tinkex_manifest.json",
    ]
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert config["r"] == 4
    assert config["lora_alpha"] == 32.0
    assert config["base_model_name_or_path"] == MODEL
    assert config["target_modules"] == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    tensors = load_file(str(path / "adapter_model.safetensors"))
    a = tensors["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]
    b = tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]
    assert tuple(a.shape) == (4, 128)  # (r, in)
    assert tuple(b.shape) == (48, 4)  # (out, r)
    assert not any("lm_head" in k for k in tensors)
    assert len(tensors) == 2 * 2 * 7

    engine.load_sampler_weights("snap", path)
    info = engine.adapter_info("snap")
    assert not info.trainable
    assert info.base_model == MODEL
    req = {"prompt": [1, 40, 41], "max_tokens": 6, "seed": 3, "stop_at_eos": False}
    live = engine.sample(SampleRequest(model_id="m", **req))  # type: ignore[arg-type]
    snap = engine.sample(SampleRequest(model_id="snap", **req))  # type: ignore[arg-type]
    assert live.sequences[0].tokens == snap.sequences[0].tokens
    # The snapshot does not move when training continues.
    engine.forward_backward("m", _data())
    engine.optim_step("m", HP)
    assert engine.forward("snap", _data()).metrics == snap_metrics_before(engine, path)
    with pytest.raises(EngineInputError, match="cannot be trained"):
        engine.forward_backward("snap", _data())
    with pytest.raises(EngineInputError, match="already exists"):
        engine.load_sampler_weights("snap", path)


def snap_metrics_before(engine: Engine, path: Path) -> dict[str, float]:
    engine.load_sampler_weights("snap2", path)
    try:
        return engine.forward("snap2", _data()).metrics
    finally:
        engine.remove_adapter("snap2")


def test_archive_is_relative_and_deterministic(tmp_path: Path) -> None:
    engine = _trained(steps=1)
    ckpt = engine.save_sampler_weights("m", tmp_path / "s")
    one = make_archive(ckpt, tmp_path / "one.tar.gz")
    two = Engine.make_archive(ckpt, tmp_path / "two.tar.gz")
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(one.read_bytes()), mode="r:gz") as tar:
        names = tar.getnames()
        assert names == ["adapter_config.json", "adapter_model.safetensors", MANIFEST_FILE]
        member = tar.extractfile("adapter_model.safetensors")
        assert member is not None
        assert member.read() == (ckpt / "adapter_model.safetensors").read_bytes()
    with pytest.raises(EngineInputError, match="not a directory"):
        make_archive(tmp_path / "nothing", tmp_path / "x.tar.gz")


def test_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _trained(steps=1)
    target = engine.save_state("m", tmp_path / "c")
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    engine.forward_backward("m", _data())
    engine.optim_step("m", HP)

    real = fileio.atomic_write_bytes
    calls = {"n": 0}

    def failing(path: str | Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(fileio, "atomic_write_bytes", failing)
    with pytest.raises(OSError, match="disk full"):
        engine.save_state("m", target)
    monkeypatch.undo()
    # The old checkpoint is intact and no temporary directory or file is left behind.
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    # A successful save replaces it as a whole.
    engine.save_state("m", target)
    assert Engine.read_state_info(target).step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    fileio.atomic_write_bytes(tmp_path / "f.bin", b"abc")
    assert (tmp_path / "f.bin").read_bytes() == b"abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "f.bin"]


def test_peft_directory_with_regex_targets(tmp_path: Path) -> None:
    # PEFT regex targets are matched in full against module paths (as PEFT does): a regex
    # that misses lm_head leaves the lm_head tensors unexpected, one that covers every
    # projection loads.
    engine = _trained(steps=1)
    path = engine.save_sampler_weights("m", tmp_path / "p")
    (path / MANIFEST_FILE).unlink()  # a PEFT directory written elsewhere has no manifest
    config = json.loads((path / "adapter_config.json").read_text())
    config["target_modules"] = r".*(proj|lm_head)"
    (path / "adapter_config.json").write_text(json.dumps(config))
    info = engine.load_sampler_weights("ok", path)
    assert info.target_modules == engine.adapter_info("m").target_modules
    config["target_modules"] = ".*proj"
    (path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(EngineInputError, match=r"unexpected \['base_model.model.lm_head"):
        engine.load_sampler_weights("x", path)
    assert not engine.has_adapter("x")
