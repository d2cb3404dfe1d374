"""``import tinkex``: the public surface mirrors the official ``tinker`` package (0.16.1)."""

from __future__ import annotations

import inspect

import pytest

import tinkex
import tinkex_clients
import tinkex_types
from tinkex import types


def test_top_level_names() -> None:
    for name in ("ServiceClient", "TrainingClient", "SamplingClient", "RestClient", "APIFuture"):
        assert getattr(tinkex, name) is getattr(tinkex_clients, name)
    assert tinkex.types is types
    assert tinkex.__version__ == "0.1.0"
    for name in tinkex.__all__:
        assert hasattr(tinkex, name), name


def test_errors_at_top_level() -> None:
    assert tinkex.TinkerError is tinkex_types.TinkexError
    assert issubclass(tinkex.RequestFailedError, tinkex.APIError)
    assert issubclass(tinkex.NotFoundError, tinkex.APIStatusError)
    assert issubclass(tinkex.APITimeoutError, tinkex.APIConnectionError)
    assert issubclass(tinkex.TinkexValidationError, ValueError)
    assert issubclass(tinkex.ClientClosedError, tinkex.TinkexValidationError)
    for name in (
        "APIError",
        "APIStatusError",
        "APITimeoutError",
        "APIConnectionError",
        "APIResponseValidationError",
        "RequestFailedError",
        "BadRequestError",
        "AuthenticationError",
        "PermissionDeniedError",
        "NotFoundError",
        "ConflictError",
        "UnprocessableEntityError",
        "RateLimitError",
        "InternalServerError",
    ):
        assert issubclass(getattr(tinkex, name), tinkex.TinkerError)


def test_types_module_reexports_every_wire_model() -> None:
    missing = [n for n in tinkex_types.__all__ if not hasattr(types, n)]
    assert missing == []
    assert types.Datum is tinkex_types.Datum
    assert types.ModelID is str
    assert types.RequestID is str
    assert types.SaveWeightsForSamplerResponseInternal is tinkex_types.SaveWeightsForSamplerResponse
    datum = types.Datum(
        model_input=types.ModelInput.from_ints(tokens=[1, 2]),
        loss_fn_inputs=dict(weights=[0, 1], target_tokens=[2, 3]),  # noqa: C408 - tinker style
    )
    assert datum.loss_fn_inputs["weights"].dtype == "float32"
    assert datum.loss_fn_inputs["target_tokens"].dtype == "int64"


# Public methods and their parameter names in the official tinker 0.16.1 SDK.
OFFICIAL = {
    "ServiceClient": {
        "get_server_capabilities": [],
        "create_lora_training_client": [
            "base_model",
            "rank",
            "seed",
            "train_mlp",
            "train_attn",
            "train_unembed",
            "user_metadata",
        ],
        # 0.38's order (a dict second, 0.16.1's user_metadata, is still read as metadata)
        "create_training_client_from_state": ["path", "base_model", "user_metadata"],
        "create_training_client_from_state_with_optimizer": [
            "path",
            "base_model",
            "user_metadata",
        ],
        "create_sampling_client": ["model_path", "base_model", "retry_config"],
        "create_rest_client": [],
        "get_telemetry": [],
    },
    "TrainingClient": {
        "forward": ["data", "loss_fn", "loss_fn_config"],
        "forward_backward": ["data", "loss_fn", "loss_fn_config"],
        "forward_backward_custom": ["data", "loss_fn", "loss_type_input"],
        "optim_step": ["optim_params", "adam_params"],  # 0.38 (adam_params= keyword: 0.16)
        "save_state": ["name", "ttl_seconds"],
        "load_state": ["path"],
        "load_state_with_optimizer": ["path"],
        "save_weights_for_sampler": ["name", "ttl_seconds"],
        "get_info": [],
        "get_tokenizer": [],
        "create_sampling_client": ["model_path", "retry_config"],
        "save_weights_and_get_sampling_client": ["name", "retry_config"],
        "get_telemetry": [],
    },
    "SamplingClient": {
        "sample": [
            "prompt",
            "num_samples",
            "sampling_params",
            "include_prompt_logprobs",
            "topk_prompt_logprobs",
        ],
        "compute_logprobs": ["prompt"],
        "get_tokenizer": [],
        "get_base_model": [],
    },
    "RestClient": {
        "get_training_run": ["training_run_id", "access_scope"],
        "get_training_run_by_tinker_path": ["tinker_path", "access_scope"],
        "list_training_runs": ["limit", "offset", "access_scope"],
        "list_checkpoints": ["training_run_id"],
        "get_checkpoint_archive_url": ["training_run_id", "checkpoint_id"],
        "get_checkpoint_archive_url_from_tinker_path": ["tinker_path"],
        "delete_checkpoint": ["training_run_id", "checkpoint_id"],
        "delete_checkpoint_from_tinker_path": ["tinker_path"],
        "publish_checkpoint_from_tinker_path": ["tinker_path"],
        "unpublish_checkpoint_from_tinker_path": ["tinker_path"],
        "set_checkpoint_ttl_from_tinker_path": ["tinker_path", "ttl_seconds"],
        "list_user_checkpoints": ["limit", "offset"],
        "get_session": ["session_id", "access_scope"],
        "list_sessions": ["limit", "offset", "access_scope"],
        "get_sampler": ["sampler_id"],
    },
}
# Methods of the official SDK that have no `_async` twin there.
NO_ASYNC_TWIN = {
    "get_tokenizer",
    "create_rest_client",
    "get_telemetry",
    "get_weights_info_by_tinker_path",
}


@pytest.mark.parametrize("cls_name", sorted(OFFICIAL))
def test_official_method_names_and_parameters(cls_name: str) -> None:
    cls = getattr(tinkex, cls_name)
    for method, params in OFFICIAL[cls_name].items():
        fn = getattr(cls, method, None)
        assert fn is not None, f"{cls_name}.{method} is missing"
        names = [p for p in inspect.signature(fn).parameters if p != "self"]
        assert names[: len(params)] == params, (cls_name, method, names)
        if method not in NO_ASYNC_TWIN:
            twin = getattr(cls, f"{method}_async", None)
            assert twin is not None, f"{cls_name}.{method}_async"
            assert inspect.iscoroutinefunction(twin), f"{cls_name}.{method}_async"
            twin_names = [p for p in inspect.signature(twin).parameters if p != "self"]
            assert twin_names[: len(params)] == params


def test_api_future_interface() -> None:
    fut = tinkex.APIFuture.completed(5)
    assert fut.result(timeout=1) == 5
    assert fut.done()
    for name in (
        "result",
        "result_async",
        "__await__",
        "done",
        "cancel",
        "exception",
        "add_done_callback",
        "future",
    ):
        assert callable(getattr(fut, name))
