"""Checkpoint retention (issue 21) against the real local server: after a series of saves a
policy keeps exactly the right checkpoints; published ones and other runs' survive; a dry
run deletes nothing; a prune that fails never fails the save."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tinkex_clients import (
    PruneReport,
    RestClient,
    RetentionPolicy,
    ServiceClient,
    TrainingClient,
)
from tinkex_types import Hooks, TinkexValidationError, hookimpl, make_plugin_manager

from .conftest import FAST_POLLS

MODEL = "tinkex/tiny-llama-100k"


def _names(rest: RestClient, run_id: str, kind: str = "training") -> list[str]:
    listing = rest.list_checkpoints(run_id).result(60)
    found = [c for c in listing.checkpoints if c.checkpoint_type == kind]
    return [c.checkpoint_id.split("/", 1)[1] for c in sorted(found, key=lambda c: c.time)]


def _save(tc: TrainingClient, *names: str) -> None:
    for name in names:
        tc.save_state(name).result(60)


@pytest.fixture
def rest(local_service: ServiceClient) -> RestClient:
    return local_service.create_rest_client()


def test_policy_validation() -> None:
    assert RetentionPolicy(max_age=60).max_age == timedelta(seconds=60)
    assert RetentionPolicy(keep_last=1, kinds=("sampler",)).kinds == ("sampler",)
    bad: list[dict[str, Any]] = [
        {},
        {"keep_last": 0},
        {"keep_last": True},
        {"keep_every": 1.5},
        {"max_age": -1},
        {"max_age": float("nan")},
        {"max_age": "7d"},
        {"keep_last": 1, "kinds": ()},
        {"keep_last": 1, "kinds": ("weights",)},
        {"keep_last": 1, "include_published": "yes"},
    ]
    for kwargs in bad:
        with pytest.raises(TinkexValidationError) as info:
            RetentionPolicy(**kwargs)
        assert info.value.field.startswith("RetentionPolicy")


def test_set_retention_refuses_other_values(local_service: ServiceClient) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=4)
    with pytest.raises(TinkexValidationError, match="RetentionPolicy"):
        tc.set_retention({"keep_last": 3})  # type: ignore[arg-type]
    with pytest.raises(TinkexValidationError, match="no retention policy"):
        tc.prune_checkpoints()
    assert tc.retention is None


def test_keep_last_keeps_exactly_the_newest(local_service: ServiceClient, rest: RestClient) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=4)
    tc.set_retention(RetentionPolicy(keep_last=2))
    _save(tc, "s1", "s2")
    assert _names(rest, tc.model_id) == ["s1", "s2"]
    _save(tc, "s3", "s4", "s5")
    assert _names(rest, tc.model_id) == ["s4", "s5"]
    assert tc.last_prune is not None
    assert [c.checkpoint_id for c in tc.last_prune.deleted] == ["weights/s3"]


def test_keep_every_counts_saves_not_survivors(
    local_service: ServiceClient, rest: RestClient
) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=4)
    tc.set_retention(RetentionPolicy(keep_last=1, keep_every=3))
    seen: list[list[str]] = []
    for i in range(1, 9):
        _save(tc, f"s{i}")
        seen.append(_names(rest, tc.model_id))
    assert seen[1] == ["s2"]
    assert seen[3] == ["s3", "s4"]
    assert seen[6] == ["s3", "s6", "s7"]
    assert seen[7] == ["s3", "s6", "s8"]


def test_max_age_deletes_only_older_checkpoints(
    local_service: ServiceClient, rest: RestClient
) -> None:
    young = local_service.create_lora_training_client(MODEL, rank=4)
    young.set_retention(RetentionPolicy(max_age=timedelta(days=7)))
    _save(young, "a", "b", "c")
    assert _names(rest, young.model_id) == ["a", "b", "c"]
    old = local_service.create_lora_training_client(MODEL, rank=4)
    old.set_retention(RetentionPolicy(max_age=0))
    _save(old, "a", "b", "c")
    assert _names(rest, old.model_id) == ["c"]
    # combined: the last 2 and every 2nd stay whatever their age
    both = local_service.create_lora_training_client(MODEL, rank=4)
    both.set_retention(RetentionPolicy(keep_last=2, keep_every=2, max_age=0))
    _save(both, "a", "b", "c", "d", "e", "f", "g")
    assert _names(rest, both.model_id) == ["b", "d", "f", "g"]


def test_published_checkpoints_survive(local_service: ServiceClient, rest: RestClient) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=4)
    tc.set_retention(RetentionPolicy(keep_last=1))
    path = tc.save_state("published").result(60).path
    rest.publish_checkpoint_from_tinker_path(path).result(60)
    _save(tc, "x", "y", "z")
    assert _names(rest, tc.model_id) == ["published", "z"]
    report = tc.prune_checkpoints(RetentionPolicy(keep_last=1, include_published=True)).result(60)
    assert [c.tinker_path for c in report.deleted] == [path]
    assert _names(rest, tc.model_id) == ["z"]


def test_other_runs_survive_unless_included(local_service: ServiceClient, rest: RestClient) -> None:
    other = local_service.create_lora_training_client(MODEL, rank=4)
    _save(other, "o1", "o2", "o3")
    tc = local_service.create_lora_training_client(MODEL, rank=4)
    tc.set_retention(RetentionPolicy(keep_last=1))
    _save(tc, "t1", "t2", "t3")
    assert _names(rest, other.model_id) == ["o1", "o2", "o3"]
    assert _names(rest, tc.model_id) == ["t3"]
    wide = RetentionPolicy(keep_last=1, include_other_runs=True)
    preview = tc.prune_checkpoints(wide, dry_run=True).result(60)
    doomed = {c.tinker_path for c in preview.plan.to_delete}
    assert {f"tinker://{other.model_id}/weights/o1", f"tinker://{other.model_id}/weights/o2"} <= (
        doomed
    )
    assert _names(rest, other.model_id) == ["o1", "o2", "o3"]
    tc.prune_checkpoints(wide).result(60)
    assert _names(rest, other.model_id) == ["o3"]


def test_sampler_kind_and_sampling_client_saves(
    local_service: ServiceClient, rest: RestClient
) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=4)
    tc.set_retention(RetentionPolicy(keep_last=1, kinds=("sampler",)))
    _save(tc, "w1", "w2")
    tc.save_weights_for_sampler("p1").result(60)
    tc.save_weights_for_sampler("p2").result(60)
    assert _names(rest, tc.model_id, "sampler") == ["p2"]
    sampler = tc.save_weights_and_get_sampling_client(name="p3")
    assert _names(rest, tc.model_id, "sampler") == ["p3"]
    assert _names(rest, tc.model_id) == ["w1", "w2"]
    assert sampler.get_base_model() == MODEL
    tc.save_weights_and_get_sampling_client()  # ephemeral: no checkpoint, nothing pruned
    assert _names(rest, tc.model_id, "sampler") == ["p3"]


def test_dry_run_deletes_nothing(local_service: ServiceClient, rest: RestClient) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=4)
    _save(tc, "d1", "d2", "d3", "d4")
    report: PruneReport = tc.prune_checkpoints(RetentionPolicy(keep_last=2), dry_run=True).result(
        60
    )
    assert report.dry_run is True
    assert [c.checkpoint_id for c in report.plan.to_delete] == ["weights/d1", "weights/d2"]
    assert report.deleted == []
    assert _names(rest, tc.model_id) == ["d1", "d2", "d3", "d4"]
    reasons = {d.checkpoint.checkpoint_id: d.reason for d in report.plan.decisions}
    assert reasons["weights/d4"] == "newest"
    assert reasons["weights/d3"] == "one of the last 2"


class RefuseDeletes:
    """A transport wrapper answering 403 to every DELETE of a checkpoint."""

    @hookimpl
    def tinkex_wrap_transport(self, transport: Any, config: Any) -> Any:
        class Refusing(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                if request.method == "DELETE" and "/checkpoints/" in request.url.path:
                    return httpx.Response(403, json={"detail": "deletes are refused here"})
                return await transport.handle_async_request(request)

        return Refusing()


@pytest.fixture
def refusing_service(local_env: Path) -> Iterator[ServiceClient]:
    import tinkex_clients._plugin as clients_plugin
    import tinkex_http._plugin as http_plugin
    import tinkex_server._plugin as server_plugin

    plugins = [http_plugin, clients_plugin, server_plugin, RefuseDeletes()]
    hooks = Hooks(make_plugin_manager(load_entrypoints=False, plugins=plugins))
    client = ServiceClient(base_url="local://", hooks=hooks, poll_policy=FAST_POLLS)
    try:
        yield client
    finally:
        client.close()


def test_a_failing_prune_never_fails_the_save(refusing_service: ServiceClient) -> None:
    tc = refusing_service.create_lora_training_client(MODEL, rank=4)
    tc.set_retention(RetentionPolicy(keep_last=1))
    _save(tc, "f1", "f2")
    path = tc.save_state("f3").result(60).path
    assert path.endswith("/weights/f3")
    rest = refusing_service.create_rest_client()
    assert _names(rest, tc.model_id) == ["f1", "f2", "f3"]
    assert tc.last_prune is not None
    assert tc.last_prune.deleted == []
    assert [(c.checkpoint_id, "refused" in error) for c, error in tc.last_prune.failed] == [
        ("weights/f1", True),
        ("weights/f2", True),
    ]
