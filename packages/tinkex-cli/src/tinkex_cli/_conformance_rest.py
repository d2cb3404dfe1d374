"""The REST steps of ``tinkex conformance``: training runs, checkpoints (list, info,
publish/unpublish, TTL, archive URL, delete), sessions and samplers.

They touch only what the run itself created. A 404 (or 405/501) answer means the server
does not offer that route: these steps are optional. Where a change can be read back
(publish, TTL, delete) it is checked through ``list_checkpoints`` when that route works.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from tinkex_cli._conformance import Probe, Step, Wrong

if TYPE_CHECKING:
    from tinkex_clients import RestClient
    from tinkex_types import Checkpoint

__all__ = ["rest_steps"]

#: Pages of 100 searched for the run's own items in listings shared with other runs.
MAX_PAGES = 5
PAGE = 100


def _rest(probe: Probe) -> RestClient:
    return probe.require_service().create_rest_client()


def _listed(probe: Probe, path: str) -> Checkpoint | str | None:
    """The checkpoint ``path`` as ``list_checkpoints`` shows it (``None``: not listed), or
    a text saying why it could not be read back."""
    training = probe.require_training()
    try:
        listing = _rest(probe).list_checkpoints(training.model_id).result(probe.wait)
    except Exception as exc:
        return f"not read back: list_checkpoints failed ({type(exc).__name__})"
    for checkpoint in listing.checkpoints:
        if checkpoint.tinker_path == path:
            return checkpoint
    return None


def _sampler_path(probe: Probe) -> str:
    assert probe.sampler_path is not None
    return probe.sampler_path


def _get_training_run(probe: Probe) -> str:
    training = probe.require_training()
    run = _rest(probe).get_training_run(training.model_id).result(probe.wait)
    if run.training_run_id != training.model_id:
        raise Wrong(f"asked for run {training.model_id!r}, got {run.training_run_id!r}")
    if probe.base_model is not None and run.base_model != probe.base_model:
        raise Wrong(f"base_model {run.base_model!r}, the run was created on {probe.base_model!r}")
    return f"run {run.training_run_id} on {run.base_model}"


def _list_training_runs(probe: Probe) -> str:
    training = probe.require_training()
    rest = _rest(probe)
    total = 0
    for page in range(MAX_PAGES):
        listing = rest.list_training_runs(limit=PAGE, offset=page * PAGE).result(probe.wait)
        total = listing.cursor.total_count
        if any(r.training_run_id == training.model_id for r in listing.training_runs):
            return f"run listed ({total} in all)"
        if len(listing.training_runs) < PAGE:
            raise Wrong(f"run {training.model_id} is not listed ({total} runs)")
    return f"{total} runs; this one is not among the first {MAX_PAGES * PAGE}"


def _list_checkpoints(probe: Probe) -> str:
    training = probe.require_training()
    listing = _rest(probe).list_checkpoints(training.model_id).result(probe.wait)
    listed = {c.tinker_path for c in listing.checkpoints}
    missing = [p for p in probe.created if p not in probe.deleted and p not in listed]
    if missing:
        raise Wrong(f"saved but not listed: {', '.join(missing)}")
    return f"{len(listing.checkpoints)} checkpoint(s)"


def _list_user_checkpoints(probe: Probe) -> str:
    path = _sampler_path(probe)
    rest = _rest(probe)
    for page in range(MAX_PAGES):
        listing = rest.list_user_checkpoints(limit=PAGE, offset=page * PAGE).result(probe.wait)
        if any(c.tinker_path == path for c in listing.checkpoints):
            return "the sampler checkpoint is listed"
        if len(listing.checkpoints) < PAGE:
            raise Wrong(f"{path} is not listed")
    return f"not among the first {MAX_PAGES * PAGE} checkpoints"


def _weights_info(probe: Probe) -> str:
    info = _rest(probe).get_weights_info_by_tinker_path(_sampler_path(probe)).result(probe.wait)
    if probe.base_model is not None and info.base_model != probe.base_model:
        raise Wrong(f"base_model {info.base_model!r}, the run's is {probe.base_model!r}")
    if info.lora_rank is not None and info.lora_rank != 4:
        raise Wrong(f"lora_rank {info.lora_rank}, the run was created with rank 4")
    return f"{info.base_model}, lora_rank {info.lora_rank}"


def _publish(public: bool) -> Any:
    def run(probe: Probe) -> str:
        path = _sampler_path(probe)
        rest = _rest(probe)
        if public:
            probe.published.add(path)  # the cleanup unpublishes it whatever happens
            rest.publish_checkpoint_from_tinker_path(path).result(probe.wait)
        else:
            rest.unpublish_checkpoint_from_tinker_path(path).result(probe.wait)
            probe.published.discard(path)
        shown = _listed(probe, path)
        if isinstance(shown, str):
            return shown
        if shown is None:
            raise Wrong(f"{path} is no longer listed")
        if shown.public != public:
            raise Wrong(f"list_checkpoints shows public={shown.public} afterwards")
        return f"public={public} read back"

    return run


def _ttl(probe: Probe) -> str:
    path = _sampler_path(probe)
    before = dt.datetime.now(dt.UTC)
    _rest(probe).set_checkpoint_ttl_from_tinker_path(path, 3600).result(probe.wait)
    shown = _listed(probe, path)
    if isinstance(shown, str):
        return shown
    if shown is None:
        raise Wrong(f"{path} is no longer listed")
    expires = shown.expires_at
    if expires is None:
        raise Wrong("list_checkpoints shows no expires_at after a TTL of 3600 s")
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=dt.UTC)
    if expires < before:
        raise Wrong(f"expires_at {expires.isoformat()} is in the past")
    return f"expires_at {expires.isoformat()}"


def _archive_url(probe: Probe) -> str:
    rest = _rest(probe)
    answer = rest.get_checkpoint_archive_url_from_tinker_path(_sampler_path(probe))
    url = answer.result(probe.wait).url
    if not url:
        raise Wrong("the archive URL is empty")
    return "a signed URL" if "?" in url else "a URL"


def _get_session(probe: Probe) -> str:
    service = probe.require_service()
    training = probe.require_training()
    session = _rest(probe).get_session(service.session_id).result(probe.wait)
    if training.model_id not in session.training_run_ids:
        raise Wrong(f"run {training.model_id} is not among the session's training runs")
    return f"{len(session.training_run_ids)} run(s), {len(session.sampler_ids)} sampler(s)"


def _list_sessions(probe: Probe) -> str:
    session_id = probe.require_service().session_id
    rest = _rest(probe)
    for page in range(MAX_PAGES):
        listing = rest.list_sessions(limit=PAGE, offset=page * PAGE).result(probe.wait)
        if session_id in listing.sessions:
            return "this session is listed"
        if len(listing.sessions) < PAGE:
            raise Wrong(f"session {session_id} is not listed")
    return f"not among the first {MAX_PAGES * PAGE} sessions"


def _get_sampler(probe: Probe) -> str:
    sampler = probe.require_sampler()
    answer = _rest(probe).get_sampler(sampler.sampling_session_id).result(probe.wait)
    if answer.model_path is not None and answer.model_path != probe.sampler_path:
        raise Wrong(f"model_path {answer.model_path!r}, the sampler serves {probe.sampler_path!r}")
    if probe.base_model is not None and answer.base_model != probe.base_model:
        raise Wrong(f"base_model {answer.base_model!r}, expected {probe.base_model!r}")
    return f"serves {answer.model_path or answer.base_model}"


def _delete(probe: Probe) -> str:
    assert probe.state_path is not None
    path = probe.state_path
    _rest(probe).delete_checkpoint_from_tinker_path(path).result(probe.wait)
    probe.deleted.add(path)
    shown = _listed(probe, path)
    if isinstance(shown, str):
        return shown
    if shown is not None:
        raise Wrong(f"{path} is still listed after delete")
    return f"deleted {path}"


def rest_steps() -> list[Step]:
    def step(name: str, call: str, run: Any, *needs: str) -> Step:
        return Step(f"rest.{name}", f"RestClient.{call}", run, needs=needs, optional=True)

    lora = "create_lora_training_client"
    sampler = "save_weights_for_sampler"
    return [
        step("get_training_run", "get_training_run(run_id)", _get_training_run, lora),
        step("list_training_runs", "list_training_runs()", _list_training_runs, lora),
        step("list_checkpoints", "list_checkpoints(run_id)", _list_checkpoints, lora),
        step("list_user_checkpoints", "list_user_checkpoints()", _list_user_checkpoints, sampler),
        step("get_weights_info", "get_weights_info_by_tinker_path(path)", _weights_info, sampler),
        step(
            "publish_checkpoint",
            "publish_checkpoint_from_tinker_path(path)",
            _publish(True),
            sampler,
        ),
        step(
            "unpublish_checkpoint",
            "unpublish_checkpoint_from_tinker_path(path)",
            _publish(False),
            "rest.publish_checkpoint",
        ),
        step(
            "set_checkpoint_ttl", "set_checkpoint_ttl_from_tinker_path(path, 3600)", _ttl, sampler
        ),
        step(
            "get_checkpoint_archive_url",
            "get_checkpoint_archive_url_from_tinker_path(path)",
            _archive_url,
            sampler,
        ),
        step("get_session", "get_session(session_id)", _get_session, lora),
        step("list_sessions", "list_sessions()", _list_sessions, "create_session"),
        step("get_sampler", "get_sampler(sampler_id)", _get_sampler, "create_sampling_client"),
        step(
            "delete_checkpoint", "delete_checkpoint_from_tinker_path(path)", _delete, "save_state"
        ),
    ]
