"""tinker 0.38's standalone ``RestClient(base_url=..., api_key=...)`` against the real local
server: it opens its own session, reads what a ServiceClient made, and closes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinkex_clients import ClientClosedError, RestClient, ServiceClient
from tinkex_types import Hooks, TinkexValidationError

from .conftest import FAST_POLLS

MODEL = "tinkex/tiny-llama-100k"


def test_standalone_rest_client_reads_runs(local_env: Path, local_hooks: Hooks) -> None:
    with ServiceClient(base_url="local://", hooks=local_hooks, poll_policy=FAST_POLLS) as sc:
        tc = sc.create_lora_training_client(MODEL, rank=4)
        run_id = tc.model_id
    with RestClient(base_url="local://", api_key="tml-standalone") as rest:
        run = rest.get_training_run(run_id).result(60)
        assert run.training_run_id == run_id
        assert run.base_model == MODEL
        assert "tml-standalone" not in repr(rest)
    with pytest.raises(ClientClosedError):
        rest.get_training_run(run_id)


def test_a_session_and_a_base_url_together_are_refused(local_service: ServiceClient) -> None:
    with pytest.raises(TinkexValidationError, match="base_url"):
        RestClient(local_service._session, base_url="local://")


def test_a_service_clients_rest_client_does_not_close_the_session(
    local_service: ServiceClient,
) -> None:
    rest = local_service.create_rest_client()
    rest.close()
    assert not local_service.closed
    assert rest.list_training_runs(limit=1).result(60).training_runs is not None
