"""The clients meet other packages only through hooks: spans around every public operation,
queue-state observers, transports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from tinkex_clients import ServiceClient
from tinkex_types import (
    AdamParams,
    Datum,
    Hooks,
    ModelInput,
    QueueStateEvent,
    SamplingParams,
    TinkexValidationError,
    hookimpl,
    make_plugin_manager,
)

from .conftest import FAST_POLLS, FakeTinker


class Recorder:
    def __init__(self) -> None:
        self.spans: list[tuple[str, dict[str, Any]]] = []
        self.open_spans = 0
        self.queue_events: list[QueueStateEvent] = []

    @hookimpl
    def tinkex_operation_span(
        self, operation: str, attributes: Mapping[str, Any], carrier: Mapping[str, str] | None
    ) -> contextlib.AbstractContextManager[Any]:
        self.spans.append((operation, dict(attributes)))

        @contextlib.contextmanager
        def span() -> Iterator[None]:
            self.open_spans += 1
            try:
                yield
            finally:
                self.open_spans -= 1

        return span()

    @hookimpl
    def tinkex_on_queue_state_change(self, event: QueueStateEvent) -> None:
        self.queue_events.append(event)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def traced(fake: FakeTinker, recorder: Recorder) -> Iterator[ServiceClient]:
    import tinkex_http._plugin as http_plugin

    hooks = Hooks(make_plugin_manager(load_entrypoints=False, plugins=[http_plugin, recorder]))
    svc = ServiceClient(
        api_key="tml-k",
        base_url="http://fake.test",
        transport=httpx.MockTransport(fake.handler),
        hooks=hooks,
        poll_policy=FAST_POLLS,
    )
    try:
        yield svc
    finally:
        svc.close()


def test_every_public_operation_is_spanned(traced: ServiceClient, recorder: Recorder) -> None:
    tc = traced.create_lora_training_client("m", rank=2)
    datum = Datum(
        model_input=ModelInput.from_ints([1, 2]),
        loss_fn_inputs={"target_tokens": [2, 3], "weights": [1.0, 1.0]},
    )
    tc.forward_backward([datum], "cross_entropy").result(5)
    tc.optim_step(AdamParams()).result(5)
    tc.save_state("s").result(5)
    sc = tc.save_weights_and_get_sampling_client()
    sc.sample(ModelInput.from_ints([1]), 1, SamplingParams(max_tokens=1)).result(5)
    traced.create_rest_client().list_training_runs().result(5)
    tc.unload_model().result(5)
    ops = [name for name, _ in recorder.spans]
    for expected in (
        "create_session",
        "create_lora_training_client",
        "forward_backward",
        "optim_step",
        "save_state",
        "save_weights_and_get_sampling_client",
        "sample",
        "rest.list_training_runs",
        "unload_model",
    ):
        assert expected in ops, expected
    attrs = dict(recorder.spans)["forward_backward"]
    assert attrs["tinkex.model_id"] == tc.model_id
    assert attrs["tinkex.loss_fn"] == "cross_entropy"
    assert attrs["tinkex.session_id"] == traced.session_id
    assert all("tml-k" not in repr(a) for _, a in recorder.spans)
    assert recorder.open_spans == 0


def test_queue_state_reaches_observers(
    traced: ServiceClient, fake: FakeTinker, recorder: Recorder
) -> None:
    fake.try_again_polls = 1
    tc = traced.create_lora_training_client("m")
    assert recorder.queue_events
    event = recorder.queue_events[0]
    assert event.queue_state == "paused_capacity"
    assert event.reason
    tc.get_info()


def test_unknown_scheme_names_the_package_to_install() -> None:
    hooks = Hooks(make_plugin_manager(load_entrypoints=False, plugins=[], defaults=False))
    with pytest.raises(TinkexValidationError) as info:
        ServiceClient(base_url="local://", hooks=hooks)
    assert info.value.field == "base_url"
    assert "tinkex-server" in str(info.value)


def test_unload_model(service: ServiceClient, fake: FakeTinker) -> None:
    tc = service.create_lora_training_client("m")
    assert tc.unload_model().result(5).model_id == tc.model_id
    assert tc.model_id not in fake.models
