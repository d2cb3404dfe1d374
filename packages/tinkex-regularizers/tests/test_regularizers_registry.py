"""Regularizers by name: the hook registry, third-party plugins, option validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pydantic
import pytest
import torch

from tinkex_regularizers import (
    BUILTINS,
    L2,
    Regularizer,
    RegularizerBatch,
    RegularizerOptions,
    RegularizerPipeline,
    RegularizerSpec,
    resolve_regularizer,
)
from tinkex_types import (
    Hooks,
    PluginError,
    TinkexValidationError,
    get_hooks,
    hookimpl,
    make_plugin_manager,
    set_hooks,
)

BUILTIN_NAMES = {
    "l1",
    "l2",
    "elastic_net",
    "entropy",
    "kl_divergence",
    "consistency",
    "orthogonality",
    "gradient_penalty",
}


class Shift:
    """A hand-written third-party regularizer that does not subclass Regularizer:
    ``Σ (lp + offset)²``."""

    name = "shift"

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = float(offset)

    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, dict[str, float]]:
        total = batch.zero()
        count = 0
        for lp in batch.logprobs:
            total = total + (lp + self.offset).square().sum()
            count += lp.numel()
        return total, {"count": count}


class ScaledOptions(RegularizerOptions):
    factor: float = pydantic.Field(1.0, gt=0.0)


class ScaledSum(Regularizer[ScaledOptions]):
    """A third-party subclass with validated options: ``factor · Σ lp``."""

    name: ClassVar[str] = "scaled_sum"
    Options = ScaledOptions

    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, dict[str, float]]:
        total = batch.zero()
        for lp in batch.logprobs:
            total = total + lp.sum()
        return self.options.factor * total, {}


class ThirdPartyPlugin:
    @hookimpl
    def tinkex_register_regularizers(self, register: Callable[[str, Any], None]) -> None:
        register("shift", Shift)
        register("scaled_sum", ScaledSum)


class ClashingPlugin:
    @hookimpl
    def tinkex_register_regularizers(self, register: Callable[[str, Any], None]) -> None:
        register("l2", Shift)


class NoComputePlugin:
    @hookimpl
    def tinkex_register_regularizers(self, register: Callable[[str, Any], None]) -> None:
        register("broken", dict)


def sum_loss(data: Any, lps: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    total = torch.zeros((), dtype=torch.float64)
    for lp in lps:
        total = total + lp.sum()
    return total, {}


def lps() -> list[torch.Tensor]:
    return [
        torch.tensor([-1.0, -2.0], dtype=torch.float64, requires_grad=True),
        torch.tensor([-0.5], dtype=torch.float64, requires_grad=True),
    ]


def test_builtins_register_through_the_hook(use_hooks: Callable[..., Hooks]) -> None:
    registry = get_hooks().regularizers()
    assert set(registry.names()) == BUILTIN_NAMES
    for name, cls in BUILTINS.items():
        assert registry.get(name) is cls
        assert cls.name == name


def test_the_entry_point_loads_the_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKEX_LOAD_PLUGINS", "regularizers")
    monkeypatch.delenv("TINKEX_DISABLE_PLUGINS", raising=False)
    hooks = Hooks(make_plugin_manager())
    assert set(hooks.regularizers().names()) == BUILTIN_NAMES


def test_a_third_party_regularizer_is_usable_by_name(use_hooks: Callable[..., Hooks]) -> None:
    use_hooks(ThirdPartyPlugin())
    assert {"shift", "scaled_sum"} <= set(get_hooks().regularizers().names())
    pipeline = RegularizerPipeline(
        base_loss=sum_loss,
        regularizers=[
            RegularizerSpec.from_name("shift", weight=0.5, offset=1.0),
            RegularizerSpec.from_name("scaled_sum", weight=2.0, name="sum3", factor=3.0),
        ],
        track_grad_norms=True,
    )
    out = pipeline.compute([{}, {}], lps())
    # shift: (0)² + (−1)² + (0.5)² = 1.25; scaled_sum: 3·(−3.5) = −10.5
    assert out.regularizers["shift"].value == pytest.approx(1.25)
    assert out.regularizers["sum3"].value == pytest.approx(-10.5)
    assert out.loss_total == pytest.approx(-3.5 + 0.5 * 1.25 + 2.0 * -10.5)
    metrics = out.metrics()
    assert metrics["reg/shift/count"] == 3.0
    assert metrics["reg/sum3:contribution"] == pytest.approx(-21.0)


def test_bad_options_of_a_third_party_class_name_the_option(
    use_hooks: Callable[..., Hooks],
) -> None:
    use_hooks(ThirdPartyPlugin())
    with pytest.raises(TinkexValidationError) as info:
        RegularizerSpec.from_name("scaled_sum", weight=1.0, factor=-2.0)
    assert info.value.field == "scaled_sum.factor"
    assert "greater than 0" in str(info.value)
    with pytest.raises(TinkexValidationError) as info2:
        RegularizerSpec.from_name("shift", weight=1.0, offest=1.0)
    assert info2.value.field == "shift.options"
    assert "offest" in str(info2.value)


def test_a_duplicate_name_fails_clearly(use_hooks: Callable[..., Hooks]) -> None:
    use_hooks(ClashingPlugin())
    with pytest.raises(PluginError, match=r"regularizer 'l2' is registered twice"):
        get_hooks().regularizers()
    with pytest.raises(PluginError, match="registered twice"):
        RegularizerSpec.from_name("l1", weight=1.0)


def test_an_unknown_name_fails_listing_the_known_ones(use_hooks: Callable[..., Hooks]) -> None:
    with pytest.raises(PluginError) as info:
        RegularizerSpec.from_name("l3", weight=1.0)
    text = str(info.value)
    assert "unknown regularizer 'l3'" in text
    assert "l1, l2" in text


def test_a_registered_class_without_compute_is_rejected(use_hooks: Callable[..., Hooks]) -> None:
    use_hooks(NoComputePlugin())
    with pytest.raises(PluginError, match="no compute"):
        RegularizerSpec.from_name("broken", weight=1.0)


@pytest.mark.parametrize(
    ("name", "options", "field", "words"),
    [
        ("l2", {"clip": -1.0}, "l2.clip", "greater than 0"),
        ("l2", {"lamda": 1.0}, "l2.lamda", "Extra inputs"),
        ("l2", {"center": "median"}, "l2.center", "median"),
        ("l1", {"lambda": -1.0}, "l1.lambda", "greater than or equal to 0"),
        ("l1", {"target": "field"}, "l1.field", "needs field"),
        ("l1", {"target": "logits"}, "l1.target", "logits"),
        ("elastic_net", {"l1_ratio": 1.5}, "elastic_net.l1_ratio", "less than or equal to 1"),
        ("entropy", {"mode": "sideways"}, "entropy.mode", "minimize"),
        ("entropy", {"temperature": 0.0}, "entropy.temperature", "greater than 0"),
        ("kl_divergence", {"direction": "up"}, "kl_divergence.direction", "forward"),
        ("consistency", {"metric": "dot"}, "consistency.metric", "mse"),
        ("orthogonality", {"mode": "strict"}, "orthogonality.mode", "soft"),
        ("gradient_penalty", {"target_norm": -1.0}, "gradient_penalty.target_norm", "greater"),
    ],
)
def test_bad_builtin_options_fail_naming_the_option(
    use_hooks: Callable[..., Hooks], name: str, options: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(TinkexValidationError) as info:
        RegularizerSpec.from_name(name, weight=1.0, **options)
    assert info.value.field == field
    assert words in str(info.value)
    assert "valid options" in str(info.value)


def test_weight_and_name_are_validated() -> None:
    for bad in (-0.1, float("nan"), float("inf"), "1", True):
        with pytest.raises(TinkexValidationError) as info:
            RegularizerSpec(L2(), weight=bad)  # type: ignore[arg-type]
        assert info.value.field == "weight"
    with pytest.raises(TinkexValidationError) as info:
        RegularizerSpec(lambda d, lp: lp[0].sum(), weight=1.0)
    assert info.value.field == "name"
    with pytest.raises(TinkexValidationError) as info:
        RegularizerSpec(L2, weight=1.0)
    assert info.value.field == "regularizer"


def test_registry_classes_expose_spec_and_pipeline(use_hooks: Callable[..., Hooks]) -> None:
    """What a client does without importing this package."""
    registry = get_hooks().regularizers()
    l2_cls = registry.get("l2")
    spec = l2_cls.spec(weight=0.5, center=0.0)
    entropy = registry.get("entropy").spec(weight=0.1, name="ent", mode="maximize")
    pipeline = l2_cls.pipeline(base_loss=sum_loss, regularizers=[spec, entropy])
    loss, metrics = pipeline.as_loss_fn()([{}, {}], lps())
    assert loss.requires_grad
    assert metrics["reg/l2:value"] == pytest.approx(1 + 4 + 0.25)
    assert "reg/ent:value" in metrics
    assert isinstance(pipeline, RegularizerPipeline)


def test_specs_from_mappings(use_hooks: Callable[..., Hooks]) -> None:
    pipeline = RegularizerPipeline(
        base_loss=sum_loss,
        regularizers=[
            {"regularizer": "l2", "weight": 0.1, "options": {"clip": 1.0}},
            {"regularizer": Shift(offset=2.0), "weight": 1.0, "name": "mine"},
        ],
    )
    assert [s.name for s in pipeline.regularizers] == ["l2", "mine"]
    with pytest.raises(TinkexValidationError, match="bad spec mapping"):
        RegularizerSpec.coerce({"regularizer": "l2"})


def test_resolve_regularizer_with_explicit_hooks() -> None:
    old = set_hooks(None)
    try:
        hooks = Hooks(make_plugin_manager(load_entrypoints=False, plugins=[ThirdPartyPlugin()]))
        reg = resolve_regularizer("shift", {"offset": 1.0}, hooks=hooks)
        assert isinstance(reg, Shift)
        assert reg.offset == 1.0
        with pytest.raises(PluginError, match="unknown regularizer 'no_such_term'"):
            resolve_regularizer("no_such_term", hooks=hooks)
    finally:
        set_hooks(old)
