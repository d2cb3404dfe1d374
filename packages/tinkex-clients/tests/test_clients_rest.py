"""RestClient against the fake: paths, params, bodies, results and argument checks."""

from __future__ import annotations

import pytest

from tinkex_clients import RestClient, ServiceClient, TrainingClient
from tinkex_types import NotFoundError, TinkexValidationError

from .conftest import FakeTinker


@pytest.fixture
def rest(service: ServiceClient) -> RestClient:
    return service.create_rest_client()


@pytest.fixture
def tc(service: ServiceClient) -> TrainingClient:
    return service.create_lora_training_client("tinkex/tiny-llama-100k", rank=4)


def test_training_runs_listing_and_pagination(
    service: ServiceClient, rest: RestClient, fake: FakeTinker
) -> None:
    ids = [service.create_lora_training_client("m").model_id for _ in range(3)]
    page = rest.list_training_runs(limit=2).result(5)
    assert [r.training_run_id for r in page.training_runs] == ids[:2]
    assert page.cursor.total_count == 3
    page2 = rest.list_training_runs(limit=2, offset=2, access_scope="accessible").result(5)
    assert [r.training_run_id for r in page2.training_runs] == ids[2:]
    _, path, _ = fake.requests[-1]
    assert path == "/api/v1/training_runs"
    run = rest.get_training_run(ids[0]).result(5)
    assert run.training_run_id == ids[0]
    assert not run.corrupted
    with pytest.raises(NotFoundError):
        rest.get_training_run("nope").result(5)


def test_checkpoint_management(rest: RestClient, tc: TrainingClient, fake: FakeTinker) -> None:
    path = tc.save_state("c1").result(5).path
    listing = rest.list_checkpoints(tc.model_id).result(5)
    assert [c.tinker_path for c in listing.checkpoints] == [path]
    assert listing.checkpoints[0].checkpoint_id == "weights/c1"
    assert rest.list_user_checkpoints().result(5).checkpoints[0].tinker_path == path
    assert rest.get_training_run_by_tinker_path(path).result(5).last_checkpoint.tinker_path == path  # type: ignore[union-attr]
    rest.publish_checkpoint_from_tinker_path(path).result(5)
    rest.unpublish_checkpoint(tc.model_id, "weights/c1").result(5)
    rest.set_checkpoint_ttl_from_tinker_path(path, 3600).result(5)
    rest.set_checkpoint_ttl_from_tinker_path(path, None).result(5)
    rest.delete_checkpoint_from_tinker_path(path).result(5)
    calls = [(m, p, b) for m, p, b in fake.requests if "/checkpoints/weights/c1" in p]
    base = f"/api/v1/training_runs/{tc.model_id}/checkpoints/weights/c1"
    assert calls == [
        ("POST", base + "/publish", {}),
        ("DELETE", base + "/publish", None),
        ("PUT", base + "/ttl", {"ttl_seconds": 3600}),
        ("PUT", base + "/ttl", {"ttl_seconds": None}),
        ("DELETE", base, None),
    ]
    info = rest.get_weights_info_by_tinker_path(path).result(5)
    assert info.base_model == "tinkex/tiny-llama-100k"
    assert info.lora_rank == 4


def test_sessions_and_samplers(
    service: ServiceClient, rest: RestClient, tc: TrainingClient
) -> None:
    assert rest.list_sessions().result(5).sessions == [service.session_id]
    detail = rest.get_session(service.session_id).result(5)
    assert detail.training_run_ids == [tc.model_id]
    sc = service.create_sampling_client(base_model="tinkex/tiny-llama-100k")
    assert rest.get_sampler(sc.sampling_session_id).result(5).base_model == "tinkex/tiny-llama-100k"


async def test_async_variants(rest: RestClient, tc: TrainingClient) -> None:
    path = (await tc.save_state("a1")).path
    listing = await rest.list_checkpoints_async(tc.model_id)
    assert listing.checkpoints[0].tinker_path == path
    runs = await rest.list_training_runs_async()
    assert runs.training_runs[0].training_run_id == tc.model_id
    assert (await rest.get_training_run_async(tc.model_id)).lora_rank == 4
    await rest.delete_checkpoint_async(tc.model_id, "weights/a1")
    assert (await rest.get_weights_info_by_tinker_path_async(path)).is_lora


def test_rest_argument_errors(rest: RestClient, fake: FakeTinker) -> None:
    sent = len(fake.requests)
    cases = [
        (lambda: rest.list_training_runs(limit=0), "limit"),
        (lambda: rest.list_training_runs(offset=-1), "offset"),
        (lambda: rest.list_training_runs(access_scope="everyone"), "access_scope"),  # type: ignore[arg-type]
        (lambda: rest.get_training_run(""), "training_run_id"),
        (lambda: rest.delete_checkpoint("run", ""), "checkpoint_id"),
        (lambda: rest.delete_checkpoint_from_tinker_path("tinker://run"), "tinker_path"),
        (lambda: rest.publish_checkpoint_from_tinker_path("tinker://"), "tinker_path"),
        (lambda: rest.get_weights_info_by_tinker_path("run/weights/x"), "tinker_path"),
        (
            lambda: rest.set_checkpoint_ttl_from_tinker_path("tinker://r/weights/x", -5),
            "ttl_seconds",
        ),
        (lambda: rest.get_checkpoint_archive_url_from_tinker_path("http://x"), "tinker_path"),
        (lambda: rest.download_checkpoint("tinker://r/weights/x", progress=3), "progress"),  # type: ignore[arg-type]
        (lambda: rest.get_session("a/b"), "session_id"),
        (lambda: rest.get_sampler(""), "sampler_id"),
    ]
    for call, field in cases:
        with pytest.raises(TinkexValidationError) as info:
            call()
        assert info.value.field == field
    assert len(fake.requests) == sent
