"""A future lost by a server restart (410) fails its TrainingClient call with an error that
names the request and the last one that completed (regression: it used to say only
"Promise expired ...; submit a new request", which a TrainingClient cannot do)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tinkex_clients import ServiceClient
from tinkex_types import AdamParams, APIStatusError, Datum, Hooks, ModelInput, TensorData

TINY = "tinkex/tiny-llama-100k"


class LosingServer:
    """Wraps the fake service; futures of the chosen submit paths answer 410 when polled."""

    def __init__(self, fake: object) -> None:
        self.fake = fake
        self.lose: set[str] = set()
        self.lost: set[str] = set()

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/retrieve_future":
            rid = json.loads(request.content)["request_id"]
            if rid in self.lost:
                detail = f"future {rid!r} was lost when the server restarted; submit it again"
                return httpx.Response(410, json={"detail": detail})
        response: httpx.Response = await self.fake.handler(request)  # type: ignore[attr-defined]
        if path in self.lose:
            self.lost.add(json.loads(response.content)["request_id"])
        return response


@pytest.fixture
def losing(fake: object, private_hooks: Hooks) -> Iterator[tuple[ServiceClient, LosingServer]]:
    server = LosingServer(fake)
    client = ServiceClient(
        api_key="tml-test-key",
        base_url="http://fake.test",
        transport=httpx.MockTransport(server.handler),
        hooks=private_hooks,
    )
    try:
        yield client, server
    finally:
        client.close()


def _data() -> list[Datum]:
    return [
        Datum(
            model_input=ModelInput.from_ints([1, 2, 3]),
            loss_fn_inputs={
                "target_tokens": TensorData(data=[2, 3, 4], dtype="int64", shape=[3]),
                "weights": TensorData(data=[1.0, 1.0, 1.0], dtype="float32", shape=[3]),
            },
        )
    ]


def test_lost_step_names_itself_and_the_last_completed_one(
    losing: tuple[ServiceClient, LosingServer],
) -> None:
    service, server = losing
    training = service.create_lora_training_client(TINY, rank=4)
    assert training.last_completed_seq_id is None
    training.forward_backward(_data(), "cross_entropy").result()
    training.optim_step(AdamParams(learning_rate=0.1)).result()
    assert training.last_completed_seq_id == 2

    server.lose.add("/api/v1/forward_backward")
    with pytest.raises(APIStatusError) as info:
        training.forward_backward(_data(), "cross_entropy").result()
    error = info.value
    assert error.status_code == 410
    assert error.request_id in server.lost
    text = str(error)
    assert f"forward_backward (seq_id 3) of model {training.model_id} was lost" in text
    assert "the last completed request of this client is seq_id 2 (optim_step)" in text
    assert "load_state_with_optimizer" in text
    assert isinstance(error.__cause__, APIStatusError)
    assert training.last_completed_seq_id == 2

    # Other calls are unaffected, and the count goes on from there.
    server.lose.clear()
    training.optim_step(AdamParams(learning_rate=0.1)).result()
    assert training.last_completed_seq_id == 4


def test_lost_before_anything_completed(losing: tuple[ServiceClient, LosingServer]) -> None:
    service, server = losing
    training = service.create_lora_training_client(TINY, rank=4)
    server.lose.add("/api/v1/optim_step")
    with pytest.raises(APIStatusError) as info:
        training.optim_step(AdamParams(learning_rate=0.1)).result()
    assert "optim_step (seq_id 1)" in str(info.value)
    assert "no request of this client had completed" in str(info.value)
    assert training.last_completed_seq_id is None


def test_lost_unload_names_itself_too(losing: tuple[ServiceClient, LosingServer]) -> None:
    service, server = losing
    training = service.create_lora_training_client(TINY, rank=4)
    training.optim_step(AdamParams(learning_rate=0.1)).result()
    server.lose.add("/api/v1/unload_model")
    with pytest.raises(APIStatusError) as info:
        training.unload_model().result()
    assert info.value.status_code == 410
    assert f"unload_model (seq_id 2) of model {training.model_id} was lost" in str(info.value)
    assert "seq_id 1 (optim_step)" in str(info.value)
