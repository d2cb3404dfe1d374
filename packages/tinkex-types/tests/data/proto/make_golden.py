"""Regenerate the protobuf golden fixtures with the OFFICIAL tinker clients.

Run with the Python of an environment where the official SDK is installed (numpy and
zstandard come with it), once per version:

    /work/venvs/t0.38.0/bin/python packages/tinkex-types/tests/data/proto/make_golden.py
    /work/venvs/t0.25.0/bin/python packages/tinkex-types/tests/data/proto/make_golden.py

Requests are encoded by the official client's own code path (``tinker.proto.request_conv``
then, as ``tinker.resources.training`` does, ``forward_only`` and optional zstd). Results are
built as ``tinker_public`` messages and decoded by the official parser
(``tinker.proto.response_conv``); what it returns is written next to the bytes as the
expected value. Each version writes ``<case>.bin`` files, ``cases-<version>.json``:
``{case: {"message", "content_encoding", "canonical", "expected"}}``. ``canonical`` cases
are the exact messages tinkex writes for the expected value (tests compare message equality),
and ``tinker_public-<version>.desc``, the official schema (a serialised FileDescriptorProto).

This script does not import tinkex: its expectations come from the official SDK alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import zstandard
from tinker import types as T
from tinker._version import __version__ as SDK
from tinker.proto import request_conv, response_conv
from tinker.proto import tinker_public_pb2 as pb

HERE = Path(__file__).resolve().parent
V038 = SDK.startswith("0.38")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(24))


# -- the official objects as tinkex wire JSON -----------------------------------------------


def _tensor(td: Any) -> dict[str, Any]:
    if td.sparse_crow_indices is not None:
        # TensorData.to_numpy densifies through torch, which this environment lacks; the
        # same CSR -> dense rule (unlisted entries are 0) with numpy:
        arr = np.zeros(td.shape, dtype=td._numpy.dtype)
        crow = td.sparse_crow_indices
        for row in range(td.shape[0]):
            for at in range(crow[row], crow[row + 1]):
                arr[row, td.sparse_col_indices[at]] = td._numpy[at]
    else:
        arr = td.to_numpy()
    return {"data": arr.ravel().tolist(), "dtype": td.dtype, "shape": list(arr.shape)}


def _span(span: Any) -> dict[str, Any]:
    source = "sampled" if isinstance(span, T.SampledProvenanceSpan) else "prompt"
    return {
        "source": source,
        "sequence_id": span.sequence_id,
        "offset": span.offset,
        "length": span.length,
    }


def _chunk(chunk: Any) -> dict[str, Any]:
    if isinstance(chunk, T.EncodedTextChunk):
        return {"tokens": list(chunk.tokens)}
    import base64

    out: dict[str, Any] = {"data": base64.b64encode(chunk.data).decode(), "format": chunk.format}
    if chunk.expected_tokens is not None:
        out["expected_tokens"] = chunk.expected_tokens
    return out


def _request_json(req: Any, forward_only: bool) -> dict[str, Any]:
    fbi = req.forward_backward_input
    data = []
    for datum in fbi.data:
        item: dict[str, Any] = {
            "model_input": {"chunks": [_chunk(c) for c in datum.model_input.chunks]},
            "loss_fn_inputs": {k: _tensor(v) for k, v in datum.loss_fn_inputs.items()},
        }
        for key in ("model_input_spans", "loss_fn_input_spans"):
            spans = getattr(datum, key, None)
            if spans:
                item[key] = [_span(s) for s in spans]
        data.append(item)
    batch: dict[str, Any] = {"data": data, "loss_fn": fbi.loss_fn}
    config = dict(fbi.loss_fn_config or {})
    numbers = {k: float(v) for k, v in config.items() if not isinstance(v, str)}
    texts = {k: v for k, v in config.items() if isinstance(v, str)}
    if numbers:
        batch["loss_fn_config"] = numbers
    if texts:
        batch["loss_fn_config_v2"] = texts
    out: dict[str, Any] = {
        "forward_backward_input": batch,
        "model_id": req.model_id,
        "seq_id": req.seq_id,
    }
    if forward_only:
        out["forward_only"] = True
    return out


def _topk_lists(rows: Any) -> Any:
    if rows is None:
        return None
    return [None if r is None else [[int(t), float(lp)] for t, lp in r] for r in rows]


def _sample_json(resp: Any) -> dict[str, Any]:
    seqs = []
    for seq in resp.sequences:
        item: dict[str, Any] = {"stop_reason": seq.stop_reason, "tokens": list(seq.tokens)}
        if seq.logprobs is not None:
            item["logprobs"] = list(seq.logprobs)
        topk = getattr(seq, "topk_logprobs", None)
        if topk is not None:
            item["topk_logprobs"] = _topk_lists(topk)
        seqs.append(item)
    out: dict[str, Any] = {"sequences": seqs}
    if resp.prompt_logprobs is not None:
        out["prompt_logprobs"] = resp.prompt_logprobs
    if resp.topk_prompt_logprobs is not None:
        out["topk_prompt_logprobs"] = _topk_lists(resp.topk_prompt_logprobs)
    if resp.prompt_cache_hit_tokens:
        out["prompt_cache_hit_tokens"] = resp.prompt_cache_hit_tokens
    target = getattr(resp, "target_prompt_logprobs", None)
    if target is not None:
        out["target_prompt_logprobs"] = _tensor(target)
    alt = getattr(resp, "prompt_alt_tokens", None)
    if alt is not None:
        out["prompt_alt_tokens"] = {
            "tokens": _tensor(alt.tokens),
            "logprobs": _tensor(alt.logprobs),
        }
    return out


def _fbo_json(out: Any) -> dict[str, Any]:
    return {
        "loss_fn_output_type": out.loss_fn_output_type,
        "loss_fn_outputs": [{k: _tensor(v) for k, v in d.items()} for d in out.loss_fn_outputs],
        "metrics": dict(out.metrics),
    }


# -- requests ------------------------------------------------------------------------------


def _encode_request(req: Any, forward_only: bool, zstd: bool) -> bytes:
    # tinker/resources/training.py: forward_backward()
    msg = request_conv.forward_backward_request_to_proto(req)
    msg.forward_only = forward_only
    body: bytes = msg.SerializeToString()
    if zstd:
        body = zstandard.ZstdCompressor().compress(body)
    return body


def _text(tokens: list[int]) -> Any:
    return T.EncodedTextChunk(tokens=tokens)


def _requests() -> dict[str, tuple[Any, bool, bool, bool]]:
    """name -> (request, forward_only, zstd, canonical)."""
    f32, i64 = np.float32, np.int64
    d1 = T.Datum(
        model_input=T.ModelInput(
            chunks=[_text([1, 2, 3]), T.ImageChunk(data=PNG, format="png", expected_tokens=2)]
        ),
        loss_fn_inputs={
            "target_tokens": T.TensorData.from_numpy(np.array([2, 3, 9, 9, 4], dtype=i64)),
            "weights": T.TensorData.from_numpy(np.array([0, 1, 0.5, 1, 1], dtype=f32)),
        },
    )
    d2 = T.Datum(
        model_input=T.ModelInput.from_ints([7, 8, 2**31 - 1]),
        loss_fn_inputs={
            "target_tokens": T.TensorData.from_numpy(np.array([8, 2**40, 0], dtype=i64)),
            "weights": T.TensorData.from_numpy(np.array([1.0, -0.0, 1e-30], dtype=f32)),
        },
    )

    def req(loss: str, data: list[Any], config: Any = None, seq: int = 1) -> Any:
        return T.ForwardBackwardRequest(
            forward_backward_input=T.ForwardBackwardInput(
                data=data, loss_fn=loss, loss_fn_config=config
            ),
            model_id="7c1e:train:0",
            seq_id=seq,
        )

    tag = "038" if V038 else "025"
    cases: dict[str, tuple[Any, bool, bool, bool]] = {
        f"fb_{tag}_cross_entropy": (req("cross_entropy", [d1, d2]), False, False, True),
        f"fb_{tag}_forward_only_zstd": (req("cross_entropy", [d2], seq=4), True, True, True),
    }
    rl = T.Datum(
        model_input=T.ModelInput.from_ints([5, 6, 7, 8]),
        loss_fn_inputs={
            "target_tokens": T.TensorData.from_numpy(np.array([6, 7, 8, 1], dtype=i64)),
            "logprobs": T.TensorData.from_numpy(np.array([-1.5, -0.25, -3, -0.5], dtype=f32)),
            "advantages": T.TensorData.from_numpy(np.array([0.5, 0.5, -1, 0], dtype=f32)),
        },
    )
    config: dict[str, Any] = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.28}
    if V038:
        config["variant"] = "token-mean"
    cases[f"fb_{tag}_ppo_config"] = (req("ppo", [rl], config, seq=5), False, False, True)
    if V038:
        sparse = T.TensorData(
            data=np.array([4, 5, 6], dtype=i64),
            dtype="int64",
            shape=[2, 3],
            sparse_crow_indices=[0, 1, 3],
            sparse_col_indices=[2, 0, 1],
        )
        d3 = T.Datum(
            model_input=T.ModelInput.from_ints([1, 2]),
            loss_fn_inputs={
                "target_tokens": sparse,
                "weights": T.TensorData.from_numpy(np.ones((2, 3), dtype=f32)),
            },
        )
        cases["fb_038_sparse_targets"] = (req("cross_entropy", [d3]), False, False, False)
        d4 = T.Datum(
            model_input=T.ModelInput.from_ints([10, 11, 12, 13]),
            loss_fn_inputs={
                "target_tokens": T.TensorData.from_numpy(np.array([11, 12, 13, 14], dtype=i64)),
                "weights": T.TensorData.from_numpy(np.array([0, 0, 1, 1], dtype=f32)),
            },
        ).with_provenance(
            model_input=[
                T.PromptProvenanceSpan(sequence_id="s-1", offset=0, length=3),
                T.SampledProvenanceSpan(sequence_id="s-1", offset=0, length=1),
            ],
            loss_fn_inputs=[
                T.PromptProvenanceSpan(sequence_id="s-1", offset=1, length=2),
                T.SampledProvenanceSpan(sequence_id="s-1", offset=0, length=2),
            ],
        )
        cases["fb_038_provenance"] = (req("cross_entropy", [d4], seq=2), False, False, True)
    return cases


# -- results -------------------------------------------------------------------------------


def _bt(arr: np.ndarray, sizes: list[int], dtype: int, trailing: tuple[int, ...] = ()) -> Any:
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype("<i8") * arr.dtype.itemsize
    return pb.BatchedTensor(
        data=arr.tobytes(), offsets=offsets.tobytes(), dtype=dtype, trailing_shape=list(trailing)
    )


def _fbo_results() -> dict[str, tuple[Any, bool]]:
    canonical = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord")
    canonical.metrics["loss:sum"] = 1.5
    canonical.metrics["tokens"] = 5.0
    rec = canonical.loss_fn_outputs.add(type_tag="ArrayRecord", num_datums=2)
    rec.fields["logprobs"].CopyFrom(
        _bt(np.array([-0.5, -1.25, np.nan, -2, -0.125], "<f4"), [3, 2], pb.DTYPE_FLOAT32)
    )
    rec.fields["elementwise_loss"].CopyFrom(
        _bt(np.array([0.5, 1.25, 0, 2, 0.125], "<f4"), [3, 2], pb.DTYPE_FLOAT32)
    )
    exotic = pb.ForwardBackwardOutput(loss_fn_output_type="tinker.types:ArrayRecord")
    first = exotic.loss_fn_outputs.add(type_tag="x", num_datums=2)
    first.fields["ids"].CopyFrom(_bt(np.array([1, -2, 3], "<i4"), [1, 2], pb.DTYPE_INT32))
    bf16 = (np.array([1.0, -2.5, 0.15625], "<f4").view("<u4") >> 16).astype("<u2")
    first.fields["scores"].CopyFrom(_bt(bf16, [2, 1], pb.DTYPE_BFLOAT16))
    second = exotic.loss_fn_outputs.add(type_tag="x", num_datums=1)
    second.fields["ids"].CopyFrom(
        _bt(np.array([4, 5, 6, 7], "<i4"), [4], pb.DTYPE_INT32, trailing=(2,))
    )
    second.fields["scores"].CopyFrom(_bt(bf16[:2], [2], pb.DTYPE_BFLOAT16, trailing=(2,)))
    # num_datums 0 everywhere (writers predating it): the count comes from the first field.
    inferred = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord")
    for values, sizes in (([1.0, 2.0, 3.0], [1, 2]), ([4.0], [1])):
        rec = inferred.loss_fn_outputs.add(type_tag="ArrayRecord")
        rec.fields["loss"].CopyFrom(_bt(np.array(values, "<f4"), sizes, pb.DTYPE_FLOAT32))
    empty = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord")
    empty.metrics["loss:sum"] = 0.0
    return {
        "fbo_canonical": (canonical, True),
        "fbo_exotic": (exotic, False),
        "fbo_inferred_count": (inferred, False),
        "fbo_empty": (empty, True),
    }


def _topk(rows: list[list[tuple[int, float]] | None], k: int) -> tuple[bytes, bytes]:
    tokens = np.zeros((len(rows), k), "<i4")
    logprobs = np.full((len(rows), k), -99999.0, "<f4")
    for i, row in enumerate(rows):
        for j, (t, lp) in enumerate(row or []):
            tokens[i, j], logprobs[i, j] = t, lp
    return tokens.tobytes(), logprobs.tobytes()


def _tensor_pb(arr: np.ndarray, dtype: int) -> Any:
    return pb.Tensor(dense=arr.tobytes(), dtype=dtype, shape=list(arr.shape))


def _sample_results() -> dict[str, tuple[Any, bool]]:
    topk_name = "TopkLogprobs" if V038 else "TopkPromptLogprobs"
    length = "length" if V038 else "prompt_length"
    resp = pb.SampleResponse(prompt_cache_hit_tokens=7)
    resp.sequences.add(
        stop_reason=pb.STOP_REASON_STOP,
        tokens=np.array([11, 12, 2**31 - 1], "<i4").tobytes(),
        logprobs=np.array([-0.5, -1.0, -0.0625], "<f4").tobytes(),
    )
    resp.sequences.add(
        stop_reason=pb.STOP_REASON_LENGTH, tokens=np.array([13, 14], "<i4").tobytes()
    )
    resp.prompt_logprobs = np.array([np.nan, -2.5, -0.75, -1.0], "<f4").tobytes()
    rows = [None, [(5, -0.25), (6, -1.5)], [(7, -0.5)], [(8, -0.125), (9, -3.0)]]
    ids, lps = _topk(rows, 2)
    getattr(pb, topk_name)  # the message exists under this version's name
    resp.topk_prompt_logprobs.token_ids = ids
    resp.topk_prompt_logprobs.logprobs = lps
    resp.topk_prompt_logprobs.k = 2
    setattr(resp.topk_prompt_logprobs, length, 4)
    cases = {f"sample_{'038' if V038 else '025'}_canonical": (resp, True)}
    if V038:
        extras = pb.SampleResponse()
        seq = extras.sequences.add(
            stop_reason=pb.STOP_REASON_STOP,
            tokens=np.array([3, 4], "<i4").tobytes(),
            logprobs=np.array([-0.5, -0.25], "<f4").tobytes(),
        )
        ids, lps = _topk([[(3, -0.5), (1, -2.0), (2, -4.0)], [(4, -0.25)]], 3)
        seq.topk_sampled_logprobs.token_ids = ids
        seq.topk_sampled_logprobs.logprobs = lps
        seq.topk_sampled_logprobs.k = 3
        seq.topk_sampled_logprobs.length = 2
        extras.target_prompt_logprobs.CopyFrom(
            _tensor_pb(np.array([[-0.5, 0.0], [-1.5, -2.0]], "<f4"), pb.DTYPE_FLOAT32)
        )
        extras.prompt_alt_tokens.tokens.CopyFrom(
            _tensor_pb(np.array([[4, 5], [6, 7]], "<i8"), pb.DTYPE_INT64)
        )
        extras.prompt_alt_tokens.logprobs.CopyFrom(
            _tensor_pb(np.array([[-0.5, -1.0], [-0.25, -2.0]], "<f4"), pb.DTYPE_FLOAT32)
        )
        cases["sample_038_extras"] = (extras, True)
        sparse = pb.SampleResponse()
        sparse.sequences.add(stop_reason=pb.STOP_REASON_LENGTH, tokens=b"")
        csr = sparse.target_prompt_logprobs
        csr.dtype = pb.DTYPE_FLOAT32
        csr.shape.extend([2, 3])
        csr.sparse_csr.values = np.array([-1.0, -2.0], "<f4").tobytes()
        csr.sparse_csr.crow_indices = np.array([0, 1, 2], "<i8").tobytes()
        csr.sparse_csr.col_indices = np.array([2, 0], "<i8").tobytes()
        cases["sample_038_sparse_target"] = (sparse, False)
    return cases


def main() -> None:
    tag = "038" if V038 else "025"
    cases: dict[str, Any] = {}
    for name, (req, forward_only, zstd, canonical) in _requests().items():
        (HERE / f"{name}.bin").write_bytes(_encode_request(req, forward_only, zstd))
        cases[name] = {
            "message": "ForwardBackwardRequest",
            "content_encoding": "zstd" if zstd else None,
            "canonical": canonical,
            "expected": _request_json(req, forward_only),
        }
    for name, (msg, canonical) in _fbo_results().items():
        if not V038:
            continue
        body = msg.SerializeToString()
        (HERE / f"{name}.bin").write_bytes(body)
        parsed = response_conv.deserialize_forward_backward_output(body)
        cases[name] = {
            "message": "ForwardBackwardOutput",
            "content_encoding": None,
            "canonical": canonical,
            "expected": _fbo_json(parsed),
        }
    for name, (msg, canonical) in _sample_results().items():
        body = msg.SerializeToString()
        (HERE / f"{name}.bin").write_bytes(body)
        parsed = response_conv.deserialize_sample_response(body)
        cases[name] = {
            "message": "SampleResponse",
            "content_encoding": None,
            "canonical": canonical,
            "expected": _sample_json(parsed),
        }
    # The official schema itself, for the test that compares field numbers and types.
    from google.protobuf import descriptor_pb2

    schema = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(schema)
    (HERE / f"tinker_public-{tag}.desc").write_bytes(schema.SerializeToString())
    text = json.dumps({"sdk": SDK, "cases": cases}, indent=1, sort_keys=True, allow_nan=True)
    assert "Infinity" not in text
    (HERE / f"cases-{tag}.json").write_text(text + "\n")
    print(f"tinker {SDK}: wrote {len(cases)} cases to {HERE}")


if __name__ == "__main__":
    main()
