"""The torch engine of tinkex-server (private; the public names are re-exported lazily by
``tinkex_server``). See :mod:`tinkex_server._engine.engine` for the API contract."""

from __future__ import annotations

from tinkex_server._engine.bench import BareLoopResult, bare_training_loop
from tinkex_server._engine.config import ModelConfig
from tinkex_server._engine.engine import DEFAULT_LORA_ALPHA, Engine
from tinkex_server._engine.errors import EngineError, EngineInputError, UnknownModelError
from tinkex_server._engine.fileio import make_archive
from tinkex_server._engine.model import DecoderLM
from tinkex_server._engine.optim import AdamParams
from tinkex_server._engine.registry import (
    BaseModel,
    export_builtin_model,
    load_base_model,
    save_hf_model,
)
from tinkex_server._engine.types import (
    AdapterInfo,
    Datum,
    FlatTensor,
    ForwardResult,
    LoraConfig,
    ModelInfo,
    SampledSequence,
    SampleRequest,
    SampleResult,
    StateInfo,
)

__all__ = [
    "DEFAULT_LORA_ALPHA",
    "AdamParams",
    "AdapterInfo",
    "BareLoopResult",
    "BaseModel",
    "Datum",
    "DecoderLM",
    "Engine",
    "EngineError",
    "EngineInputError",
    "FlatTensor",
    "ForwardResult",
    "LoraConfig",
    "ModelConfig",
    "ModelInfo",
    "SampleRequest",
    "SampleResult",
    "SampledSequence",
    "StateInfo",
    "UnknownModelError",
    "bare_training_loop",
    "export_builtin_model",
    "load_base_model",
    "make_archive",
    "save_hf_model",
]
