"""TrainingClient mechanics against the fake: seq_id order, pipelining, chunking, errors,
validation before sending, custom-loss wire traffic."""

from __future__ import annotations

import threading

import pytest
import torch

from tinkex_clients import ServiceClient, TrainingClient
from tinkex_types import (
    AdamParams,
    Datum,
    ModelInput,
    RequestErrorCategory,
    RequestFailedError,
    TinkexValidationError,
)

from .conftest import FakeTinker


def _datum(tokens: list[int], weights: list[float] | None = None) -> Datum:
    n = len(tokens) - 1
    return Datum(
        model_input=ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights or [1.0] * n},
    )


@pytest.fixture
def tc(service: ServiceClient) -> TrainingClient:
    return service.create_lora_training_client("tinkex/tiny-llama-100k", rank=4)


def test_first_request_is_seq_id_one_and_counts_up(tc: TrainingClient, fake: FakeTinker) -> None:
    assert tc.next_seq_id == 1
    tc.forward([_datum([1, 2, 3])], "cross_entropy").result(5)
    tc.forward_backward([_datum([1, 2, 3])], "cross_entropy").result(5)
    tc.optim_step(AdamParams(learning_rate=0.1)).result(5)
    tc.save_state("s").result(5)
    tc.save_weights_for_sampler("w").result(5)
    assert fake.models[tc.model_id].seq_ids == [1, 2, 3, 4, 5]
    assert tc.next_seq_id == 6
    create = fake.bodies("/api/v1/create_model")[0]
    assert create["model_seq_id"] == 0
    assert create["lora_config"]["rank"] == 4
    assert create["lora_config"]["seed"] is None


def test_pipelined_calls_run_in_call_order(tc: TrainingClient, fake: FakeTinker) -> None:
    fake.poll_delay = 0.01
    futures = []
    for i in range(4):
        futures.append(tc.forward_backward([_datum([1, 2, 3 + i])], "cross_entropy"))
        futures.append(tc.optim_step(AdamParams(learning_rate=0.01)))
    results = [f.result(10) for f in futures]
    assert fake.models[tc.model_id].seq_ids == list(range(1, 9))
    # each forward_backward saw the weights after the previous optim_step
    losses = [r.metrics["loss:sum"] for r in results[0::2]]
    thetas = [r.metrics["theta:mean"] for r in results[1::2]]  # type: ignore[union-attr]
    assert thetas == sorted(thetas, reverse=True)
    assert losses[1] < losses[0] + 10  # sanity: all finite
    order = [p for p in fake.paths() if p in ("/api/v1/forward_backward", "/api/v1/optim_step")]
    assert order == ["/api/v1/forward_backward", "/api/v1/optim_step"] * 4


def test_calls_from_many_threads_keep_seq_ids_unique(tc: TrainingClient, fake: FakeTinker) -> None:
    futures = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            f = tc.forward([_datum([4, 5, 6])], "cross_entropy")
            with lock:
                futures.append(f)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for f in futures:
        f.result(10)
    assert fake.models[tc.model_id].seq_ids == list(range(1, 21))


def test_large_batch_is_chunked_and_combined(tc: TrainingClient, fake: FakeTinker) -> None:
    data = [_datum([1, 2, 3, i]) for i in range(5)]
    whole = tc.forward(data, "cross_entropy").result(5)
    tc.max_chunk_items = 2
    chunked = tc.forward(data, "cross_entropy").result(5)
    bodies = fake.bodies("/api/v1/forward")
    assert [len(b["forward_input"]["data"]) for b in bodies] == [5, 2, 2, 1]
    assert [b["seq_id"] for b in bodies] == [1, 2, 3, 4]
    assert chunked.metrics["loss:sum"] == pytest.approx(whole.metrics["loss:sum"])
    assert chunked.metrics["datums:sum"] == 5.0
    assert chunked.metrics["chunk:unique"] == 2.0
    assert chunked.metrics["chunk:unique_3"] == 1.0
    assert [o["logprobs"].data for o in chunked.loss_fn_outputs] == [
        o["logprobs"].data for o in whole.loss_fn_outputs
    ]


def test_server_failure_carries_request_id_and_category(
    tc: TrainingClient, fake: FakeTinker
) -> None:
    fake.fail_forward_backward = True
    fut = tc.forward_backward([_datum([1, 2, 3])], "cross_entropy")
    with pytest.raises(RequestFailedError) as info:
        fut.result(5)
    assert info.value.category is RequestErrorCategory.USER
    assert info.value.request_id
    assert info.value.request_id.startswith("req-")
    assert "bad targets" in str(info.value)
    # the failure does not block later requests
    fake.fail_forward_backward = False
    tc.optim_step(AdamParams()).result(5)
    assert fake.models[tc.model_id].seq_ids == [1, 2]


def test_try_again_polls_are_followed(tc: TrainingClient, fake: FakeTinker) -> None:
    fake.try_again_polls = 2
    out = tc.forward([_datum([1, 2, 3])], "cross_entropy").result(5)
    assert out.metrics["loss:sum"] > 0
    assert fake.paths().count("/api/v1/retrieve_future") >= 3


BAD_INPUTS = [
    ([], "cross_entropy", None, "data"),
    ("not a list", "cross_entropy", None, "data"),
    ([_datum([1, 2, 3])], "hinge", None, "loss_fn"),
    ([_datum([1, 2, 3])], "cross_entropy", {"beta": "x"}, "loss_fn_config['beta']"),
    (
        [
            Datum(
                model_input=ModelInput.from_ints([1, 2, 3]),
                loss_fn_inputs={"target_tokens": [2, 3], "weights": [1.0, 1.0]},
            )
        ],
        "cross_entropy",
        None,
        "data[0].loss_fn_inputs.target_tokens",
    ),
    (
        [
            Datum(
                model_input=ModelInput.from_ints([1, 2]),
                loss_fn_inputs={"target_tokens": [2, 3], "weights": [1.0]},
            )
        ],
        "cross_entropy",
        None,
        "data[0].loss_fn_inputs.weights",
    ),
    (
        [Datum(model_input=ModelInput.from_ints([1, 2]), loss_fn_inputs={"target_tokens": [2, 3]})],
        "cross_entropy",
        None,
        "data[0].loss_fn_inputs.weights",
    ),
    ([_datum([1, 2, 3])], "ppo", None, "data[0].loss_fn_inputs.logprobs"),
    ([42], "cross_entropy", None, "data[0]"),
]


@pytest.mark.parametrize(("data", "loss", "config", "field"), BAD_INPUTS)
def test_bad_input_raises_before_sending(
    tc: TrainingClient, fake: FakeTinker, data: object, loss: str, config: object, field: str
) -> None:
    sent = len(fake.requests)
    with pytest.raises(TinkexValidationError) as info:
        tc.forward_backward(data, loss, config)  # type: ignore[arg-type]
    assert info.value.field == field
    assert len(fake.requests) == sent
    assert tc.next_seq_id == 1  # nothing was reserved either


def test_other_bad_arguments(tc: TrainingClient, fake: FakeTinker) -> None:
    sent = len(fake.requests)
    cases = [
        (lambda: tc.optim_step("fast"), "optim_params"),  # type: ignore[arg-type]
        (lambda: tc.optim_step(adam_params="fast"), "adam_params"),  # type: ignore[arg-type]
        (lambda: tc.optim_step(AdamParams(), adam_params=AdamParams()), "adam_params"),
        (lambda: tc.optim_step({"learning_rate": -1}), "optim_params"),
        (lambda: tc.save_state(""), "name"),
        (lambda: tc.save_state("a/b"), "name"),
        (lambda: tc.save_state("ok", ttl_seconds=0), "ttl_seconds"),
        (lambda: tc.load_state("tinker://run/sampler_weights/x"), "path"),
        (lambda: tc.load_state("/tmp/weights"), "path"),
        (lambda: tc.load_state_with_optimizer("tinker://"), "path"),
        (lambda: tc.save_weights_for_sampler("tinker://x/y/z"), "name"),
        (lambda: tc.forward_backward_custom([_datum([1, 2, 3])], "not callable"), "loss_fn"),  # type: ignore[arg-type]
        (
            lambda: tc.forward_backward_custom(
                [_datum([1, 2, 3])], lambda d, lp: (0, {}), loss_type_input="probs"
            ),
            "loss_type_input",
        ),  # type: ignore[arg-type]
    ]
    for call, field in cases:
        with pytest.raises(TinkexValidationError) as info:
            call()
        assert info.value.field == field, (field, info.value)
    assert len(fake.requests) == sent


def test_custom_loss_sends_negative_gradients(tc: TrainingClient, fake: FakeTinker) -> None:
    data = [_datum([1, 2, 3, 4]), _datum([5, 6, 7])]
    data[1] = Datum(model_input=data[1].model_input, loss_fn_inputs={"target_tokens": [6, 7]})

    def loss_fn(
        batch: list[Datum], logprobs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        assert [lp.shape for lp in logprobs] == [torch.Size([3]), torch.Size([2])]
        loss = sum((lp * lp).sum() for lp in logprobs)
        return loss, {"custom": 1.5, "tensor_metric": torch.tensor(2.0)}

    out = tc.forward_backward_custom(data, loss_fn).result(10)
    fwd = fake.bodies("/api/v1/forward")[0]
    assert fwd["forward_input"]["loss_fn"] == "cross_entropy"
    assert fwd["forward_input"]["data"][1]["loss_fn_inputs"]["weights"]["data"] == [0.0, 0.0]
    bwd = fake.bodies("/api/v1/forward_backward")[0]["forward_backward_input"]
    for datum, targets in zip(bwd["data"], ([2, 3, 4], [6, 7]), strict=True):
        lps = [-(1.0 + (t % 5) / 10.0) for t in targets]
        assert datum["loss_fn_inputs"]["weights"]["data"] == pytest.approx([-2 * lp for lp in lps])
    assert out.metrics["custom"] == 1.5
    assert out.metrics["tensor_metric"] == 2.0
    assert "loss:sum" in out.metrics
    assert fake.models[tc.model_id].seq_ids == [1, 2]


def test_custom_loss_error_keeps_seq_ids_gap_free(tc: TrainingClient, fake: FakeTinker) -> None:
    def broken(
        batch: list[Datum], logprobs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise ZeroDivisionError("user bug")

    fut = tc.forward_backward_custom([_datum([1, 2, 3])], broken)
    nxt = tc.optim_step(AdamParams())
    with pytest.raises(ZeroDivisionError, match="user bug"):
        fut.result(10)
    nxt.result(10)
    assert fake.models[tc.model_id].seq_ids == [1, 2, 3]
    # the filler for the backward slot is a side-effect-free forward
    assert [b["seq_id"] for b in fake.bodies("/api/v1/forward")] == [1, 2]
    assert fake.bodies("/api/v1/forward_backward") == []


def test_custom_loss_validates_its_return_value(tc: TrainingClient) -> None:
    def no_grad(
        batch: list[Datum], logprobs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return torch.tensor(1.0), {}

    with pytest.raises(TinkexValidationError, match="does not depend"):
        tc.forward_backward_custom([_datum([1, 2, 3])], no_grad).result(10)


def test_cancelled_operation_releases_its_turn(tc: TrainingClient, fake: FakeTinker) -> None:
    fake.submit_delay = 0.3  # the first POST is still in flight while `second` waits
    first = tc.forward([_datum([1, 2, 3])], "cross_entropy")
    second = tc.forward([_datum([1, 2, 3])], "cross_entropy")
    third = tc.forward([_datum([1, 2, 3])], "cross_entropy")
    assert second.cancel()
    first.result(5)
    third.result(5)
    # seq_id 2 was given up; the server sees 1 then 3 and nothing hangs
    assert fake.models[tc.model_id].seq_ids == [1, 3]


def test_info_tokenizer_fallback_and_unload(tc: TrainingClient, fake: FakeTinker) -> None:
    info = tc.get_info()
    assert info.model_data.model_name == "tinkex/tiny-llama-100k"
    assert info.lora_rank == 4
    assert tc.get_base_model() == "tinkex/tiny-llama-100k"


def test_save_weights_and_get_sampling_client(tc: TrainingClient, fake: FakeTinker) -> None:
    sc = tc.save_weights_and_get_sampling_client()
    body = fake.bodies("/api/v1/save_weights_for_sampler")[-1]
    assert "path" not in body
    assert body["sampling_session_seq_id"] == 0
    assert sc.sampling_session_id == f"{tc.model_id}:sample:0"
    named = tc.save_weights_and_get_sampling_client("keep")
    assert fake.bodies("/api/v1/save_weights_for_sampler")[-1]["path"] == "keep"
    assert named.model_path == f"tinker://{tc.model_id}/sampler_weights/keep"
    # both counters share the session's sampling_session_seq_id sequence
    assert fake.bodies("/api/v1/create_sampling_session")[-1]["sampling_session_seq_id"] == 1
