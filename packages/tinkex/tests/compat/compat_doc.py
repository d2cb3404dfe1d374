"""Group the surface differences into the reasons docs/tinker-compat.md gives for them.

``python compat_doc.py DIFFS.json`` prints the "Remaining differences" section; the parity
test checks that the page lists exactly the differences the comparison finds.
"""

from __future__ import annotations

import json
import re
import sys

#: (heading, reason, patterns): the first matching group takes a difference.
GROUPS: list[tuple[str, str, tuple[str, ...]]] = [
    (
        "Hosted-service account features",
        "Admin, billing, authentication, audit log, projects, session search and trace "
        "export, console URLs, weight copies and external weights are features of the hosted "
        "service's accounts; tinkex's server has no accounts, so the clients have no such "
        "methods (the response models that cookbook code imports exist: `AuditLogEntry`, "
        "`AuditLogResponse`, `ExternalWeightsUrlsResponse`).",
        (
            r"Admin",
            r"\.auth\b",
            r"Billing",
            r"[Bb]illing",
            r"audit_log",
            r"AuthToken",
            r"Whoami|whoami",
            r"search_sessions|SessionSearch|SearchOwner|session_search",
            r"assign_session_project",
            r"export_session_trace",
            r"console_url|playground_url",
            r"copy_weights|CopyWeights",
            r"external_weights|SaveWeightsExternal|weights_external",
            r"ExternalWeights",
            r"storage_usage|StorageUsage",
            r"\.holder\b",
            r"project_id",
            r"weights_access_token",
            r"from_sampler_handle|get_sampler_handle",
            r"SessionStatus|SessionActive|SessionCancelled|SessionFailed|ClientSessionFinish",
            r"SessionStatusQuery|ClientFinishedSessionStatusQuery",
            r"SessionSummary",
            r"ListSessionsResponse",
            r"GetSessionResponse\(",
            r"Cursor",
        ),
    ),
    (
        "The 0.38 protocol generation",
        "Fields and models that arrive with the protobuf generation of the protocol "
        "(`client/config` handshake, `type` discriminators, optimizer configs, custom loss "
        "graphs, provenance spans, sampling extras, numpy-backed results): part of the "
        "protocol-negotiation work of issue 16, done separately in tinkex-types' models.",
        (
            r"\(type\)",
            r"ClientConfig|ClientDynamicConfig",
            r"Optimiz|Dimuon|OptimParams",
            r"optim_params|optimizer",
            r"CustomLoss|LossHandle|PerDatumLossFn|custom_loss",
            r"Provenance|provenance|_spans",
            r"DmelChunk",
            r"SamplingClientKind|\(kind\)",
            r"record_stability_info",
            r"prompt_alt_tokens|PromptAltTokens",
            r"topk_sample_logprobs|target_prompt_logprobs|prompt_logprobs_last_n",
            r"_np\)|tokens_np|logprobs_np",
            r"sequence_id|sample_sequence_ids",
            r"SampledSequence\.(tokens|logprobs|topk_logprobs)",
            r"SampleResponse\.(prompt_logprobs|topk_prompt_logprobs)",
            r"sparse|from_torch_sparse|pad_value|TensorData\.data",
            r"Future(Completion|Failed|Finished|RetrieveResponse)|FuturesRetrieve",
            r"SamplingSessionFuturesTarget",
            r"JoinSamplingSession",
            r"TelemetryBatch",
            r"process_uuid",
            r"user_metadata|overwrite|display_name",
            r"LoadWeightsRequest",
            r"LoadWeightsResponse",
            r"ImageChunk\.(serialize|validate)_data",
            r"ForwardBackwardInput|ForwardBackwardRequest|ForwardRequest",
            r"AwaitableConcurrentFuture|Backcompat",
            r"APIFuture\.(coroutine)",
            r"UntypedAPIFuture",
            r"RequestErrorCategory\.",
            r"ModelInput\.|\.length\b",
            r"with_provenance",
            r"base_model\)|model_seq_id\)|session_id\)",
        ),
    ),
    (
        "Clients are made by ServiceClient",
        "The client classes take tinkex's `Session` instead of the official "
        "`InternalClientHolder`; code gets them from `ServiceClient` (or "
        "`SamplingClient.create`, or a standalone `RestClient(base_url=..., api_key=...)`), "
        "as tinker's documentation tells it to.",
        (
            r"^tinker\.(SamplingClient|TrainingClient|RestClient|APIFuture)\((holder|session|"
            r"info|model_id|model_seq_id|shadow|api_key|base_url|future)\)",
        ),
    ),
    (
        "Errors carry no httpx objects",
        "tinkex's errors keep the method, path, status, request id and body of a failed "
        "request, not the `httpx.Request`/`httpx.Response` objects: those hold the "
        "`X-API-Key` header, and secrets never travel in exceptions.",
        (r"Error\((request|response|body|message|status_code|category|request_id)\)",),
    ),
    (
        "Wire models are pydantic models",
        "tinkex's wire models are pydantic models: their fields are keyword arguments "
        "(`Datum(model_input=..., loss_fn_inputs=...)`, as tinker's documentation writes "
        "them); tinker 0.38 made some of them dataclasses that also take positions.",
        (
            r"\): keyword_only, tinker: positional_or_keyword$",
            r"TensorData\((data|dtype)\)",
        ),
    ),
    (
        "The same object under another module name",
        "tinker sets `__module__ = 'tinker'` on `httpx.Timeout`, so its snapshot records "
        "httpx's methods as tinker's; `tinkex.Timeout` is the same `httpx.Timeout` class.",
        (r"^tinker\.Timeout\.",),
    ),
    (
        "Not offered",
        "Not offered: anything not covered by the reasons above (none at the moment; a new "
        "difference lands here until this page gives its reason).",
        (r".",),
    ),
]


def group(diffs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {heading: [] for heading, _, _ in GROUPS}
    for diff in diffs:
        for heading, _, patterns in GROUPS:
            if any(re.search(p, diff) for p in patterns):
                out[heading].append(diff)
                break
    return out


def render(diffs: list[str]) -> str:
    lines: list[str] = []
    for heading, reason, _ in GROUPS:
        items = group(diffs)[heading]
        if not items:
            continue
        lines += [f"### {heading} ({len(items)})", "", reason, ""]
        lines += [f"- `{d}`" for d in items]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as fh:
        print(render(json.load(fh)))
