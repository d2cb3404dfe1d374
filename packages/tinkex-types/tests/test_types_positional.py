"""tinker 0.38's dataclass-style models take their fields by position too, in tinker's
order; SampledSequence and SampleResponse also take and give numpy arrays."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from pydantic import ValidationError

from tinkex_types import (
    Datum,
    ForwardBackwardInput,
    ForwardBackwardOutput,
    ForwardBackwardRequest,
    ForwardRequest,
    ModelInput,
    PromptAltTokens,
    PromptProvenanceSpan,
    SampledSequence,
    SampleResponse,
    TensorData,
)
from tinkex_types._sample_arrays import MASK_LOGPROB, TopkLogprobs

POSITIONAL = {
    Datum: ["model_input", "loss_fn_inputs", "model_input_spans", "loss_fn_input_spans"],
    ForwardBackwardOutput: ["loss_fn_output_type", "loss_fn_outputs", "metrics"],
    ForwardBackwardInput: ["data", "loss_fn", "loss_fn_config"],
    ForwardBackwardRequest: ["forward_backward_input", "model_id", "seq_id"],
    ForwardRequest: ["forward_input", "model_id", "seq_id"],
    PromptAltTokens: ["tokens", "logprobs"],
    SampledSequence: ["stop_reason", "sequence_id", "tokens_np", "logprobs_np", "topk_logprobs_np"],
    SampleResponse: [
        "sequences",
        "prompt_logprobs_np",
        "topk_prompt_logprobs_np",
        "target_prompt_logprobs",
        "prompt_cache_hit_tokens",
        "prompt_alt_tokens",
    ],
}


@pytest.mark.parametrize("cls", list(POSITIONAL), ids=lambda c: c.__name__)
def test_signature_lists_tinkers_positions_first(cls: type) -> None:
    params = list(inspect.signature(cls).parameters.values())
    positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == POSITIONAL[cls]
    rest = [p for p in params if p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in rest)


def _datum() -> Datum:
    return Datum(ModelInput.from_ints([1, 2]), {"target_tokens": [2, 3]})


def test_positional_equals_keywords() -> None:
    datum = _datum()
    assert datum == Datum(
        model_input=ModelInput.from_ints([1, 2]), loss_fn_inputs={"target_tokens": [2, 3]}
    )
    assert datum.loss_fn_inputs["target_tokens"].dtype == "int64"
    spans = [PromptProvenanceSpan(sequence_id="s", length=2)]
    assert Datum(datum.model_input, datum.loss_fn_inputs, spans, spans).model_input_spans == spans
    fb_in = ForwardBackwardInput([datum], "cross_entropy")
    assert fb_in == ForwardBackwardInput(data=[datum], loss_fn="cross_entropy")
    assert ForwardBackwardRequest(fb_in, "m", 3).seq_id == 3
    assert ForwardRequest(fb_in, "m").forward_input == fb_in
    out = ForwardBackwardOutput("ArrayRecord", [], {"loss:sum": 1.0})
    assert out.metrics == {"loss:sum": 1.0}
    t = TensorData(data=[1], dtype="int64", shape=[1, 1])
    assert PromptAltTokens(t, t).tokens == t


def test_too_many_or_twice_given_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"at most 2 positional arguments \(tokens, logprobs\)"):
        PromptAltTokens(1, 2, 3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values for argument 'model_input'"):
        Datum(ModelInput.from_ints([1]), model_input=ModelInput.from_ints([1]))  # type: ignore[misc]


def test_bad_positional_value_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        ForwardBackwardInput([], "no_such_loss")
    assert [e["loc"] for e in info.value.errors()] == [("loss_fn",)]


def test_sampled_sequence_from_numpy_like_tinker() -> None:
    topk = TopkLogprobs(
        token_ids=np.array([[5, 6], [7, 0]], dtype=np.int32),
        logprobs=np.array([[-0.1, -2.0], [-0.3, MASK_LOGPROB]], dtype=np.float32),
    )
    seq = SampledSequence(
        "stop",
        "s:0",
        np.array([5, 7], dtype=np.int32),
        np.array([-0.1, -0.3], dtype=np.float32),
        topk,
    )
    assert seq.tokens == [5, 7]
    assert all(isinstance(t, int) for t in seq.tokens)
    assert seq.logprobs == pytest.approx([-0.1, -0.3])
    assert seq.topk_logprobs is not None
    assert [[t for t, _ in row or []] for row in seq.topk_logprobs] == [[5, 6], [7]]
    assert seq.sequence_id == "s:0"
    assert seq.tokens_np.dtype == np.int32
    assert seq.tokens_np.tolist() == [5, 7]
    assert seq.logprobs_np is not None
    assert seq.logprobs_np.dtype == np.float32
    back = seq.topk_logprobs_np
    assert back is not None
    assert back.token_ids.tolist() == [[5, 6], [7, 0]]
    assert back.logprobs[1, 1] == np.float32(MASK_LOGPROB)
    # JSON keeps the list shape 0.16.1 reads
    assert SampledSequence.model_validate_json(seq.to_json()) == seq
    assert seq.to_json_dict()["tokens"] == [5, 7]


def test_sampled_sequence_defaults_and_refusals() -> None:
    empty = SampledSequence(stop_reason="length")
    assert (empty.tokens, empty.logprobs, empty.logprobs_np, empty.topk_logprobs_np) == (
        [],
        None,
        None,
        None,
    )
    with pytest.raises(ValidationError):  # parsing still requires tokens
        SampledSequence.model_validate({"stop_reason": "stop"})
    with pytest.raises(ValueError, match="tokens_np must be a 1-D array"):
        SampledSequence("stop", None, np.zeros((2, 2), dtype=np.int32))
    with pytest.raises(ValidationError, match="one logprob per generated token"):
        SampledSequence("stop", None, np.array([1, 2]), np.array([-1.0]))


def test_sample_response_from_numpy_like_tinker() -> None:
    seq = SampledSequence(stop_reason="stop", tokens=[1])
    prompt = np.array([np.nan, -1.5, -0.25], dtype=np.float32)
    topk = TopkLogprobs(
        token_ids=np.zeros((3, 1), dtype=np.int32),
        logprobs=np.array([[MASK_LOGPROB], [-1.0], [-2.0]], dtype=np.float32),
    )
    resp = SampleResponse([seq], prompt, topk, None, 2)
    assert resp.prompt_logprobs == [None, -1.5, -0.25]
    assert resp.topk_prompt_logprobs == [None, [(0, -1.0)], [(0, -2.0)]]
    assert resp.prompt_cache_hit_tokens == 2
    arr = resp.prompt_logprobs_np
    assert arr is not None
    assert math.isnan(arr[0])
    assert arr[1:].tolist() == [-1.5, -0.25]
    assert SampleResponse(sequences=[seq]).prompt_logprobs_np is None
    assert SampleResponse.model_validate_json(resp.to_json()) == resp
