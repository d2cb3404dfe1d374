"""The steps of ``tinkex conformance`` (session, training, saves and loads, sampling), in
table order; the REST steps are in :mod:`tinkex_cli._conformance_rest`.

Every step uses the public client API only and checks what the answer must hold (shapes,
lengths, the names it gave); what it saves is named ``conformance-<hex>-...`` and recorded
in the :class:`Probe` for the cleanup.
"""

from __future__ import annotations

import math
from typing import Any

from tinkex_cli._conformance import NotOffered, Probe, Step, Wrong, describe
from tinkex_types import LOSSES, AdamParams, Datum, LossSpec, ModelInput, SamplingParams

__all__ = [
    "CLOSE_STEP",
    "UNLOAD_STEP",
    "loss_steps",
    "sampling_steps",
    "session_steps",
    "training_steps",
]

#: The tokens of the one training example (ids below every tokenizer's vocabulary size).
TOKENS = (1, 40, 41, 42, 43, 44, 45, 2)
PROMPT = (1, 40, 41, 42)
MAX_TOKENS = 8


def _datum(spec: LossSpec | None = None) -> Datum:
    n = len(TOKENS) - 1
    values: dict[str, list[float]] = {
        "weights": [1.0] * n,
        "logprobs": [-2.0] * n,
        "advantages": [0.5 if i % 2 else -0.5 for i in range(n)],
        "sequence_ratio_mask": [1.0] * n,
    }
    names = ("weights",) if spec is None else spec.required_inputs + spec.optional_inputs
    inputs: dict[str, Any] = {"target_tokens": list(TOKENS[1:])}
    inputs.update({k: values[k] for k in names if k != "target_tokens"})
    return Datum(model_input=ModelInput.from_ints(list(TOKENS[:-1])), loss_fn_inputs=inputs)


def _finite_logprobs(values: Any, what: str) -> None:
    for value in values:
        if value is None or not math.isfinite(value) or value > 1e-4:
            raise Wrong(f"{what}: {value!r} is not a log-probability")


# -- session -----------------------------------------------------------------------------------


def _create_session(probe: Probe) -> str:
    from tinkex_clients import ServiceClient

    probe.service = ServiceClient(config=probe.config, hooks=probe.hooks)
    if not probe.service.session_id:
        raise Wrong("create_session returned no session_id")
    return f"session {probe.service.session_id}"


def _capabilities(probe: Probe) -> str:
    caps = probe.require_service().get_server_capabilities()
    names = caps.model_names()
    if probe.base_model is None:
        if not names:
            raise Wrong("the server lists no models (pass --base-model to pick one)")
        probe.base_model = names[0]
    for model in caps.supported_models:
        if model.model_name == probe.base_model:
            probe.model = model
    listed = "" if probe.model is not None else " (not listed: given by --base-model)"
    return f"{len(names)} model(s); base model {probe.base_model}{listed}"


def session_steps() -> list[Step]:
    return [
        Step("create_session", "ServiceClient(...)", _create_session),
        Step(
            "get_server_capabilities",
            "ServiceClient.get_server_capabilities()",
            _capabilities,
            needs=("create_session",),
        ),
    ]


# -- training ----------------------------------------------------------------------------------


def _create_lora(probe: Probe) -> str:
    assert probe.base_model is not None
    training = probe.require_service().create_lora_training_client(
        probe.base_model, rank=4, seed=0, user_metadata={"created_by": "tinkex conformance"}
    )
    probe.training = training
    if not training.model_id:
        raise Wrong("create_model returned no model_id")
    return f"model {training.model_id}"


def _get_info(probe: Probe) -> str:
    training = probe.require_training()
    info = training.get_info()
    if info.model_id and info.model_id != training.model_id:
        raise Wrong(f"get_info answered model {info.model_id!r}, not {training.model_id!r}")
    if info.lora_rank is not None and info.lora_rank != 4:
        raise Wrong(f"lora_rank is {info.lora_rank}, the model was created with rank 4")
    return describe(f"model_name {info.model_name}, lora_rank {info.lora_rank}")


def _check_output(out: Any, what: str) -> str:
    outputs = out.loss_fn_outputs
    if len(outputs) != 1:
        raise Wrong(f"{what}: {len(outputs)} loss_fn_outputs for 1 datum")
    logprobs = outputs[0].get("logprobs")
    if logprobs is not None:
        values = logprobs.tolist()
        if len(values) != len(TOKENS) - 1:
            raise Wrong(f"{what}: {len(values)} logprobs for {len(TOKENS) - 1} target tokens")
        _finite_logprobs(values, f"{what} logprobs")
    loss = out.metrics.get("loss:sum")
    return f"loss:sum {loss:.4g}" if isinstance(loss, float) else describe(out.metrics)


def _forward(probe: Probe) -> str:
    out = probe.require_training().forward([_datum()], "cross_entropy").result(probe.wait)
    return _check_output(out, "forward")


def _loss_step(name: str) -> Step:
    spec = LOSSES[name]

    def run(probe: Probe) -> str:
        training = probe.require_training()
        loss_fn: Any = name  # every name of the loss table, whatever LossFnType lists
        out = training.forward_backward([_datum(spec)], loss_fn).result(probe.wait)
        return _check_output(out, f"forward_backward({name})")

    return Step(
        f"forward_backward:{name}",
        f"TrainingClient.forward_backward(loss_fn={name!r})",
        run,
        needs=("create_lora_training_client",),
        gate="train",
        loss=None if name == "cross_entropy" else name,
    )


def loss_steps() -> list[Step]:
    """One row per loss of ``tinkex_types.LOSSES``; a 4xx naming a loss other than
    cross_entropy means the server does not offer it."""
    return [_loss_step(name) for name in LOSSES]


def _optim_step(probe: Probe) -> str:
    out = probe.require_training().optim_step(AdamParams(learning_rate=1e-3)).result(probe.wait)
    return describe(out.metrics) if out.metrics else "no metrics"


def _save_state(probe: Probe) -> str:
    training = probe.require_training()
    result = training.save_state(probe.name("state")).result(probe.wait)
    probe.created.append(result.path)
    probe.state_path = result.path
    if not result.path.startswith("tinker://") or probe.name("state") not in result.path:
        raise Wrong(f"save_state answered path {result.path!r}")
    return result.path


def _load(optimizer: bool) -> Any:
    def run(probe: Probe) -> str:
        training = probe.require_training()
        assert probe.state_path is not None
        load = training.load_state_with_optimizer if optimizer else training.load_state
        load(probe.state_path).result(probe.wait)
        return f"loaded {probe.state_path}"

    return run


def _from_state(probe: Probe) -> str:
    assert probe.state_path is not None
    client = probe.require_service().create_training_client_from_state(probe.state_path)
    probe.extra_training.append(client)
    base = client.get_base_model()
    if probe.base_model is not None and base != probe.base_model:
        raise Wrong(f"the new run's base model is {base!r}, the checkpoint's {probe.base_model!r}")
    return f"model {client.model_id}"


def _save_for_sampler(probe: Probe) -> str:
    training = probe.require_training()
    result = training.save_weights_for_sampler(probe.name("sampler")).result(probe.wait)
    assert result.path is not None
    probe.created.append(result.path)
    probe.sampler_path = result.path
    if not result.path.startswith("tinker://") or probe.name("sampler") not in result.path:
        raise Wrong(f"save_weights_for_sampler answered path {result.path!r}")
    return result.path


def _save_and_sample(probe: Probe) -> str:
    sampler = probe.require_training().save_weights_and_get_sampling_client()
    out = sampler.sample(
        ModelInput.from_ints(list(PROMPT)), 1, SamplingParams(max_tokens=2, temperature=0.0)
    ).result(probe.wait)
    if len(out.sequences) != 1:
        raise Wrong(f"{len(out.sequences)} sequences for num_samples=1")
    return f"sampler {sampler.sampling_session_id}"


def training_steps() -> list[Step]:
    lora = ("create_lora_training_client",)
    train: dict[str, Any] = {"gate": "train"}
    return [
        Step(
            "create_lora_training_client",
            "ServiceClient.create_lora_training_client(rank=4)",
            _create_lora,
            needs=("get_server_capabilities",),
            **train,
        ),
        Step("get_info", "TrainingClient.get_info()", _get_info, needs=lora, **train),
        Step(
            "forward",
            "TrainingClient.forward(loss_fn='cross_entropy')",
            _forward,
            lora,
            **train,
        ),
        *loss_steps(),
        Step("optim_step", "TrainingClient.optim_step(AdamParams)", _optim_step, lora, **train),
        Step("save_state", "TrainingClient.save_state(name)", _save_state, lora, **train),
        Step(
            "load_state",
            "TrainingClient.load_state(path)",
            _load(False),
            needs=("save_state",),
            **train,
        ),
        Step(
            "load_state_with_optimizer",
            "TrainingClient.load_state_with_optimizer(path)",
            _load(True),
            needs=("save_state",),
            **train,
        ),
        Step(
            "create_training_client_from_state",
            "ServiceClient.create_training_client_from_state(path)",
            _from_state,
            needs=("save_state",),
            **train,
        ),
        Step(
            "save_weights_for_sampler",
            "TrainingClient.save_weights_for_sampler(name)",
            _save_for_sampler,
            lora,
            **train,
        ),
        Step(
            "save_weights_and_get_sampling_client",
            "TrainingClient.save_weights_and_get_sampling_client()",
            _save_and_sample,
            lora,
            gate="sample",
        ),
    ]


# -- sampling ----------------------------------------------------------------------------------


def _create_sampler(probe: Probe) -> str:
    assert probe.sampler_path is not None
    sampler = probe.require_service().create_sampling_client(model_path=probe.sampler_path)
    probe.sampler = sampler
    return f"sampler {sampler.sampling_session_id}"


def _sample(probe: Probe) -> str:
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)
    out = (
        probe.require_sampler()
        .sample(ModelInput.from_ints(list(PROMPT)), 2, params)
        .result(probe.wait)
    )
    if len(out.sequences) != 2:
        raise Wrong(f"{len(out.sequences)} sequences for num_samples=2")
    for seq in out.sequences:
        if not 1 <= len(seq.tokens) <= MAX_TOKENS:
            raise Wrong(f"{len(seq.tokens)} tokens with max_tokens={MAX_TOKENS}")
    if out.sequences[0].tokens != out.sequences[1].tokens:
        raise Wrong("two greedy (temperature 0) samples of one prompt differ")
    probe.greedy = out
    return f"2 sequences, {len(out.sequences[0].tokens)} tokens each"


def _seeded(probe: Probe) -> str:
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, seed=1234)
    sampler = probe.require_sampler()
    prompt = ModelInput.from_ints(list(PROMPT))
    first = sampler.sample(prompt, 1, params).result(probe.wait).sequences[0].tokens
    again = sampler.sample(prompt, 1, params).result(probe.wait).sequences[0].tokens
    if first != again:
        raise Wrong(f"seed=1234 sampled {first} then {again}")
    return f"seed 1234 gave {len(first)} tokens twice"


def _stop(probe: Probe) -> str:
    assert probe.greedy is not None
    greedy = probe.greedy.sequences[0].tokens
    stop = greedy[min(2, len(greedy) - 1)]
    first = greedy.index(stop)
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, stop=[stop])
    out = (
        probe.require_sampler()
        .sample(ModelInput.from_ints(list(PROMPT)), 1, params)
        .result(probe.wait)
    )
    seq = out.sequences[0]
    if seq.tokens not in (greedy[: first + 1], greedy[:first]) or seq.stop_reason != "stop":
        raise Wrong(
            f"stop=[{stop}] gave {seq.tokens} ({seq.stop_reason}); the greedy sample is "
            f"{greedy}, so it should end at index {first} with stop_reason 'stop'"
        )
    return f"stopped at token {stop} after {len(seq.tokens)} token(s)"


def _logprobs(probe: Probe) -> str:
    assert probe.greedy is not None
    for seq in probe.greedy.sequences:
        if seq.logprobs is None:
            raise Wrong("the sampled sequences carry no logprobs")
        if len(seq.logprobs) != len(seq.tokens):
            raise Wrong(f"{len(seq.logprobs)} logprobs for {len(seq.tokens)} tokens")
        _finite_logprobs(seq.logprobs, "sampled logprobs")
    return "one logprob per sampled token"


def _prompt_logprobs(probe: Probe) -> str:
    params = SamplingParams(max_tokens=1, temperature=0.0)
    out = (
        probe.require_sampler()
        .sample(ModelInput.from_ints(list(PROMPT)), 1, params, include_prompt_logprobs=True)
        .result(probe.wait)
    )
    values = out.prompt_logprobs
    if values is None or len(values) != len(PROMPT):
        raise Wrong(f"prompt_logprobs {values!r} for a {len(PROMPT)}-token prompt")
    if values[0] is not None:
        raise Wrong(f"the first prompt logprob is {values[0]!r}, not None")
    _finite_logprobs(values[1:], "prompt_logprobs")
    probe.prompt_logprobs = list(values)
    return f"{len(values)} prompt logprobs"


def _topk(probe: Probe) -> str:
    params = SamplingParams(max_tokens=1, temperature=0.0)
    out = (
        probe.require_sampler()
        .sample(
            ModelInput.from_ints(list(PROMPT)),
            1,
            params,
            include_prompt_logprobs=True,
            topk_prompt_logprobs=2,
        )
        .result(probe.wait)
    )
    topk = out.topk_prompt_logprobs
    if topk is None:
        raise NotOffered("the answer has no topk_prompt_logprobs")
    if len(topk) != len(PROMPT) or any(e is not None and len(e) > 2 for e in topk[1:]):
        raise Wrong(f"topk_prompt_logprobs {describe(topk)} for k=2 and {len(PROMPT)} tokens")
    return "k=2 per prompt token"


def _compute_logprobs(probe: Probe) -> str:
    prompt = ModelInput.from_ints(list(PROMPT))
    values = probe.require_sampler().compute_logprobs(prompt).result(probe.wait)
    if len(values) != len(PROMPT) or values[0] is not None:
        raise Wrong(f"compute_logprobs answered {values!r} for {len(PROMPT)} tokens")
    _finite_logprobs(values[1:], "compute_logprobs")
    if probe.prompt_logprobs is not None:
        for a, b in zip(values[1:], probe.prompt_logprobs[1:], strict=True):
            if a is not None and b is not None and abs(a - b) > 1e-3:
                raise Wrong(f"compute_logprobs {values} differ from prompt_logprobs")
    return f"{len(values)} logprobs"


def sampling_steps() -> list[Step]:
    sampler = ("create_sampling_client",)
    gate: dict[str, Any] = {"gate": "sample"}
    greedy = ("sample",)
    return [
        Step(
            "create_sampling_client",
            "ServiceClient.create_sampling_client(model_path)",
            _create_sampler,
            needs=("save_weights_for_sampler",),
            **gate,
        ),
        Step("sample", "SamplingClient.sample(n=2, temperature=0)", _sample, sampler, **gate),
        Step("sample:seed", "SamplingClient.sample(seed=1234) twice", _seeded, sampler, **gate),
        Step("sample:stop", "SamplingClient.sample(stop=[token])", _stop, greedy, **gate),
        Step("sample:logprobs", "SampledSequence.logprobs", _logprobs, greedy, **gate),
        Step(
            "sample:prompt_logprobs",
            "SamplingClient.sample(include_prompt_logprobs=True)",
            _prompt_logprobs,
            sampler,
            **gate,
        ),
        Step(
            "sample:topk_prompt_logprobs",
            "SamplingClient.sample(topk_prompt_logprobs=2)",
            _topk,
            sampler,
            **gate,
        ),
        Step(
            "compute_logprobs",
            "SamplingClient.compute_logprobs(prompt)",
            _compute_logprobs,
            sampler,
            **gate,
        ),
    ]


def _unload(probe: Probe) -> str:
    training = probe.require_training()
    training.unload_model().result(probe.wait)
    return f"unloaded {training.model_id}"


UNLOAD_STEP = Step(
    "unload_model",
    "TrainingClient.unload_model()",
    _unload,
    needs=("create_lora_training_client",),
    optional=True,
)


def _close(probe: Probe) -> str:
    from tinkex_cli._conformance import close_service

    close_service(probe)
    return "session closed"


CLOSE_STEP = Step("close", "ServiceClient.close()", _close, needs=("create_session",))
