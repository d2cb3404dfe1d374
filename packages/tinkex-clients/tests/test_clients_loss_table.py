"""Client-side loss validation is driven by the loss table of tinkex-types (LOSSES)."""

from __future__ import annotations

import pytest

from tinkex_clients import ServiceClient, TrainingClient
from tinkex_clients._validate import as_loss_fn, as_loss_fn_config, check_loss_inputs
from tinkex_types import LOSSES, PER_TOKEN_INPUTS, Datum, ModelInput, TinkexValidationError

from .conftest import FakeTinker

_FLOAT_INPUTS = {"weights", "logprobs", "advantages", "sequence_ratio_mask"}


def _full_datum(keys: set[str], n: int = 3) -> Datum:
    inputs: dict[str, object] = {}
    for key in sorted(keys):
        inputs[key] = [1.0] * n if key in _FLOAT_INPUTS else list(range(2, 2 + n))
    return Datum(model_input=ModelInput.from_ints(list(range(1, 1 + n))), loss_fn_inputs=inputs)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_table_entry_is_accepted_and_its_required_inputs_enforced(name: str) -> None:
    spec = LOSSES[name]
    assert as_loss_fn(name) == name
    check_loss_inputs([_full_datum(set(spec.required_inputs))], name)
    for missing in spec.required_inputs:
        datum = _full_datum(set(spec.required_inputs) - {missing})
        with pytest.raises(TinkexValidationError) as info:
            check_loss_inputs([datum], name)
        assert info.value.field == f"data[0].loss_fn_inputs.{missing}"
        assert all(key in info.value.problem for key in spec.required_inputs)


@pytest.mark.parametrize("key", PER_TOKEN_INPUTS)
def test_every_per_token_input_must_match_the_targets(key: str) -> None:
    datum = _full_datum({"target_tokens", "weights"})
    inputs = dict(datum.loss_fn_inputs)
    inputs[key] = _full_datum({key}, n=2).loss_fn_inputs[key]
    bad = Datum(model_input=datum.model_input, loss_fn_inputs=inputs)
    with pytest.raises(TinkexValidationError) as info:
        check_loss_inputs([bad], "cross_entropy")
    assert info.value.field == f"data[0].loss_fn_inputs.{key}"


def test_unknown_loss_names_the_field_and_lists_the_table() -> None:
    with pytest.raises(TinkexValidationError) as info:
        as_loss_fn("hinge", "forward_backward_input.loss_fn")
    assert info.value.field == "forward_backward_input.loss_fn"
    assert info.value.fix is not None
    assert all(name in info.value.fix for name in LOSSES)


def test_config_keys_of_the_loss_follow_its_table_entry() -> None:
    # Unknown keys pass (the server ignores them); the loss's own keys must be in order.
    assert as_loss_fn_config({"beta": 1.0, "other": 2}, loss_fn="ppo") == {
        "beta": 1.0,
        "other": 2.0,
    }
    with pytest.raises(TinkexValidationError) as info:
        as_loss_fn_config({"clip_low_threshold": 1.5, "clip_high_threshold": 1.2}, loss_fn="ppo")
    assert info.value.field == "loss_fn_config.clip_low_threshold"


def test_training_client_refuses_an_inverted_clip_before_sending(
    service: ServiceClient, fake: FakeTinker
) -> None:
    tc: TrainingClient = service.create_lora_training_client("tinkex/tiny-llama-100k", rank=4)
    datum = _full_datum(set(LOSSES["ppo"].required_inputs))
    sent = len(fake.requests)
    with pytest.raises(TinkexValidationError) as info:
        tc.forward_backward([datum], "ppo", {"clip_low_threshold": 2.0})
    assert info.value.field == "loss_fn_config.clip_low_threshold"
    assert len(fake.requests) == sent
    assert tc.next_seq_id == 1
