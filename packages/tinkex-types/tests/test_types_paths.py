"""tinker:// paths and checkpoint ids."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinkex_types import (
    ParsedCheckpointTinkerPath,
    TinkerPath,
    checkpoint_id,
    checkpoint_type_for_kind,
    kind_for_checkpoint_type,
    parse_checkpoint_id,
)

part = st.text(
    st.characters(exclude_characters="/", exclude_categories=["Cs"]), min_size=1, max_size=20
)


@settings(max_examples=100, deadline=None)
@given(run=part, kind=st.sampled_from(["weights", "sampler_weights"]), name=part)
def test_round_trip(run: str, kind: str, name: str) -> None:
    text = f"tinker://{run}/{kind}/{name}"
    parsed = TinkerPath.parse(text)
    assert (parsed.training_run_id, parsed.kind, parsed.name) == (run, kind, name)
    assert str(parsed) == text
    assert TinkerPath.parse(str(parsed)) == parsed
    assert parse_checkpoint_id(parsed.checkpoint_id) == (kind, name)


def test_examples_and_parsed_form() -> None:
    p = TinkerPath.parse("tinker://6f1c:train:0/weights/step-0010")
    assert p.checkpoint_type == "training"
    assert p.checkpoint_id == "weights/step-0010"
    assert p.to_parsed() == ParsedCheckpointTinkerPath(
        tinker_path="tinker://6f1c:train:0/weights/step-0010",
        training_run_id="6f1c:train:0",
        checkpoint_type="training",
        checkpoint_id="weights/step-0010",
    )
    s = ParsedCheckpointTinkerPath.from_tinker_path("tinker://r/sampler_weights/final")
    assert s.checkpoint_type == "sampler"
    assert str(TinkerPath.for_checkpoint("r", "sampler", "x")) == "tinker://r/sampler_weights/x"
    assert checkpoint_id("weights", "a") == "weights/a"
    assert checkpoint_type_for_kind("sampler_weights") == "sampler"
    assert kind_for_checkpoint_type("training") == "weights"


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("http://r/weights/a", "must start with 'tinker://'"),
        ("tinker:/r/weights/a", "must start with"),
        ("tinker://r/weights", "exactly 3 parts"),
        ("tinker://r/weights/a/b", "must not contain '/'"),
        ("tinker:///weights/a", "training run id part is empty"),
        ("tinker://r//a", "kind part is empty"),
        ("tinker://r/weights/", "name part is empty"),
        ("tinker://r/external_weights/a", "kind 'external_weights'"),
        ("", "must start with"),
    ],
)
def test_malformed_paths_name_the_problem(path: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
        TinkerPath.parse(path)


def test_bad_parts_when_building() -> None:
    with pytest.raises(ValueError, match="contain '/'"):
        TinkerPath("r", "weights", "a/b")
    with pytest.raises(ValueError, match="kind"):
        TinkerPath("r", "nope", "a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        TinkerPath("", "weights", "a")
    with pytest.raises(ValueError, match="sampler_weights"):
        parse_checkpoint_id("weights")
    with pytest.raises(ValueError, match="checkpoint type"):
        kind_for_checkpoint_type("other")
    with pytest.raises(ValueError, match="checkpoint kind"):
        checkpoint_type_for_kind("other")
    with pytest.raises(TypeError):
        TinkerPath.parse(None)  # type: ignore[arg-type]
