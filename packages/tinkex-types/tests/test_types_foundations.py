"""The loss table, the one Backoff and the wire-codec seam of tinkex-types."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from tinkex_types import (
    JSON_MEDIA_TYPE,
    LOSSES,
    Backoff,
    JsonCodec,
    SamplingParams,
    TinkexValidationError,
    WireBodyTooLarge,
    WireCodec,
    WireDecodeError,
    accepted_media_types,
    codec_for,
    decode_content,
    loss_spec,
    media_type_of,
    register_codec,
    resolve_loss_config,
)
from tinkex_types import _codec as codec_module

# -- losses ---------------------------------------------------------------------------


def test_loss_table_names_its_inputs() -> None:
    assert loss_spec("cross_entropy").required_inputs == ("target_tokens", "weights")
    for name in ("importance_sampling", "ppo", "cispo", "dro"):
        assert LOSSES[name].required_inputs == ("target_tokens", "logprobs", "advantages")


def test_unknown_loss_names_field_and_choices() -> None:
    with pytest.raises(TinkexValidationError) as info:
        loss_spec("hinge", field="loss_fn")
    assert info.value.field == "loss_fn"
    assert "cross_entropy" in str(info.value)


def test_config_defaults_overrides_and_unknown_keys() -> None:
    assert resolve_loss_config("ppo", None) == {
        "clip_low_threshold": 0.8,
        "clip_high_threshold": 1.2,
    }
    out = resolve_loss_config("ppo", {"clip_low_threshold": "0.5", "ignored": "text"})
    assert out["clip_low_threshold"] == 0.5
    assert "ignored" not in out


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, "abc", True, None])
def test_config_rejects_non_finite_and_non_numbers(bad: object) -> None:
    with pytest.raises(TinkexValidationError) as info:
        resolve_loss_config("dro", {"beta": bad})
    assert info.value.field == "loss_fn_config.beta"


def test_config_clip_order() -> None:
    with pytest.raises(TinkexValidationError, match="clip_low_threshold"):
        resolve_loss_config("cispo", {"clip_low_threshold": 5.0})


def test_loss_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        LOSSES["x"] = LOSSES["ppo"]  # type: ignore[index]
    with pytest.raises(TypeError):
        LOSSES["ppo"].config_defaults["beta"] = 1.0  # type: ignore[index]


# -- backoff --------------------------------------------------------------------------


@given(
    st.floats(0.0, 5.0),
    st.floats(5.0, 60.0),
    st.floats(0.0, 1.0),
    st.integers(0, 500),
    st.floats(0.0, 1.0),
    st.sampled_from(["down", "both"]),
)
def test_backoff_stays_within_bounds(
    initial: float, maximum: float, jitter: float, attempt: int, u: float, mode: str
) -> None:
    backoff = Backoff(initial, maximum, jitter, jitter_mode=mode)  # type: ignore[arg-type]
    delay = backoff.delay(attempt, rng=lambda: u)
    assert 0.0 <= delay <= maximum
    if mode == "down":
        assert delay <= backoff.cap(attempt)


def test_backoff_doubles_to_its_cap_without_jitter() -> None:
    backoff = Backoff(1.0, 30.0, 0.0)
    assert [backoff.delay(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"initial": -1.0}, "initial"), ({"jitter": 2.0}, "jitter"), ({"maximum": 0.1}, "maximum")],
)
def test_backoff_refuses_bad_settings(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(TinkexValidationError) as info:
        Backoff(**kwargs)
    assert info.value.field == field


# -- codec seam -----------------------------------------------------------------------


def test_media_type_and_accept_parsing() -> None:
    assert media_type_of("Application/JSON; charset=utf-8") == JSON_MEDIA_TYPE
    assert media_type_of(None) == JSON_MEDIA_TYPE
    assert accepted_media_types("application/json;q=0.5, application/x-protobuf") == [
        "application/x-protobuf",
        "application/json",
    ]
    assert accepted_media_types("text/plain;q=0") == []


def test_json_codec_round_trip_and_errors() -> None:
    codec = codec_for("application/json")
    assert isinstance(codec, JsonCodec)
    assert isinstance(codec, WireCodec)
    params = SamplingParams(max_tokens=4, temperature=0.5)
    assert codec.decode(SamplingParams, codec.encode(params)) == params
    with pytest.raises(WireDecodeError) as info:
        codec.decode(SamplingParams, b'{"temperature": "hot"}')
    assert info.value.field == "temperature"


def test_zstd_content_encoding() -> None:
    body = b'{"a": 1}' * 100
    packed = zstandard.ZstdCompressor().compress(body)
    assert decode_content(packed, "zstd") == body
    assert decode_content(body, "identity") == body
    with pytest.raises(WireDecodeError, match="zstd"):
        decode_content(b"not zstd", "zstd")
    with pytest.raises(WireDecodeError, match="Content-Encoding"):
        decode_content(body, "br")
    with pytest.raises(WireDecodeError, match="truncated"):
        decode_content(packed[: len(packed) // 2], "zstd")
    with pytest.raises(WireDecodeError, match="not valid zstd"):
        decode_content(packed + b"junk", "zstd")
    assert decode_content(packed + packed, "zstd") == body + body
    with pytest.raises(WireBodyTooLarge) as info:
        decode_content(packed, "zstd", max_size=len(body) - 1)
    assert info.value.limit == len(body) - 1
    assert decode_content(packed, "zstd", max_size=len(body)) == body


def test_lazy_codec_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec_module, "_CODECS", dict(codec_module._CODECS))
    monkeypatch.setattr(codec_module, "_LAZY", {})
    made: list[int] = []

    def factory() -> WireCodec:
        made.append(1)
        return JsonCodec()

    register_codec(factory, "application/x-test")
    assert "application/x-test" in codec_module.registered_codecs()
    assert codec_for("application/x-test") is not None
    assert codec_for("application/x-test") is not None
    assert made == [1]
    assert codec_for("application/unknown") is None


def test_lazy_codec_is_built_once_under_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec_module, "_CODECS", dict(codec_module._CODECS))
    monkeypatch.setattr(codec_module, "_LAZY", {})
    gate = threading.Event()
    made: list[int] = []

    def slow_factory() -> WireCodec:
        made.append(1)
        gate.wait(1.0)
        return JsonCodec()

    register_codec(slow_factory, "application/x-slow")
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(codec_for, "application/x-slow") for _ in range(8)]
        gate.set()
        found = [f.result() for f in futures]
    assert all(c is not None for c in found)
    assert made == [1]
